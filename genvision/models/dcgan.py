"""DCGAN generator and discriminator.

Radford, Metz & Chintala 2015, "Unsupervised Representation Learning with Deep Convolutional Generative
Adversarial Networks" (arXiv:1511.06434). Layer widths follow pytorch/examples `dcgan`: at 64 px with
`base_channels=64` the generator is 512-256-128-64 and the discriminator 64-128-256-512. Other resolutions add or
remove one stride-2 stage per factor of two: with n = log2(resolution) - 2 stages, generator stage i has
`base_channels * 2**(n - 1 - i)` channels and discriminator stage i has `base_channels * 2**i`.

Class-conditional models (`num_classes` > 0): the generator takes the label's one-hot code beside z (Mirza &
Osindero 2014, "Conditional Generative Adversarial Nets") and every BatchNorm of it becomes a
`ConditionalBatchNorm2d` (de Vries et al. 2017, "Modulating early visual processing by language"; Miyato & Koyama
2018: a class embedding gives each BatchNorm its scale and shift), and the discriminator is a projection
discriminator (Miyato & Koyama 2018, "cGANs with Projection Discriminator", arXiv:1802.05637): with phi(x) the
trunk's (N, C, 4, 4) features flattened,

    D(x, y) = psi(phi(x)) + <embed(y), phi(x)>

where psi is the unconditional model's last 4x4 convolution (a linear map of the flattened features) and embed an
nn.Embedding(num_classes, C * 16). With `num_classes=0` both are exactly the unconditional modules (same layers,
same state-dict keys, same initialisation draws).

`generator_stack` and `discriminator_stack` are shared with `genvision.models.vae.ConvVAE`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from genvision.errors import UsageError

RESOLUTIONS = (32, 64, 128)
NORMALIZATIONS = ("batch", "none", "spectral")


def stages_for(resolution: int, **positive: int) -> int:
    """The number of stride-2 stages of a network for `resolution`, log2(resolution) - 2, once the resolution and
    the `positive` sizes are checked (a one-line UsageError naming the bad one)."""
    if resolution not in RESOLUTIONS:
        raise UsageError(f"resolution must be one of {', '.join(map(str, RESOLUTIONS))}; got {resolution!r}")
    for name, value in positive.items():
        if not isinstance(value, int) or value <= 0:
            raise UsageError(f"{name} must be a positive integer; got {value!r}")
    return int(math.log2(resolution)) - 2


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm2d without its own affine, then a per-class scale and shift (de Vries et al. 2017; Miyato & Koyama
    2018): out = (x - mean) / sqrt(var + eps) * gamma[y] + beta[y], x (N, C, H, W), labels y int64 (N,).

    `gamma` and `beta` are nn.Embedding(num_classes, C); `init_dcgan_weights` draws gamma ~ N(1, 0.02) and sets
    beta to 0, as it does for an unconditional BatchNorm's weight and bias.
    """

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.batch_norm = nn.BatchNorm2d(num_features, affine=False)
        self.gamma = nn.Embedding(num_classes, num_features)  # (num_classes, C)
        self.beta = nn.Embedding(num_classes, num_features)  # (num_classes, C)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        normalized = self.batch_norm(x)  # (N, C, H, W)
        return normalized * self.gamma(labels)[:, :, None, None] + self.beta(labels)[:, :, None, None]


class ConditionalSequential(nn.Sequential):
    """nn.Sequential whose `forward(x, labels)` hands the labels to its `ConditionalBatchNorm2d` layers (same
    state-dict keys as nn.Sequential)."""

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, labels) if isinstance(layer, ConditionalBatchNorm2d) else layer(x)
        return x


def check_labels(labels: torch.Tensor | None, num_classes: int, what: str) -> None:
    """A conditional module (`num_classes` > 0) needs labels; an unconditional one takes none (ValueError)."""
    if num_classes and labels is None:
        raise ValueError(f"{what} is conditional ({num_classes} classes): pass labels, int64 (N,)")
    if not num_classes and labels is not None:
        raise ValueError(f"{what} is unconditional: it takes no labels")


