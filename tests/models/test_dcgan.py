"""Tests for genvision.models.dcgan (Radford et al. 2015)."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from genvision.errors import UsageError
from genvision.models.dcgan import Discriminator, Generator, init_dcgan_weights


@pytest.mark.parametrize("resolution", [32, 64, 128])
@pytest.mark.parametrize("image_channels", [1, 3])
def test_generator_output_shape_and_range(resolution: int, image_channels: int) -> None:
    torch.manual_seed(0)
    generator = Generator(latent_dim=16, base_channels=8, image_channels=image_channels, resolution=resolution)
    images = generator(torch.randn(2, 16) * 10)
    assert images.shape == (2, image_channels, resolution, resolution)
    assert images.min() >= -1 and images.max() <= 1


def test_generator_accepts_4d_latent() -> None:
    torch.manual_seed(0)
    generator = Generator(latent_dim=16, base_channels=8).eval()
    z = torch.randn(3, 16)
    torch.testing.assert_close(generator(z[:, :, None, None]), generator(z))


@pytest.mark.parametrize("resolution", [32, 64, 128])
@pytest.mark.parametrize("image_channels", [1, 3])
@pytest.mark.parametrize("normalization", ["batch", "none", "spectral"])
def test_discriminator_logit_shape(resolution: int, image_channels: int, normalization: str) -> None:
    discriminator = Discriminator(
        base_channels=8, image_channels=image_channels, resolution=resolution, normalization=normalization
    )
    logits = discriminator(torch.randn(2, image_channels, resolution, resolution))
    assert logits.shape == (2,)


@pytest.mark.parametrize(
    ("resolution", "widths"),
    [(32, [256, 128, 64, 1]), (64, [512, 256, 128, 64, 1]), (128, [1024, 512, 256, 128, 64, 1])],
)
def test_generator_classic_widths(resolution: int, widths: list[int]) -> None:
    generator = Generator(latent_dim=100, base_channels=64, image_channels=1, resolution=resolution)
    convs = [m for m in generator.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == widths
    assert all(c.bias is None for c in convs[:-1])


def test_discriminator_classic_widths() -> None:
    discriminator = Discriminator(base_channels=64, image_channels=3, resolution=64)
    convs = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]


@pytest.mark.parametrize(("normalization", "batch_norms"), [("batch", 2), ("none", 0), ("spectral", 0)])
def test_discriminator_normalizations(normalization: str, batch_norms: int) -> None:
    discriminator = Discriminator(base_channels=8, resolution=32, normalization=normalization)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in discriminator.modules()) == batch_norms
    convs = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d)]
    spectral = [parametrize.is_parametrized(c, "weight") for c in convs]
    assert spectral == [normalization == "spectral"] * 4


def test_spectral_norm_bounds_weight_norm() -> None:
    torch.manual_seed(0)
    discriminator = Discriminator(base_channels=8, resolution=32, normalization="spectral").train()
    for _ in range(20):  # power iteration runs in training forwards
        discriminator(torch.randn(2, 1, 32, 32))
    conv = discriminator.layers[2]
    sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
    torch.testing.assert_close(sigma, torch.tensor(1.0), atol=1e-3, rtol=0)


def test_init_statistics() -> None:
    torch.manual_seed(0)
    generator = Generator(latent_dim=100, base_channels=64, resolution=64)
    weight = generator.layers[0].weight  # 100 * 512 * 16 values
    torch.testing.assert_close(weight.std().item(), 0.02, atol=5e-4, rtol=0)
    torch.testing.assert_close(weight.mean().item(), 0.0, atol=5e-4, rtol=0)
    batch_norm = generator.layers[1]
    torch.testing.assert_close(batch_norm.weight.mean().item(), 1.0, atol=5e-3, rtol=0)
    assert torch.all(batch_norm.bias == 0)


def test_init_on_spectral_norm_original_weight() -> None:
    torch.manual_seed(0)
    discriminator = Discriminator(base_channels=64, resolution=64, normalization="spectral")
    conv = discriminator.layers[-1]  # 512 -> 1, 8192 values
    nn.init.constant_(conv.parametrizations.weight.original, 5.0)
    discriminator.apply(init_dcgan_weights)
    original = conv.parametrizations.weight.original
    torch.testing.assert_close(original.std().item(), 0.02, atol=1e-3, rtol=0)
    assert torch.all(conv.bias == 0)
    assert torch.isfinite(discriminator(torch.randn(2, 1, 64, 64))).all()


@pytest.mark.parametrize("resolution", [16, 48, 256])
def test_bad_resolution_raises(resolution: int) -> None:
    with pytest.raises(UsageError, match="resolution"):
        Generator(resolution=resolution)
    with pytest.raises(UsageError, match="resolution"):
        Discriminator(resolution=resolution)


def test_bad_normalization_raises() -> None:
    with pytest.raises(UsageError, match="normalization must be one of batch, none, spectral; got 'layer'"):
        Discriminator(normalization="layer")


def test_bad_sizes_raise() -> None:
    with pytest.raises(UsageError, match="latent_dim"):
        Generator(latent_dim=0)
