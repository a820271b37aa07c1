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


# -- class-conditional models ---------------------------------------------------------------------------------------

OLD_GENERATOR_KEYS = sorted(["layers.0.weight", "layers.3.weight", "layers.6.weight", "layers.9.weight",
                             "layers.9.bias", *(f"layers.{i}.{name}" for i in (1, 4, 7) for name in
                                                ("weight", "bias", "running_mean", "running_var",
                                                 "num_batches_tracked"))])


def test_unconditional_modules_are_unchanged() -> None:
    """num_classes=0: the state-dict keys and a seeded forward of genvision 0.2 (numbers recorded from it)."""
    from torch.testing import assert_close

    torch.manual_seed(0)
    generator, discriminator = Generator(8, 4, 1, 32), Discriminator(4, 1, 32, "spectral")
    assert sorted(generator.state_dict()) == OLD_GENERATOR_KEYS
    assert sorted(discriminator.state_dict()) == sorted(
        f"layers.{i}.{name}" for i in (0, 2, 4, 6) for name in
        ("bias", "parametrizations.weight.original", "parametrizations.weight.0._u", "parametrizations.weight.0._v"))
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    assert_close(generator(z)[:, 0, 10, 10:13].detach(),
                 torch.tensor([[0.00881432, 0.16474332, -0.06157805], [-0.06184687, 0.05999110, -0.06368656],
                               [-0.04418862, 0.08961450, -0.05886123]]), rtol=0, atol=1e-6)
    assert_close(discriminator(x).detach(), torch.tensor([-0.00322116, -0.01886697, -0.01841255]), rtol=0, atol=1e-6)


def test_conditional_batch_norm_against_hand_computed_values() -> None:
    from genvision.models.dcgan import ConditionalBatchNorm2d

    norm = ConditionalBatchNorm2d(2, num_classes=3).train()
    with torch.no_grad():
        norm.gamma.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
        norm.beta.weight.copy_(torch.tensor([[0.0, 0.5], [1.0, 1.5], [2.0, 2.5]]))
    x = torch.tensor([[[[1.0, 3.0]], [[0.0, 2.0]]], [[[5.0, 7.0]], [[4.0, 10.0]]]])  # (2, 2, 1, 2)
    labels = torch.tensor([2, 0])
    # channel 0: values 1, 3, 5, 7 -> mean 4, biased variance 5; channel 1: 0, 2, 4, 10 -> mean 4, variance 14
    eps = 1e-5
    expected = torch.empty(2, 2, 1, 2)
    for n, label in enumerate(labels.tolist()):
        for c, (mean, var) in enumerate(((4.0, 5.0), (4.0, 14.0))):
            gamma, beta = norm.gamma.weight[label, c].item(), norm.beta.weight[label, c].item()
            for w in range(2):
                expected[n, c, 0, w] = (x[n, c, 0, w].item() - mean) / (var + eps) ** 0.5 * gamma + beta
    torch.testing.assert_close(norm(x, labels), expected)


def test_conditional_batch_norm_init() -> None:
    generator = Generator(8, 16, 1, 32, num_classes=10)
    norms = [m for m in generator.modules() if m.__class__.__name__ == "ConditionalBatchNorm2d"]
    assert len(norms) == 3 and not any(isinstance(m, nn.BatchNorm2d) and m.affine for m in generator.modules())
    gammas = torch.cat([m.gamma.weight.flatten() for m in norms])
    assert abs(gammas.mean().item() - 1.0) < 0.01 and abs(gammas.std().item() - 0.02) < 0.005
    assert all(torch.equal(m.beta.weight, torch.zeros_like(m.beta.weight)) for m in norms)