def generator_stack(latent_dim: int, base_channels: int, image_channels: int, resolution: int,
                    num_classes: int = 0) -> nn.Sequential:
    """DCGAN generator layers from a (N, latent_dim, 1, 1) code to raw (N, image_channels, R, R) outputs (no tanh).

    With `num_classes` > 0 the first layer takes latent_dim + num_classes channels (z and the label's one-hot code),
    every BatchNorm is a `ConditionalBatchNorm2d` and the stack a `ConditionalSequential`, called as
    stack(cat(z, one_hot), labels)."""
    stages = stages_for(
        resolution, latent_dim=latent_dim, base_channels=base_channels, image_channels=image_channels
    )

    def norm(channels: int) -> nn.Module:
        return ConditionalBatchNorm2d(channels, num_classes) if num_classes else nn.BatchNorm2d(channels)

    widths = [base_channels * 2 ** (stages - 1 - i) for i in range(stages)]  # 64 px, base 64: 512, 256, 128, 64
    first = nn.ConvTranspose2d(latent_dim + num_classes, widths[0], 4, 1, 0, bias=False)
    # Its input is 1 x 1: NCHW and NHWC are one layout, so --channels-last keeps this weight NCHW
    # (`genvision.training.performance.place`).
    first.one_by_one_input = True
    layers: list[nn.Module] = [
        first,  # (N, latent_dim [+ num_classes one-hot], 1, 1) -> (N, widths[0], 4, 4)
        norm(widths[0]),
        nn.ReLU(inplace=True),
    ]
    for in_channels, out_channels in zip(widths[:-1], widths[1:]):
        layers += [
            nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1, bias=False),  # (N, out_channels, 2H, 2W)
            norm(out_channels),
            nn.ReLU(inplace=True),
        ]
    # Spatial size is now resolution / 2.
    layers.append(nn.ConvTranspose2d(widths[-1], image_channels, 4, 2, 1))  # (N, image_channels, R, R)
    return ConditionalSequential(*layers) if num_classes else nn.Sequential(*layers)


def discriminator_stack(
    base_channels: int, image_channels: int, resolution: int, batch_norm: bool
) -> tuple[nn.Sequential, int]:
    """DCGAN discriminator trunk from (N, image_channels, R, R) down to (N, C, 4, 4); returns (layers, C).

    The first convolution has no normalisation (Radford et al. 2015); later ones have BatchNorm when `batch_norm`.
    """
    stages = stages_for(resolution, base_channels=base_channels, image_channels=image_channels)
    widths = [base_channels * 2**i for i in range(stages)]  # 64 px, base 64: 64, 128, 256, 512
    layers: list[nn.Module] = [
        nn.Conv2d(image_channels, widths[0], 4, 2, 1),  # (N, widths[0], R/2, R/2)
        nn.LeakyReLU(0.2, inplace=True),
    ]
    for in_channels, out_channels in zip(widths[:-1], widths[1:]):
        layers.append(nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=not batch_norm))  # (N, out, H/2, W/2)
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
    # Spatial size is now 4x4.
    return nn.Sequential(*layers), widths[-1]


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN initialisation, for `module.apply`: conv weights ~ N(0, 0.02), BatchNorm weights ~ N(1, 0.02), biases 0.

    A spectrally normalised convolution has its unnormalised weight (`parametrizations.weight.original`)
    initialised; its power-iteration vectors then re-converge during training forwards. The constructors here
    initialise before adding spectral norm, so those vectors start out matched to the weight.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        if parametrize.is_parametrized(module, "weight"):
            weight = module.parametrizations.weight.original
        else:
            weight = module.weight
        nn.init.normal_(weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, ConditionalBatchNorm2d):
        nn.init.normal_(module.gamma.weight, 1.0, 0.02)
        nn.init.zeros_(module.beta.weight)


