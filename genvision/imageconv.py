"""The one place pixel values change range, and the one rule for 28-px digits.

Datasets store uint8 images (N, C, H, W) in [0, 255]; models see float images in [-1, 1]. `to_model_range` maps
the first to the second, `to_uint8` maps back exactly as writing a PNG would (round to nearest, clamp). Every other
module calls these two functions rather than writing ``/ 127.5 - 1`` inline.

28-px digits: a square 28x28 image (MNIST and its kin, and what most MNIST generators save) bound for a side of at
least 32 px is first padded with 2 px of black on every side to 32x32, LeNet-5's input (LeCun et al. 1998), so the
strokes keep their size; only then is it resized, if 32 px is still not the target. `pads_digits` is that rule and
`pad_digits` applies it to tensors; `data.prepare_image` (training data, dataset specs) and
`metrics.extractors.resize_for_extractor` (every source on its way to a feature extractor) both follow it, so a
folder of 28-px PNGs and the dataset spec they came from reach an extractor as the same pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DIGIT_SIDE = 28  # px: the side of the square images the padding rule applies to (MNIST-style digits)
PADDED_DIGIT_SIDE = 32  # px: their side after padding (LeNet-5's input)
DIGIT_PAD = (PADDED_DIGIT_SIDE - DIGIT_SIDE) // 2  # px of black added on every side


def to_model_range(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]: x / 127.5 - 1."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    return images.to(dtype).div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], rounded to nearest and clamped, as saving a PNG would quantise it."""
    return images.detach().float().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


def pads_digits(height: int, width: int, target: int) -> bool:
    """The 28-px rule: an image of `height` x `width` px bound for a `target` px side is padded to 32 px first
    when it is a square 28-px image and `target` is at least 32 px (a smaller target keeps the digit as it is)."""
    return height == width == DIGIT_SIDE and target >= PADDED_DIGIT_SIDE


def padded_side(height: int, width: int, target: int) -> int:
    """The square side an image of `height` x `width` px has once the 28-px rule applied: 32 px for padded
    digits, else its shorter side."""
    return PADDED_DIGIT_SIDE if pads_digits(height, width, target) else min(height, width)


def pad_digits(images: torch.Tensor, target: int) -> torch.Tensor:
    """(..., 28, 28) -> (..., 32, 32) with `DIGIT_PAD` px of zeros (black) on every side when `pads_digits`
    holds for `target`; any other image is returned unchanged (no copy)."""
    if not pads_digits(images.shape[-2], images.shape[-1], target):
        return images
    return F.pad(images, (DIGIT_PAD, DIGIT_PAD, DIGIT_PAD, DIGIT_PAD), value=0)