def test_projection_discriminator_against_hand_computed_values() -> None:
    """logit = psi(phi(x)) + <embed(y), phi(x)>, psi the last 4x4 convolution (a linear map of phi flattened)."""
    discriminator = Discriminator(4, 1, 32, "none", num_classes=3).eval()
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    labels = torch.tensor([1, 2])
    with torch.no_grad():
        discriminator.embed.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(1))
        phi = discriminator.layers[:-1](x).flatten(1)  # (2, 16 * 4 * 4)
        psi_layer = discriminator.layers[-1]
        expected = []
        for n, label in enumerate(labels.tolist()):
            psi = sum(psi_layer.weight.flatten()[i].item() * phi[n, i].item() for i in range(phi.shape[1]))
            psi += psi_layer.bias.item()
            inner = sum(discriminator.embed.weight[label, i].item() * phi[n, i].item() for i in range(phi.shape[1]))
            expected.append(psi + inner)
        torch.testing.assert_close(discriminator(x, labels), torch.tensor(expected), rtol=1e-5, atol=1e-5)
        # another class changes only the projection term
        other = discriminator(x, torch.tensor([0, 0])) - discriminator(x, labels)
        inner_change = ((discriminator.embed.weight[0] - discriminator.embed.weight[labels]) * phi).sum(1)
        torch.testing.assert_close(other, inner_change, rtol=1e-5, atol=1e-5)


def test_conditional_shapes_keys_and_labels_required() -> None:
    generator = Generator(8, 4, 1, 32, num_classes=3)
    discriminator = Discriminator(4, 1, 32, "spectral", num_classes=3)
    labels = torch.tensor([0, 2])
    images = generator(torch.randn(2, 8), labels)
    assert images.shape == (2, 1, 32, 32) and discriminator(images, labels).shape == (2,)
    assert "layers.1.gamma.weight" in generator.state_dict() and "layers.1.batch_norm.running_mean" in \
        generator.state_dict()
    assert "embed.parametrizations.weight.original" in discriminator.state_dict()  # spectral norm on the embedding
    with pytest.raises(ValueError, match="conditional"):
        generator(torch.randn(2, 8))
    with pytest.raises(ValueError, match="conditional"):
        discriminator(images)
    with pytest.raises(ValueError, match="unconditional"):
        Generator(8, 4, 1, 32)(torch.randn(2, 8), labels)
    with pytest.raises(UsageError, match="num_classes"):
        Generator(8, 4, 1, 32, num_classes=1)


def test_conditional_generator_depends_on_the_label() -> None:
    generator = Generator(8, 4, 1, 32, num_classes=3).eval()
    with torch.no_grad():
        for module in generator.modules():
            if module.__class__.__name__ == "ConditionalBatchNorm2d":
                module.beta.weight.normal_()
        z = torch.randn(1, 8).repeat(3, 1)
        images = generator(z, torch.tensor([0, 1, 2]))
    assert not torch.equal(images[0], images[1]) and not torch.equal(images[1], images[2])


def test_conditional_generator_takes_the_one_hot_label_beside_z() -> None:
    """The first layer sees (N, latent_dim + num_classes, 1, 1): z, then the label's one-hot code (Mirza & Osindero
    2014); with every conditional BatchNorm made class-blind (the same scale and shift for every class), the label
    still changes the image, through that input alone, exactly as a stack fed the concatenation by hand."""
    generator = Generator(8, 4, 1, 32, num_classes=3).eval()
    first = generator.layers[0]
    assert first.in_channels == 8 + 3
    with torch.no_grad():
        for module in generator.modules():
            if module.__class__.__name__ == "ConditionalBatchNorm2d":
                module.gamma.weight.copy_(module.gamma.weight[:1].expand_as(module.gamma.weight))
                module.beta.weight.zero_()
        z = torch.randn(3, 8)
        labels = torch.tensor([2, 0, 1])
        images = generator(z, labels)
        by_hand = torch.cat([z, torch.eye(3)[labels]], dim=1)[:, :, None, None]  # (N, 11, 1, 1)
        torch.testing.assert_close(images, torch.tanh(generator.layers(by_hand, labels)), rtol=0, atol=0)
        same_z = generator(z[:1].repeat(3, 1), torch.tensor([0, 1, 2]))
    assert not torch.equal(same_z[0], same_z[1]) and not torch.equal(same_z[1], same_z[2])
