"""Differentiable augmentation of a discriminator's inputs, with a fixed or an adaptive probability.

DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training") applies the same random,
differentiable transformations T to every image the discriminator sees, real and generated, in the D and in the G
step: D learns the augmented distributions, and G's gradient flows back through T, so the augmentations do not leak
into the generated images. ADA (Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data")
applies each transformation to each image with a probability p and steers p by an overfitting heuristic,
r_t = E[sign D(x_real)], toward a target (`AdaptiveProbability`); as long as p < 1 the augmentations do not leak
either (their paper, section 2).

Contract of `augment` and every op: images (N, C, H, W), float, in [-1, 1] (genvision's pixel range), any C, any
H = W; every op is differentiable with respect to the images; randomness comes only from the `torch.Generator`
passed in, on the images' device; the output has the images' shape and dtype.

The policies (`POLICIES`), each op's parameters drawn per image, u ~ U(0, 1):

    color        brightness  x <- x + (u - 0.5)                      shift in [-0.5, 0.5)
                 saturation  x <- (x - mean_c x) * 2u + mean_c x     mean over channels, factor in [0, 2) (C = 1: none)
                 contrast    x <- (x - mean x) * (u + 0.5) + mean x  mean over C, H, W, factor in [0.5, 1.5)
    translation  integer shifts (dy, dx), each uniform in [-S, S], S = round(H / 8); the pixels shifted in are 0
    cutout       a square of side round(H / 2) at a uniform position (it may cross the border) set to 0

The magnitudes are those of the DiffAugment reference (mit-han-lab/data-efficient-gans, DiffAugment_pytorch.py),
whose images are in [-1, 1] too, so none is rescaled; 0 (mid-grey) fills translation and cutout as there. Colour
may leave [-1, 1]: brightness maps [-1, 1] into [-1.5, 1.5]; a factor s around a mean m maps an interval of width w
into one that grows by (s - 1) w at most on each side, so saturation then contrast give [-4.5, 4.5] and [-9, 9]:
colour's output lies in [-9, 9] (in [-3, 3] for one channel, where saturation is a no-op). Translation and cutout
keep [-1, 1] (their outputs are input pixels or 0).

With probability p (ADA's per-image Bernoulli; p = 1 is the original DiffAugment), each policy entry ("color" as a
whole) is applied to each image independently. The op's parameters and the Bernoulli draws are made for every image
whatever p is, so the random stream does not depend on p (an adaptive p changes which images are augmented, never
the draws of later steps), and at p = 0 the output is the input, bit for bit.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from genvision.errors import UsageError

POLICIES = ("color", "translation", "cutout")  # --augment: comma-separated, applied in the order given
TRANSLATION_RATIO = 0.125  # largest shift, as a share of the image side (the reference's 1/8)
CUTOUT_RATIO = 0.5  # side of the cut-out square, as a share of the image side (the reference's 1/2)


def parse_policy(text: str) -> tuple[str, ...]:
    """"color,translation" -> ("color", "translation"); "" -> () (off). An unknown or repeated name is a one-line
    UsageError naming it and the valid ones."""
    names = tuple(name.strip() for name in text.split(",")) if text.strip() else ()
    for index, name in enumerate(names):
        if name not in POLICIES:
            raise UsageError(f"--augment: unknown policy {name!r} in {text!r}; expected a comma-separated list of "
                             f"{', '.join(POLICIES)}")
        if name in names[:index]:
            raise UsageError(f"--augment: policy {name!r} is given twice in {text!r}; expected each of "
                             f"{', '.join(POLICIES)} at most once")
    return names


def _uniform(images: Tensor, generator: torch.Generator) -> Tensor:
    """(N, 1, 1, 1) draws of U(0, 1), in float32 whatever the images' dtype (the same stream under autocast)."""
    return torch.rand(images.shape[0], 1, 1, 1, device=images.device, generator=generator).to(images.dtype)


def color(images: Tensor, generator: torch.Generator) -> Tensor:
    """Brightness, saturation and contrast of each image, in that order (3 uniforms per image)."""
    brightness, saturation, contrast = (_uniform(images, generator) for _ in range(3))
    images = images + (brightness - 0.5)
    channel_mean = images.mean(dim=1, keepdim=True)  # (N, 1, H, W)
    images = (images - channel_mean) * (saturation * 2) + channel_mean
    image_mean = images.mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
    return (images - image_mean) * (contrast + 0.5) + image_mean


def translation(images: Tensor, generator: torch.Generator, ratio: float = TRANSLATION_RATIO) -> Tensor:
    """Each image shifted by whole pixels (dy, dx), each uniform in [-S, S], S = round(ratio * side); 0 shifted in.

    A gather from the image padded by one pixel of 0: output pixel (i, j) reads input (i + dy, j + dx), or the pad
    when that lies outside. Gathers are differentiable (their gradient scatters back to the pixels read).
    """
    n, channels, height, width = images.shape
    shift = int(height * ratio + 0.5)
    device = images.device
    dy, dx = (torch.randint(-shift, shift + 1, (n, 1), device=device, generator=generator) for _ in range(2))
    rows = (torch.arange(height, device=device) + dy + 1).clamp(0, height + 1)  # (N, H) indices into the padded rows
    cols = (torch.arange(width, device=device) + dx + 1).clamp(0, width + 1)  # (N, W)
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))  # (N, C, H + 2, W + 2), 0 around
    picked_rows = padded.gather(2, rows[:, None, :, None].expand(n, channels, height, width + 2))  # (N, C, H, W + 2)
    return picked_rows.gather(3, cols[:, None, None, :].expand(n, channels, height, width))  # (N, C, H, W)


