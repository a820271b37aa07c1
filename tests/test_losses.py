"""Tests for genvision.losses against values computed by hand."""

import math

import pytest
import torch
from torch import nn

from genvision.errors import UsageError
from genvision.losses import (
    elbo,
    gan_losses,
    gradient_penalty,
    importance_weighted_nll,
    kl_divergence,
    kl_weight,
    log_likelihood,
    r1_penalty,
)

REAL = torch.tensor([0.0, 2.0])
FAKE = torch.tensor([-1.0, 1.0])


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


@pytest.mark.parametrize(
    ("name", "d_expected", "g_expected"),
    [
        (
            "nonsaturating",
            (softplus(0.0) + softplus(-2.0)) / 2 + (softplus(-1.0) + softplus(1.0)) / 2,
            (softplus(1.0) + softplus(-1.0)) / 2,
        ),
        ("hinge", (1.0 + 0.0) / 2 + (0.0 + 2.0) / 2, -(-1.0 + 1.0) / 2),
        ("lsgan", 0.5 * (1.0 + 1.0) / 2 + 0.5 * (1.0 + 1.0) / 2, 0.5 * (4.0 + 0.0) / 2),
        ("wgan-gp", (-1.0 + 1.0) / 2 - (0.0 + 2.0) / 2, 0.0),
    ],
)
def test_gan_losses_by_hand(name: str, d_expected: float, g_expected: float) -> None:
    d_loss, g_loss = gan_losses(name)
    torch.testing.assert_close(d_loss(REAL, FAKE), torch.tensor(d_expected))
    torch.testing.assert_close(g_loss(FAKE), torch.tensor(g_expected))


def test_nonsaturating_g_loss_asymmetric() -> None:
    _, g_loss = gan_losses("nonsaturating")
    torch.testing.assert_close(g_loss(torch.tensor([3.0])), torch.tensor(softplus(-3.0)))


def test_unknown_loss_raises() -> None:
    with pytest.raises(UsageError, match="loss must be one of nonsaturating, hinge, lsgan, wgan-gp; got 'foo'"):
        gan_losses("foo")


def linear_discriminator(weight: torch.Tensor):
    return lambda images: (images * weight).flatten(1).sum(1)


@pytest.mark.parametrize("scale", [0.1, 1.0, 3.0])
def test_gradient_penalty_linear_discriminator(scale: float) -> None:
    weight = torch.tensor([[[1.0, -2.0], [2.0, 4.0]]]) * scale  # ||w|| = 5 * scale
    real, fake = torch.randn(4, 1, 2, 2), torch.randn(4, 1, 2, 2)
    penalty = gradient_penalty(linear_discriminator(weight), real, fake, torch.Generator().manual_seed(0))
    torch.testing.assert_close(penalty, torch.tensor((5.0 * scale - 1.0) ** 2))


def test_gradient_penalty_is_differentiable_and_seeded() -> None:
    weight = torch.tensor([[[0.5, 1.0], [0.0, 2.0]]], requires_grad=True)
    quadratic = lambda images: (images * weight).flatten(1).sum(1).pow(2)  # noqa: E731
    real, fake = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    first = gradient_penalty(quadratic, real, fake, torch.Generator().manual_seed(7))
    again = gradient_penalty(quadratic, real, fake, torch.Generator().manual_seed(7))
    torch.testing.assert_close(first, again)
    first.backward()
    assert weight.grad is not None and torch.isfinite(weight.grad).all()


def test_r1_penalty_linear_discriminator() -> None:
    weight = torch.tensor([[[1.0, -2.0], [2.0, 4.0]]])
    real = torch.randn(3, 1, 2, 2, requires_grad=True)
    penalty = r1_penalty(linear_discriminator(weight)(real), real)
    torch.testing.assert_close(penalty, torch.tensor(25.0))


def test_r1_penalty_loss_scale_is_undone_in_float32() -> None:
    weight = torch.tensor([[[1.0, -2.0], [2.0, 4.0]]])
    real = torch.randn(3, 1, 2, 2, requires_grad=True)
    for scale in (2.0**10, torch.tensor(2.0**16)):
        torch.testing.assert_close(r1_penalty(linear_discriminator(weight)(real), real, scale), torch.tensor(25.0))


