"""The one place pixel values change range.

Datasets store uint8 images (N, C, H, W) in [0, 255]; models see float images in [-1, 1]. `to_model_range` maps
the first to the second, `to_uint8` maps back exactly as writing a PNG would (round to nearest, clamp). Every other
module calls these two functions rather than writing ``/ 127.5 - 1`` inline.
"""

from __future__ import annotations

import torch


def to_model_range(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]: x / 127.5 - 1."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    return images.to(dtype).div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], rounded to nearest and clamped, as saving a PNG would quantise it."""
    return images.detach().float().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