def cutout(images: Tensor, generator: torch.Generator, ratio: float = CUTOUT_RATIO) -> Tensor:
    """A square of side K = round(ratio * side) set to 0 in each image, its centre uniform over the image (as in the
    reference: top-left corner c - K // 2 for a centre c in [0, side - K % 2]; the square may cross the border)."""
    n, _, height, width = images.shape
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    device = images.device
    centre_y = torch.randint(0, height + 1 - size_y % 2, (n, 1), device=device, generator=generator)
    centre_x = torch.randint(0, width + 1 - size_x % 2, (n, 1), device=device, generator=generator)
    top, left = centre_y - size_y // 2, centre_x - size_x // 2  # (N, 1)
    rows, cols = torch.arange(height, device=device), torch.arange(width, device=device)
    inside_rows = (rows >= top) & (rows < top + size_y)  # (N, H)
    inside_cols = (cols >= left) & (cols < left + size_x)  # (N, W)
    inside = inside_rows[:, :, None] & inside_cols[:, None, :]  # (N, H, W)
    return images.masked_fill(inside[:, None], 0.0)


OPS: dict[str, Callable[[Tensor, torch.Generator], Tensor]] = {
    "color": color, "translation": translation, "cutout": cutout}


def augment(images: Tensor, policy: tuple[str, ...], probability: float | Tensor,
            generator: torch.Generator) -> Tensor:
    """`images` with each op of `policy` (`parse_policy`'s names) applied in order, each to each image independently
    with `probability` (a float or a 0-d tensor on the images' device, so an adaptive p needs no host sync).

    Every op's parameters and every Bernoulli draw are made for every image whatever `probability` is; the
    augmented and the original image are then chosen per image with `torch.where` (the gradient flows through the
    one chosen). p = 0 returns the input values bit for bit, p = 1 augments every image.
    """
    for name in policy:
        augmented = OPS[name](images, generator)
        chosen = torch.rand(images.shape[0], device=images.device, generator=generator) < probability  # (N,)
        images = torch.where(chosen[:, None, None, None], augmented, images)
    return images


class AdaptiveProbability:
    """ADA's controller of p (Karras et al. 2020, section 3): every `interval` D steps,

        r_t = E[sign D(x_real)]   over the real logits of those steps (every rank's)
        p  <- clip(p + sign(r_t - target) * images / (kimg * 1000), 0, 1)

    where `images` is the number of real logits in the interval (all ranks), so p can move from 0 to 1 in `kimg`
    thousand real images. r_t near 1: D is confident on every real image (it overfits), p rises; below the target, p
    falls. p starts at `initial` (ADA: 0).

    Everything stays on the device: `observe` adds a step's sign sum and count without a host sync; at each
    `interval`-th step the sums are added over ranks by `reduce` (a callable summing a tensor over processes; None in a
    single process) before the update, so every rank computes the same p. `state_dict` / `load_state_dict` carry p,
    the sums and the step count for an exact resume, in a multi-process run too.
    """

    def __init__(self, target: float, kimg: float, interval: int, device: torch.device | str = "cpu",
                 initial: float = 0.0, reduce: Callable[[Tensor], Tensor] | None = None) -> None:
        self.target, self.kimg, self.interval, self.reduce = target, kimg, interval, reduce
        self.p = torch.tensor(initial, dtype=torch.float64, device=device)  # 0-d, on the device
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of sign D(x_real), count) since update
        self.steps = 0  # D steps observed since the last update

    def observe(self, real_logits: Tensor) -> None:
        """Add one D step's real logits; every `interval`-th call updates p (a collective in a multi-process run: every
        rank calls it at the same steps)."""
        logits = real_logits.detach().reshape(-1)
        step_sums = torch.stack([torch.sign(logits).sum(dtype=torch.float64),
                                 torch.tensor(logits.numel(), dtype=torch.float64, device=logits.device)])
        self.sums = self.sums + step_sums.to(self.sums.device)
        self.steps += 1
        if self.steps >= self.interval:
            self.update()

    def update(self) -> None:
        """p <- clip(p + sign(r_t - target) * images / (kimg * 1000), 0, 1) over the sums so far (all ranks), which
        start anew."""
        totals = self.reduce(self.sums) if self.reduce is not None else self.sums
        sign_sum, count = totals[0], totals[1]
        r_t = sign_sum / count.clamp(min=1)
        self.p = (self.p + torch.sign(r_t - self.target) * count / (self.kimg * 1000)).clamp(0, 1)
        self.sums = torch.zeros_like(self.sums)
        self.steps = 0

    def state_dict(self) -> dict:
        """p, the sums since the last update added over ranks (a collective, as `update`: every rank calls it), and
        the steps since the last update."""
        sums = self.reduce(self.sums) if self.reduce is not None else self.sums
        return {"p": self.p.cpu(), "sums": sums.cpu(), "steps": self.steps}

    def load_state_dict(self, state: dict, holds_sums: bool = True) -> None:
        """Continue from `state_dict()`. In a multi-process run one rank takes the saved sums (`holds_sums`) and the
        others start from 0, so the sums over ranks at the next update are those of the run that saved them (the
        sign sums and counts are whole numbers: float64 adds them exactly in any order)."""
        self.p = state["p"].to(self.p.device, torch.float64)
        sums = state["sums"].to(self.sums.device, torch.float64)
        self.sums = sums if holds_sums else torch.zeros_like(sums)
        self.steps = int(state["steps"])