class Generator(nn.Module):
    """DCGAN generator: z of shape (N, latent_dim) or (N, latent_dim, 1, 1) -> images (N, C, R, R) in [-1, 1].

    `num_classes` > 0: class-conditional, the label's one-hot code concatenated to z and every BatchNorm conditional;
    `forward(z, labels)` with labels int64 (N,) in [0, num_classes). The one-hot input carries the class from the
    first step, where conditional BatchNorm alone starts from the same scale and shift for every class: on the
    default mnist5k run (3000 steps) class accuracy went from 0.96 (conditional BatchNorm alone) to 0.992. Weights
    are initialised with `init_dcgan_weights`.
    """

    def __init__(
        self, latent_dim: int = 100, base_channels: int = 64, image_channels: int = 1, resolution: int = 32,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 0 or num_classes == 1:
            raise UsageError(f"num_classes must be 0 (unconditional) or at least 2; got {num_classes!r}")
        self.latent_dim = latent_dim
        self.image_channels = image_channels
        self.resolution = resolution
        self.num_classes = num_classes
        self.layers = generator_stack(latent_dim, base_channels, image_channels, resolution, num_classes)
        self.apply(init_dcgan_weights)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(labels, self.num_classes, "this generator")
        if z.dim() == 2:
            z = z[:, :, None, None]  # (N, latent_dim, 1, 1)
        if self.num_classes:
            one_hot = F.one_hot(labels.to(z.device), self.num_classes).to(z.dtype)[:, :, None, None]  # (N, K, 1, 1)
            return torch.tanh(self.layers(torch.cat([z, one_hot], 1), labels))  # (N, image_channels, R, R)
        return torch.tanh(self.layers(z))  # (N, image_channels, R, R)


class Discriminator(nn.Module):
    """DCGAN discriminator: images (N, C, R, R) -> raw logits (N,) (no sigmoid; the losses take logits).

    `normalization`: "batch" (BatchNorm after every conv but the first and last, as in the paper), "none", or
    "spectral" (Miyato et al. 2018: spectral norm on every conv, no BatchNorm). Use "none" or "spectral" with the
    WGAN-GP gradient penalty, which is per-sample and ill-defined under BatchNorm (Gulrajani et al. 2017).
    Weights are initialised with `init_dcgan_weights`.
    """

    def __init__(
        self, base_channels: int = 64, image_channels: int = 1, resolution: int = 32, normalization: str = "batch",
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise UsageError(f"normalization must be one of {', '.join(NORMALIZATIONS)}; got {normalization!r}")
        if not isinstance(num_classes, int) or num_classes < 0 or num_classes == 1:
            raise UsageError(f"num_classes must be 0 (unconditional) or at least 2; got {num_classes!r}")
        self.normalization = normalization
        self.num_classes = num_classes
        self.layers, channels = discriminator_stack(
            base_channels, image_channels, resolution, batch_norm=normalization == "batch"
        )  # phi: (N, channels, 4, 4)
        self.layers.append(nn.Conv2d(channels, 1, 4, 1, 0))  # psi: (N, 1, 1, 1)
        self.apply(init_dcgan_weights)
        if num_classes:
            # The projection's class embedding (N, channels * 16), one vector per class, drawn ~ N(0, 0.02) as
            # every DCGAN weight; the inner product starts near 0, so D starts as the unconditional one.
            self.embed = nn.Embedding(num_classes, channels * 4 * 4)
            nn.init.normal_(self.embed.weight, 0.0, 0.02)
        if normalization == "spectral":
            for module in self.layers:
                if isinstance(module, nn.Conv2d):
                    spectral_norm(module)
            if num_classes:
                spectral_norm(self.embed)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(labels, self.num_classes, "this discriminator")
        if not self.num_classes:
            return self.layers(images).flatten()  # (N,)
        features = self.layers[:-1](images)  # phi(x): (N, C, 4, 4)
        psi = self.layers[-1](features).flatten()  # (N,)
        projection = (self.embed(labels) * features.flatten(1)).sum(1)  # <embed(y), phi(x)>: (N,)
        return psi + projection
