"""Tests for genvision.models.vae.ConvVAE (Kingma & Welling 2014)."""

import pytest
import torch
from torch import nn

from genvision.losses import elbo, importance_weighted_nll
from genvision.models.vae import ConvVAE


@pytest.mark.parametrize("resolution", [32, 64, 128])
@pytest.mark.parametrize("image_channels", [1, 3])
def test_shapes(resolution: int, image_channels: int) -> None:
    torch.manual_seed(0)
    model = ConvVAE(latent_dim=4, base_channels=4, image_channels=image_channels, resolution=resolution)
    x = torch.rand(2, image_channels, resolution, resolution) * 2 - 1
    out, mu, logvar = model(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert mu.shape == logvar.shape == (2, 4)
    assert model.reconstruct(x).shape == x.shape
    assert model.sample(3).shape == (3, image_channels, resolution, resolution)


def test_decoder_widths_match_generator_rule() -> None:
    model = ConvVAE(latent_dim=8, base_channels=64, resolution=64)
    convs = [m for m in model.decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [512, 256, 128, 64, 1]


def test_sample_and_reconstruct_in_range() -> None:
    torch.manual_seed(0)
    model = ConvVAE(latent_dim=4, base_channels=4).eval()
    with torch.no_grad():
        model.decoder[-1].bias.fill_(50.0)  # saturate the logits
        samples = model.sample(4, generator=torch.Generator().manual_seed(1))
        reconstructions = model.reconstruct(torch.rand(2, 1, 32, 32) * 2 - 1)
    images = torch.cat([samples, reconstructions])
    assert images.min() >= -1 and images.max() <= 1
    assert images.max() > 0.99  # saturated logits reach the top of the range, not beyond


def test_reconstruct_is_deterministic_and_sample_is_seeded() -> None:
    torch.manual_seed(0)
    model = ConvVAE(latent_dim=4, base_channels=4).eval()
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model.reconstruct(x), model.reconstruct(x))
        first = model.sample(2, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(first, model.sample(2, generator=torch.Generator().manual_seed(3)))


def test_reparameterize_by_hand() -> None:
    model = ConvVAE(latent_dim=3, base_channels=4)
    mu, logvar = torch.tensor([[1.0, -2.0, 0.0]]), torch.tensor([[0.0, 2.0, -4.0]])
    eps = torch.randn((1, 3), generator=torch.Generator().manual_seed(5))
    expected = mu + torch.tensor([[1.0, 2.718281828459045, 0.1353352832366127]]) * eps
    z = model.reparameterize(mu, logvar, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(z, expected)


def test_posterior_and_reparameterisation_stay_float32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    model = ConvVAE(latent_dim=4, base_channels=4)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, mu, logvar = model(x, generator=torch.Generator().manual_seed(2))
        z = model.reparameterize(mu, logvar, generator=torch.Generator().manual_seed(2))
        assert model.encoder(x).dtype == torch.bfloat16  # the networks themselves do run in bf16
    assert out.dtype == torch.bfloat16
    assert mu.dtype == logvar.dtype == z.dtype == torch.float32
    # z = mu + exp(logvar / 2) * eps computed in float32 (eps drawn in float32 from the same seed)
    eps = torch.randn((2, 4), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(z, mu + torch.exp(0.5 * logvar) * eps, rtol=0, atol=0)
    assert model.double().encode(x.double())[0].dtype == torch.float64  # never lowered


def test_logvar_soft_clamp_keeps_values_finite() -> None:
    torch.manual_seed(0)
    model = ConvVAE(latent_dim=4, base_channels=4)
    with torch.no_grad():
        model.to_posterior.bias.fill_(1e6)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    out, mu, logvar = model(x)
    assert logvar.max() <= 10 and torch.isfinite(out).all()
    total, _, kl = elbo(x, out, mu, logvar)
    assert torch.isfinite(total) and torch.isfinite(kl)


def test_learned_variance_parameter() -> None:
    assert ConvVAE(base_channels=4).log_sigma is None
    model = ConvVAE(base_channels=4, learned_variance=True)
    assert model.log_sigma.shape == () and model.log_sigma.requires_grad
    assert any(p is model.log_sigma for p in model.parameters())
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    out, mu, logvar = model(x)
    total, _, _ = elbo(x, out, mu, logvar, likelihood="gaussian", sigma=model.log_sigma.exp())
    total.backward()
    assert model.log_sigma.grad is not None and model.log_sigma.grad != 0


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_importance_weighted_bound_tighter_than_elbo(likelihood: str) -> None:
    torch.manual_seed(0)
    model = ConvVAE(latent_dim=2, base_channels=4).eval()
    with torch.no_grad():  # q(z|x) = N((2, -2), e^-1 I), far from p(z): -ELBO pays KL ~ 4.4 nats, IWAE wins some back
        model.to_posterior.weight.zero_()
        model.to_posterior.bias.copy_(torch.tensor([2.0, -2.0, -1.0, -1.0]))
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    iw_nll = importance_weighted_nll(model, x, 16, likelihood, 0.5, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        negative_elbos = [elbo(x, *model(x, gen), likelihood=likelihood, sigma=0.5)[0] for _ in range(4)]
    assert iw_nll.shape == (4,)
    assert iw_nll.mean() < torch.stack(negative_elbos).mean() - 0.5  # 1.1 to 2.6 nats over seeds 0-4


# -- the conditional VAE (Sohn et al. 2015) ------------------------------------------------------------------------


def test_unconditional_vae_is_unchanged() -> None:
    """num_classes=0: the keys and a seeded forward of genvision 0.2 (numbers recorded from it)."""
    torch.manual_seed(0)
    model = ConvVAE(4, 4, 1, 32)
    keys = list(model.state_dict())
    assert keys[:2] == ["encoder.0.weight", "encoder.0.bias"] and len(keys) == 36
    assert model.encoder[0].in_channels == 1 and model.decoder[0].in_channels == 4
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    mu, _ = model.encode(x)
    torch.testing.assert_close(mu[:, :2].detach(), torch.tensor([[0.65548772, 0.73557842], [0.01380967, 0.32378969],
                                                                 [0.44206268, 0.27344254]]), rtol=0, atol=1e-6)
    torch.testing.assert_close(model.decode(mu)[:, 0, 5, 5].detach(),
                               torch.tensor([0.02002698, 0.04931638, 0.05337838]), rtol=0, atol=1e-6)


def test_conditional_vae_reads_labels_in_encoder_and_decoder() -> None:
    model = ConvVAE(4, 4, 1, 32, num_classes=3).eval()
    assert model.encoder[0].in_channels == 1 + 3 and model.decoder[0].in_channels == 4 + 3
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    same = torch.tensor([1, 1])
    with torch.no_grad():
        mu_a, _ = model.encode(x, same)
        mu_b, _ = model.encode(x, torch.tensor([2, 2]))
        assert not torch.equal(mu_a, mu_b)
        # the encoder's input: the image, then one-hot maps (class 1: the second map all ones)
        seen = []
        handle = model.encoder[0].register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
        model.encode(x, same)
        handle.remove()
        torch.testing.assert_close(seen[0][:, :1], x)
        assert torch.equal(seen[0][:, 1:], torch.tensor([0.0, 1.0, 0.0])[None, :, None, None].expand(2, 3, 32, 32))
        z = torch.randn(2, 4)
        assert not torch.equal(model.decode(z, same), model.decode(z, torch.tensor([0, 0])))
        out, mu, logvar = model(x, torch.Generator().manual_seed(0), labels=same)
    assert out.shape == x.shape and mu.shape == logvar.shape == (2, 4)
    assert model.reconstruct(x, same).shape == x.shape and model.sample(2, labels=same).shape == x.shape
    with pytest.raises(ValueError, match="conditional"):
        model.encode(x)
    with pytest.raises(ValueError, match="conditional"):
        model.decode(z)
