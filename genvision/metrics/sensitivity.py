"""How an extractor's FID responds to the defects generators have: degradation ladders of held-out real images.

After Heusel et al. 2017 ("GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium",
Fig. A1, which degraded images with noise, blur, swirls and salt-and-pepper): `sensitivity` scores every step of
each ladder (`ladders`) and the real-vs-real floor (the undegraded held-out images) against one training reference.
A feature space a FID can be trusted in raises the FID monotonically along every ladder, far above the floor.

Ladders: Gaussian blur, Gaussian noise, JPEG quality, dimming, translation, and mode dropping (classes removed, every
step drawn at the same N, so FID's bias in N cannot explain the rise). Degradations take uint8 (N, C, H, W) images,
are seeded, and return uint8 images of the same shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from genvision.metrics.extractors import FeatureExtractor
from genvision.metrics.sources import extract
from genvision.metrics.stats import frechet_distance


def round_to_uint8(images: Tensor) -> Tensor:
    """Float grey levels (0..255 scale) -> uint8, rounded half to even and clipped."""
    return images.round().clamp_(0, 255).to(torch.uint8)


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Blur with an isotropic Gaussian of `sigma` px (kernel side 2 ceil(3 sigma) + 1, reflected borders)."""
    from torchvision.transforms.v2.functional import gaussian_blur as blur

    size = 2 * math.ceil(3 * sigma) + 1
    return round_to_uint8(blur(images.float(), [size, size], [sigma, sigma]))


def gaussian_noise(images: Tensor, sigma: float, seed: int = 0) -> Tensor:
    """Add N(0, sigma^2) grey levels per pixel (seeded), clipped to 0..255."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=generator) * sigma
    return round_to_uint8(images.float() + noise)


def jpeg(images: Tensor, quality: int) -> Tensor:
    """Encode each image as a JPEG of `quality` (1..100, libjpeg through Pillow, 4:2:0 chroma for RGB) and decode
    it again."""
    import io

    import numpy as np
    from PIL import Image

    out = []
    for image in images.permute(0, 2, 3, 1).numpy():
        buffer = io.BytesIO()
        Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buffer, "JPEG", quality=quality)
        decoded = np.asarray(Image.open(buffer))
        out.append(torch.from_numpy(decoded.reshape(image.shape).copy()))
    return torch.stack(out).permute(0, 3, 1, 2).contiguous()


def dim(images: Tensor, factor: float) -> Tensor:
    """Multiply every intensity by `factor` (< 1 darkens)."""
    return round_to_uint8(images.float() * factor)


def translate(images: Tensor, pixels: int, seed: int = 0) -> Tensor:
    """Shift each image by `pixels` px down, up, right or left (a seeded choice per image), filling with black."""
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    directions = torch.randint(0, 4, (images.shape[0],), generator=generator).tolist()
    offsets = ((pixels, 0), (-pixels, 0), (0, pixels), (0, -pixels))  # (down, right) in px
    height, width = images.shape[2:]
    padded = F.pad(images, (pixels,) * 4)                                 # (N, C, H + 2k, W + 2k), black border
    out = torch.empty_like(images)
    for index, direction in enumerate(directions):
        down, right = offsets[direction]
        top, left = pixels - down, pixels - right                          # out[y, x] = in[y - down, x - right]
        out[index] = padded[index, :, top:top + height, left:left + width]
    return out


def dropped_classes(num_classes: int, count: int, seed: int = 0) -> tuple[Tensor, torch.Generator]:
    """(the first `count` classes of a seeded permutation, the generator that drew it): nested in `count`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(num_classes, generator=generator)[:count], generator


def drop_classes(images: Tensor, labels: Tensor, count: int, num: int, num_classes: int, seed: int = 0) -> Tensor:
    """`num` images (a seeded draw, from the same generator) of those whose label is not among `dropped_classes`;
    `num` must not exceed what is left."""
    dropped, generator = dropped_classes(num_classes, count, seed)
    keep = (~torch.isin(labels, dropped)).nonzero().flatten()
    if num > len(keep):
        raise ValueError(f"only {len(keep)} images are left after dropping {count} classes, {num} asked for")
    chosen = keep[torch.randperm(len(keep), generator=generator)[:num]].sort().values
    return images[chosen]


@dataclass(frozen=True)
class Step:
    """One rung of a ladder: its label (e.g. "sigma 0.5") and the degradation of the held-out images."""

    label: str
    degrade: Callable[[Tensor, Tensor], Tensor]  # (images, labels) -> degraded images


def ladders(seed: int = 0, mode_num: int = 0, num_classes: int = 10) -> dict[str, list[Step]]:
    """The ladders in order of severity. `mode_num` is the equal N of the mode-dropping ladder (0: leave it
    out); its first step, "0 classes", is that ladder's own floor at that N."""
    table = {
        "Gaussian blur": [Step(f"sigma {s:g} px", lambda x, y, s=s: gaussian_blur(x, s)) for s in (0.5, 1.0, 1.5)],
        "Gaussian noise": [Step(f"sigma {s:g} levels", lambda x, y, s=s: gaussian_noise(x, s, seed))
                           for s in (8, 16, 32)],
        "JPEG": [Step(f"quality {q}", lambda x, y, q=q: jpeg(x, q)) for q in (90, 50, 20)],
        "dimming": [Step(f"x{f:g}", lambda x, y, f=f: dim(x, f)) for f in (0.9, 0.7)],
        "translation": [Step(f"{k} px", lambda x, y, k=k: translate(x, k, seed)) for k in (1, 2)],
    }
    if mode_num:
        table["mode dropping"] = [Step(f"{k} classes", lambda x, y, k=k: drop_classes(x, y, k, mode_num,
                                                                                      num_classes, seed))
                                  for k in (0, 1, 3, 5)]
    return table


def mode_dropping_num(labels: Tensor, num_classes: int, most_dropped: int = 5, seed: int = 0) -> int:
    """The equal N of the mode-dropping ladder: the images left once its largest step drops `most_dropped`
    classes."""
    dropped, _ = dropped_classes(num_classes, most_dropped, seed)
    return int((~torch.isin(labels, dropped)).sum())


@dataclass
class LadderResult:
    ladder: str
    step: str  # "floor" for the undegraded images
    fid: float
    num: int  # images scored


def sensitivity(extractor: FeatureExtractor, reference: Tensor, held_out: Tensor, labels: Tensor,
                num_classes: int, seed: int = 0, batch_size: int = 500, device: torch.device | str = "cpu",
                only: tuple[str, ...] = ()) -> list[LadderResult]:
    """FID against `reference` of the floor (`held_out` as it is) and of every ladder step (all of them, or the
    ladders named in `only`), in ladder order."""
    reference_mu, reference_sigma = extract(reference, extractor, batch_size, device, name="reference")[0] \
        .mean_and_covariance()

    def fid(images: Tensor) -> float:
        mu, sigma = extract(images, extractor, batch_size, device)[0].mean_and_covariance()
        return frechet_distance(mu, sigma, reference_mu, reference_sigma)

    mode_num = mode_dropping_num(labels, num_classes, seed=seed) if num_classes >= 6 else 0
    results = [LadderResult("floor", "held-out images as they are", fid(held_out), len(held_out))]
    for name, steps in ladders(seed, mode_num, num_classes).items():
        if only and name not in only:
            continue
        for step in steps:
            images = step.degrade(held_out, labels)
            results.append(LadderResult(name, step.label, fid(images), len(images)))
    return results


def is_increasing(values: list[float]) -> bool:
    """Strictly increasing."""
    return all(later > earlier for earlier, later in zip(values, values[1:]))
