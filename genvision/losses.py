"""GAN losses, gradient penalties, and VAE objectives, as pure functions of tensors.

- GAN losses (`gan_losses`) take discriminator logits and return scalar means over the batch: non-saturating
  (Goodfellow et al. 2014), hinge (Lim & Ye 2017; Miyato et al. 2018), least squares (Mao et al. 2017) and WGAN
  (Gulrajani et al. 2017); penalties: `gradient_penalty` (WGAN-GP) and `r1_penalty` (Mescheder et al. 2018).
- VAE terms follow Kingma & Welling 2014, "Auto-Encoding Variational Bayes": `elbo`, `log_likelihood`,
  `kl_divergence`, `importance_weighted_nll` (IWAE bound, Burda et al. 2016), `kl_weight` (cyclical annealing,
  Fu et al. 2019). Decoder outputs `out` (see `genvision.models.vae.ConvVAE`) are logits: the mean image in [-1, 1]
  is `decoder_mean(out) = 2 * sigmoid(out) - 1` for either likelihood.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from genvision.errors import UsageError

LIKELIHOODS = ("bernoulli", "gaussian")
KL_SCHEDULES = ("constant", "linear", "cyclical")
_LOG_2PI = math.log(2 * math.pi)


# --- GAN losses ------------------------------------------------------------------------------------------------


def nonsaturating_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    # Goodfellow et al. 2014: L_D = -E[log sigmoid(D(x))] - E[log(1 - sigmoid(D(G(z))))]
    #                             = E[softplus(-D(x))] + E[softplus(D(G(z)))]
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def nonsaturating_g_loss(fake_logits: Tensor) -> Tensor:
    # Goodfellow et al. 2014 (non-saturating): L_G = -E[log sigmoid(D(G(z)))] = E[softplus(-D(G(z)))]
    return F.softplus(-fake_logits).mean()


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    # Lim & Ye 2017; Miyato et al. 2018: L_D = E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    # Lim & Ye 2017; Miyato et al. 2018: L_G = -E[D(G(z))]
    return -fake_logits.mean()


def lsgan_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    # Mao et al. 2017, a=0, b=1: L_D = 1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2]
    return 0.5 * (real_logits - 1).pow(2).mean() + 0.5 * fake_logits.pow(2).mean()


def lsgan_g_loss(fake_logits: Tensor) -> Tensor:
    # Mao et al. 2017, c=1: L_G = 1/2 E[(D(G(z)) - 1)^2]
    return 0.5 * (fake_logits - 1).pow(2).mean()


def wgan_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    # Gulrajani et al. 2017 (critic, without the penalty): L_D = E[D(G(z))] - E[D(x)]; add λ * gradient_penalty.
    return fake_logits.mean() - real_logits.mean()


def wgan_g_loss(fake_logits: Tensor) -> Tensor:
    # Gulrajani et al. 2017: L_G = -E[D(G(z))]
    return -fake_logits.mean()


DLossFn = Callable[[Tensor, Tensor], Tensor]
GLossFn = Callable[[Tensor], Tensor]
GAN_LOSSES: dict[str, tuple[DLossFn, GLossFn]] = {
    "nonsaturating": (nonsaturating_d_loss, nonsaturating_g_loss),
    "hinge": (hinge_d_loss, hinge_g_loss),
    "lsgan": (lsgan_d_loss, lsgan_g_loss),
    "wgan-gp": (wgan_d_loss, wgan_g_loss),
}


def gan_losses(name: str) -> tuple[DLossFn, GLossFn]:
    """(d_loss(real_logits, fake_logits), g_loss(fake_logits)) for a name in GAN_LOSSES."""
    if name not in GAN_LOSSES:
        raise UsageError(f"loss must be one of {', '.join(GAN_LOSSES)}; got {name!r}")
    return GAN_LOSSES[name]


def gradient_penalty(
    discriminator: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, noise: torch.Generator | None = None
) -> Tensor:
    """WGAN-GP term without λ (Gulrajani et al. 2017): E[(||∇_x̂ D(x̂)||_2 - 1)^2], x̂ = ε real + (1 - ε) fake.

    ε ~ U[0, 1] per sample, drawn with the random-number generator `noise`, which must live on `real.device`. The
    graph is kept (create_graph=True) so the penalty can be backpropagated into the discriminator.
    """
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    epsilon = torch.rand(shape, generator=noise, device=real.device, dtype=real.dtype)
    mixed = (epsilon * real.detach() + (1 - epsilon) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


def r1_penalty(real_logits: Tensor, real_images: Tensor, scale: float | Tensor = 1.0) -> Tensor:
    """R1 term without γ/2 (Mescheder et al. 2018): E_x[||∇_x D(x)||^2], squared norm summed over pixels.

    `real_images` must have requires_grad=True before `real_logits = D(real_images)` is computed. The caller
    multiplies by γ/2. The graph is kept (create_graph=True).

    `scale` (S > 0, a float or a scalar tensor): when D ran under fp16 autocast its backward runs in half
    precision, where gradients below 3e-8 round to zero; pass the grad scaler's current scale S, and the gradient
    is taken of S * mean D(x) and unscaled in float32 (the loss scaling of Micikevicius et al. 2018). 1 = none.
    """
    if not real_images.requires_grad:
        raise ValueError("r1_penalty needs real_images.requires_grad_(True) before the discriminator forward")
    # ∇_x D(x_i) = N / S · ∇_x_i (S · mean_j D(x_j)): each logit's upstream gradient S / N is that of the scaled
    # batch-mean losses the grad scaler is tuned for (S itself, 2^16 at first, would overflow fp16's 65504)
    batch_size = real_logits.numel()
    (scaled_grad,) = torch.autograd.grad(real_logits.mean() * scale, real_images, create_graph=True)
    grad = scaled_grad.float() * (batch_size / scale)
    return grad.pow(2).flatten(1).sum(1).mean()


# --- VAE objectives --------------------------------------------------------------------------------------------


def decoder_mean(out: Tensor) -> Tensor:
    """Mean image in [-1, 1] from decoder logits: 2 * sigmoid(out) - 1 (Bernoulli p = sigmoid(out), rescaled)."""
    return 2 * torch.sigmoid(out) - 1


def _check_likelihood(likelihood: str) -> None:
    if likelihood not in LIKELIHOODS:
        raise UsageError(f"likelihood must be one of {', '.join(LIKELIHOODS)}; got {likelihood!r}")


def log_likelihood(x: Tensor, out: Tensor, likelihood: str = "bernoulli", sigma: float | Tensor = 1.0) -> Tensor:
    """Per-image log p(x|z) (N,), summed over pixels; x in [-1, 1], `out` the decoder logits.

    bernoulli: t = (x + 1) / 2, log p = Σ [t log σ(out) + (1 - t) log(1 - σ(out))] (= -BCE-with-logits; for
    non-binary t this is the usual unnormalised "continuous targets" use of the Bernoulli).
    gaussian: x ~ N(μ, sigma²) in [-1, 1]-space with μ = decoder_mean(out),
    log p = Σ [-(x - μ)² / (2 sigma²) - log sigma - ½ log 2π]. `sigma` is a float or a scalar tensor (σ-VAE).
    """
    _check_likelihood(likelihood)
    if likelihood == "bernoulli":
        nll = F.binary_cross_entropy_with_logits(out, (x + 1) / 2, reduction="none")
    else:
        sigma = torch.as_tensor(sigma, dtype=out.dtype, device=out.device)
        nll = 0.5 * ((x - decoder_mean(out)) / sigma).pow(2) + torch.log(sigma) + 0.5 * _LOG_2PI
    return -nll.flatten(1).sum(1)


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """Per-image KL(N(mu, exp(logvar)) || N(0, I)) (N,) = ½ Σ_j (mu_j² + exp(logvar_j) - 1 - logvar_j)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def elbo(
    x: Tensor,
    out: Tensor,
    mu: Tensor,
    logvar: Tensor,
    likelihood: str = "bernoulli",
    beta: float = 1.0,
    sigma: float | Tensor = 1.0,
    free_bits: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """(total, reconstruction, kl): scalars averaged over the batch; minimise `total`.

    reconstruction = -log p(x|z) summed over all pixels of an image; kl = KL(q(z|x) || p(z)) summed over latent
    dims. total = reconstruction + beta * kl_opt. β multiplies the per-image KL relative to the per-image
    reconstruction summed over all pixels, so β = 1 is the true negative ELBO whatever the image size (β is NOT
    per-pixel). Free bits (Kingma et al. 2016): with free_bits > 0, kl_opt clamps each latent dim's
    batch-averaged KL from below at free_bits nats before summing; the returned `kl` is always the true KL.
    """
    if beta < 0:
        raise UsageError(f"beta must be >= 0; got {beta!r}")
    if free_bits < 0:
        raise UsageError(f"free_bits must be >= 0; got {free_bits!r}")
    reconstruction = -log_likelihood(x, out, likelihood, sigma).mean()
    kl_per_dim = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean(0)  # (latent_dim,)
    kl = kl_per_dim.sum()
    kl_opt = kl_per_dim.clamp(min=free_bits).sum() if free_bits > 0 else kl
    return reconstruction + beta * kl_opt, reconstruction, kl


class _VAE(Protocol):
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]: ...
    def decode(self, z: Tensor) -> Tensor: ...