def tiny_input_gradient_discriminator() -> nn.Module:
    """D(x) = w2 · (w1 * x) over 8x8 images, |w1|, |w2| in [1e-4, 1.3e-4] (normal fp16 numbers, so the forward
    pass is accurate), random signs: each input gradient w1 * w2[pixel] / N is below 1.7e-8 / N, under the 3e-8
    at which float16 rounds to zero."""
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.Conv2d(1, 1, 8, bias=False), nn.Flatten(0))
    with torch.no_grad():
        for conv in model:
            if isinstance(conv, nn.Conv2d):
                magnitude = 1e-4 * (1 + 0.3 * torch.rand(conv.weight.shape, generator=generator))
                sign = torch.randint(0, 2, conv.weight.shape, generator=generator) * 2 - 1
                conv.weight.copy_(magnitude * sign)
    return model


def test_r1_penalty_under_fp16_autocast_needs_the_loss_scale() -> None:
    discriminator = tiny_input_gradient_discriminator()
    real = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    reference = r1_penalty(discriminator(real), real)  # float32: ~1.1e-14
    assert reference > 0

    def penalty_in_fp16(scale: float) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.float16):
            logits = discriminator(real).float()  # as GANTask.discriminator_step takes them
        return r1_penalty(logits, real, scale)

    with torch.autocast("cpu", dtype=torch.float16):
        assert discriminator(real).dtype == torch.float16  # the convolutions do run in half precision
    assert penalty_in_fp16(1.0) == 0  # every input gradient underflows
    # GradScaler's initial scale. fp16 keeps 11 significant bits (rounding error <= 4.9e-4 relative): the weights,
    # the hidden gradient and the input gradient are each rounded once, the penalty squares it; measured 4.9e-4.
    torch.testing.assert_close(penalty_in_fp16(2.0**16), reference, rtol=5e-3, atol=0)


def test_r1_penalty_needs_requires_grad() -> None:
    real = torch.randn(2, 1, 2, 2)
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(real.sum((1, 2, 3)), real)


# --- VAE -------------------------------------------------------------------------------------------------------


def test_kl_zero_for_standard_normal() -> None:
    zeros = torch.zeros(3, 5)
    torch.testing.assert_close(kl_divergence(zeros, zeros), torch.zeros(3), rtol=0, atol=0)


