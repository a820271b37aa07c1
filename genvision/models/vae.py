"""Convolutional VAE (`ConvVAE`) with a DCGAN-shaped encoder and decoder.

Kingma & Welling 2014, "Auto-Encoding Variational Bayes" (arXiv:1312.6114). The encoder is the DCGAN discriminator
trunk (Radford et al. 2015) followed by a linear layer to (mu, logvar); the decoder is the DCGAN generator stack
with the same width rule, without the final tanh.

`decode(z)` returns raw per-pixel logits `out` (N, C, R, R), and for both likelihoods the mean image in [-1, 1] is
`decoder_mean(out) = 2 * sigmoid(out) - 1`: "bernoulli" reads `out` as logits of t = (x + 1) / 2, "gaussian" as
x ~ N(decoder_mean(out), sigma²) (`genvision.losses.log_likelihood`), so `sample` and `reconstruct` need not know
which. `learned_variance=True` adds a learned scalar `log_sigma` (σ-VAE: Rybkin et al. 2021, "Simple and Effective
VAE Training with Calibrated Decoders"); pass `sigma=model.log_sigma.exp()` to `genvision.losses.elbo`.

With `num_classes` > 0 it is a conditional VAE (Sohn, Lee & Yan 2015, "Learning Structured Output Representation
using Deep Conditional Generative Models"): q(z|x, y) and p(x|z, y), the label y entering both as a one-hot code,
as num_classes constant maps concatenated to the encoder's input channels and as num_classes entries concatenated
to z; the prior p(z|y) stays N(0, I). With `num_classes=0` it is exactly the unconditional model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from genvision.losses import decoder_mean
from genvision.models.dcgan import check_labels, discriminator_stack, generator_stack, init_dcgan_weights

LOGVAR_LIMIT = 10.0


class ConvVAE(nn.Module):
    """Images (N, C, R, R) in [-1, 1] -> q(z|x) = N(mu, exp(logvar)) over `latent_dim` dims -> decoder logits.

    logvar is soft-clamped to (-10, 10) as 10 * tanh(raw / 10): about the identity near 0, smooth, and keeps
    exp(logvar) finite however large the encoder's raw output. Conv/BatchNorm weights use the DCGAN init.
    """

    def __init__(
        self,
        latent_dim: int = 32,
        base_channels: int = 32,
        image_channels: int = 1,
        resolution: int = 32,
        learned_variance: bool = False,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 0 or num_classes == 1:
            raise ValueError(f"num_classes must be 0 (unconditional) or at least 2; got {num_classes!r}")
        self.latent_dim = latent_dim
        self.image_channels = image_channels
        self.resolution = resolution
        self.num_classes = num_classes
        # (N, C + num_classes, R, R) -> (N, width, 4, 4), widths base_channels * 2**i (one-hot maps: conditional)
        self.encoder, width = discriminator_stack(base_channels, image_channels + num_classes, resolution,
                                                  batch_norm=True)
        self.to_posterior = nn.Linear(width * 4 * 4, 2 * latent_dim)  # (N, 2 * latent_dim)
        # (N, latent_dim + num_classes, 1, 1) -> (N, C, R, R) logits, same widths as genvision.models.dcgan.Generator
        self.decoder = generator_stack(latent_dim + num_classes, base_channels, image_channels, resolution)
        self.log_sigma = nn.Parameter(torch.zeros(())) if learned_variance else None
        self.apply(init_dcgan_weights)

    def one_hot(self, labels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """(N, num_classes) one-hot codes of `labels` in `like`'s dtype and device."""
        return F.one_hot(labels.to(like.device), self.num_classes).to(like.dtype)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each (N, latent_dim), in float32 at least (also under fp16/bf16 autocast); logvar
        soft-clamped to (-10, 10). A conditional VAE reads the labels too (one-hot maps beside the image)."""
        check_labels(labels, self.num_classes, "this VAE")
        if self.num_classes:
            maps = self.one_hot(labels, x)[:, :, None, None].expand(-1, -1, *x.shape[2:])  # (N, K, R, R)
            x = torch.cat([x, maps], dim=1)  # (N, C + K, R, R)
        posterior = self.to_posterior(self.encoder(x).flatten(1))  # (N, 2 * latent_dim)
        # The posterior, its clamp and z = mu + exp(logvar / 2) * eps in float32: bf16 keeps 8 significant bits
        # (steps of 0.4%), too coarse for the KL's exp(logvar) and for the code the decoder receives.
        posterior = posterior.to(torch.promote_types(posterior.dtype, torch.float32))
        mu, raw_logvar = posterior.chunk(2, dim=1)
        return mu, LOGVAR_LIMIT * torch.tanh(raw_logvar / LOGVAR_LIMIT)

    def reparameterize(
        self, mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I) drawn with `generator` (which must be on mu's device), in
        mu's dtype (at least float32 from `encode`, also under autocast)."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder logits (N, C, R, R) from z (N, latent_dim) (and a conditional VAE's labels, one-hot beside z);
        `decoder_mean` maps them to images in [-1, 1]."""
        check_labels(labels, self.num_classes, "this VAE")
        if self.num_classes:
            z = torch.cat([z, self.one_hot(labels, z)], dim=1)  # (N, latent_dim + K)
        return self.decoder(z[:, :, None, None])

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(out, mu, logvar) with out = decode(z, y), z ~ q(z|x, y); feed them to `genvision.losses.elbo`."""
        mu, logvar = self.encode(x, labels)
        return self.decode(self.reparameterize(mu, logvar, generator), labels), mu, logvar

    @staticmethod
    def mean_image(out: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from decoder logits, for either likelihood: 2 * sigmoid(out) - 1."""
        return decoder_mean(out)

    def sample(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """n mean images (n, C, R, R) in [-1, 1] decoded from z ~ N(0, I) (of class `labels` when conditional)."""
        if device is None:
            device = next(self.parameters()).device
        z = torch.randn((n, self.latent_dim), generator=generator, device=device)
        return self.mean_image(self.decode(z, labels))

    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean reconstructions in [-1, 1] decoded from the posterior mean (no sampling noise)."""
        mu, _ = self.encode(x, labels)
        return self.mean_image(self.decode(mu, labels))