@torch.no_grad()
def importance_weighted_nll(
    model: _VAE,
    x: Tensor,
    num_samples: int,
    likelihood: str = "bernoulli",
    sigma: float | Tensor = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-image IWAE bound (Burda et al. 2016) on -log p(x), (N,), in nats; tighter than -ELBO as k grows.

    -log (1/k Σ_i p(x|z_i) p(z_i) / q(z_i|x)), z_i ~ q(z|x), via logsumexp. Put the model in eval mode first.
    For a σ-VAE pass sigma=model.log_sigma.exp().
    """
    if num_samples < 1:
        raise UsageError(f"num_samples must be >= 1; got {num_samples!r}")
    _check_likelihood(likelihood)
    mu, logvar = model.encode(x)
    std = torch.exp(0.5 * logvar)
    log_weights = []
    for _ in range(num_samples):
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + std * eps
        log_p_z = -0.5 * (z.pow(2) + _LOG_2PI).sum(1)
        log_q_z = -0.5 * (eps.pow(2) + logvar + _LOG_2PI).sum(1)  # (z - mu)² / var = eps²
        log_weights.append(log_likelihood(x, model.decode(z), likelihood, sigma) + log_p_z - log_q_z)
    return -(torch.logsumexp(torch.stack(log_weights), 0) - math.log(num_samples))


def kl_weight(
    step: int, schedule: str, beta: float, warmup_steps: int, cycle_steps: int | None = None, ratio: float = 0.5
) -> float:
    """KL weight at a training step (0-based).

    constant: beta. linear: beta * min(1, step / warmup_steps) (beta at once if warmup_steps is 0).
    cyclical (Fu et al. 2019, "Cyclical Annealing Schedule"): period = cycle_steps (default warmup_steps);
    τ = (step mod period) / period; weight = beta * min(1, τ / ratio), i.e. a linear rise over the first `ratio`
    of each cycle, then beta.
    """
    if schedule not in KL_SCHEDULES:
        raise UsageError(f"kl schedule must be one of {', '.join(KL_SCHEDULES)}; got {schedule!r}")
    if beta < 0:
        raise UsageError(f"beta must be >= 0; got {beta!r}")
    if warmup_steps < 0:
        raise UsageError(f"warmup_steps must be >= 0; got {warmup_steps!r}")
    if schedule == "constant":
        return float(beta)
    if schedule == "linear":
        return float(beta) if warmup_steps == 0 else beta * min(1.0, step / warmup_steps)
    period = warmup_steps if cycle_steps is None else cycle_steps
    if period <= 0:
        raise UsageError(f"cycle_steps (default warmup_steps) must be > 0 for the cyclical schedule; got {period!r}")
    if not 0 < ratio <= 1:
        raise UsageError(f"ratio must be in (0, 1]; got {ratio!r}")
    return beta * min(1.0, (step % period) / period / ratio)