def test_kl_matches_monte_carlo() -> None:
    gen = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(2, 4, generator=gen), torch.randn(2, 4, generator=gen) * 0.5
    std = torch.exp(0.5 * logvar)
    eps = torch.randn(200_000, 2, 4, generator=gen)
    z = mu + std * eps
    log_q = (-0.5 * eps.pow(2) - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_p = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(kl_divergence(mu, logvar), (log_q - log_p).mean(0), rtol=0.02, atol=0.01)


X = torch.tensor([[[[-1.0, 1.0], [0.0, 0.5]]]])  # (1, 1, 2, 2) in [-1, 1]
OUT = torch.tensor([[[[0.0, 2.0], [-1.0, 3.0]]]])  # decoder logits


def bernoulli_nll_by_hand() -> float:
    total = 0.0
    for x, a in zip([-1.0, 1.0, 0.0, 0.5], [0.0, 2.0, -1.0, 3.0]):
        t, p = (x + 1) / 2, 1 / (1 + math.exp(-a))
        total -= t * math.log(p) + (1 - t) * math.log(1 - p)
    return total


def gaussian_nll_by_hand(sigma: float) -> float:
    total = 0.0
    for x, a in zip([-1.0, 1.0, 0.0, 0.5], [0.0, 2.0, -1.0, 3.0]):
        mean = 2 / (1 + math.exp(-a)) - 1
        total += (x - mean) ** 2 / (2 * sigma**2) + math.log(sigma) + 0.5 * math.log(2 * math.pi)
    return total


def test_bernoulli_reconstruction_by_hand() -> None:
    zeros = torch.zeros(1, 3)
    total, reconstruction, kl = elbo(X, OUT, zeros, zeros, likelihood="bernoulli")
    torch.testing.assert_close(reconstruction, torch.tensor(bernoulli_nll_by_hand()))
    torch.testing.assert_close(total, reconstruction)
    torch.testing.assert_close(kl, torch.tensor(0.0))


@pytest.mark.parametrize("sigma", [1.0, 0.1, torch.tensor(0.5)])
def test_gaussian_reconstruction_by_hand(sigma) -> None:
    expected = gaussian_nll_by_hand(float(sigma))
    torch.testing.assert_close(log_likelihood(X, OUT, "gaussian", sigma), torch.tensor([-expected]))


def test_reconstruction_averages_over_batch_sums_over_pixels() -> None:
    x, out = torch.cat([X, -X]), torch.cat([OUT, torch.zeros_like(OUT)])
    zeros = torch.zeros(2, 3)
    _, reconstruction, _ = elbo(x, out, zeros, zeros)
    second = 4 * math.log(2)  # logits 0 -> p = 1/2 for every pixel whatever the target
    torch.testing.assert_close(reconstruction, torch.tensor((bernoulli_nll_by_hand() + second) / 2))


@pytest.mark.parametrize("beta", [0.0, 0.5, 4.0])
def test_beta_scales_kl(beta: float) -> None:
    mu, logvar = torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    x, out = X.repeat(2, 1, 1, 1), OUT.repeat(2, 1, 1, 1)
    kl_expected = (0.5 * 1.0 + 0.5 * (math.e - 1 - 1)) / 2  # per image, then batch mean
    total, reconstruction, kl = elbo(x, out, mu, logvar, beta=beta)
    torch.testing.assert_close(kl, torch.tensor(kl_expected))
    torch.testing.assert_close(total, reconstruction + beta * kl_expected)


def test_free_bits_clamps_optimised_kl_only() -> None:
    mu = torch.tensor([[2.0, 0.1], [2.0, 0.1]])  # per-dim KL: 2.0 and 0.005
    logvar = torch.zeros(2, 2)
    x, out = X.repeat(2, 1, 1, 1), OUT.repeat(2, 1, 1, 1)
    total, reconstruction, kl = elbo(x, out, mu, logvar, beta=2.0, free_bits=0.5)
    torch.testing.assert_close(kl, torch.tensor(2.005))
    torch.testing.assert_close(total, reconstruction + 2.0 * (2.0 + 0.5))


@pytest.mark.parametrize(("kwargs", "match"), [({"beta": -1.0}, "beta"), ({"likelihood": "poisson"}, "likelihood")])
def test_elbo_bad_values_raise(kwargs: dict, match: str) -> None:
    zeros = torch.zeros(1, 2)
    with pytest.raises(UsageError, match=match):
        elbo(X, OUT, zeros, zeros, **kwargs)


class ConstantDecoderVAE:
    """q(z|x) = p(z) and a decoder that ignores z, so every importance weight equals p(x|z) exactly."""

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(x.shape[0], 3), torch.zeros(x.shape[0], 3)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return OUT.expand(z.shape[0], -1, -1, -1)


@pytest.mark.parametrize("num_samples", [1, 5])
def test_importance_weighted_nll_exact_case(num_samples: int) -> None:
    nll = importance_weighted_nll(ConstantDecoderVAE(), X, num_samples, "bernoulli")
    torch.testing.assert_close(nll, torch.tensor([bernoulli_nll_by_hand()]))


@pytest.mark.parametrize(
    ("step", "schedule", "expected"),
    [
        (0, "constant", 2.0),
        (500, "constant", 2.0),
        (0, "linear", 0.0),
        (50, "linear", 1.0),
        (100, "linear", 2.0),
        (200, "linear", 2.0),
        (0, "cyclical", 0.0),
        (25, "cyclical", 1.0),  # cycle 100, ratio 0.5: half way up the ramp
        (50, "cyclical", 2.0),
        (99, "cyclical", 2.0),
        (100, "cyclical", 0.0),  # next cycle restarts
        (125, "cyclical", 1.0),
    ],
)
def test_kl_weight_schedules(step: int, schedule: str, expected: float) -> None:
    assert kl_weight(step, schedule, beta=2.0, warmup_steps=100) == pytest.approx(expected)


def test_kl_weight_cycle_steps_and_ratio() -> None:
    assert kl_weight(30, "cyclical", 1.0, warmup_steps=10, cycle_steps=40, ratio=1.0) == pytest.approx(0.75)
    assert kl_weight(45, "cyclical", 1.0, warmup_steps=10, cycle_steps=40, ratio=0.25) == pytest.approx(0.5)


@pytest.mark.parametrize(("schedule", "beta"), [("sigmoid", 1.0), ("linear", -0.1)])
def test_kl_weight_bad_values_raise(schedule: str, beta: float) -> None:
    with pytest.raises(UsageError):
        kl_weight(0, schedule, beta, warmup_steps=10)
