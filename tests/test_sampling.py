"""Sampling maths in-process: per-sample latents, truncation, slerp, grid layouts, finite checks (no checkpoints)."""

import math
from pathlib import Path

import pytest
import torch

from genvision.errors import UsageError
from genvision.generators import LoadedGenerator
from genvision.sampling import (decode_latents, generate, interpolate, interpolation_latents, latent_noise, make_grid,
                                rows_above, slerp)


def test_latent_noise_is_per_sample_and_unchanged_without_truncation():
    whole = latent_noise(10, 6, seed=3)
    assert torch.equal(whole[4:7], latent_noise(3, 6, seed=3, start=4))
    # the draw every existing run and FID was made with: row i = randn from a generator seeded by seed * 1000003 + i
    assert torch.equal(whole[2], torch.randn(6, generator=torch.Generator().manual_seed(3 * 1_000_003 + 2)))
    assert torch.equal(latent_noise(10, 6, seed=3, truncation=0.0), whole)


@pytest.mark.parametrize("truncation", [0.25, 1.0, 2.0])
def test_truncation_bounds_every_component_and_is_batch_independent(truncation):
    z = latent_noise(40, 16, seed=5, truncation=truncation)
    assert z.abs().max() <= truncation
    assert torch.equal(z, torch.cat([latent_noise(1, 16, seed=5, start=i, truncation=truncation) for i in range(40)]))
    plain = latent_noise(40, 16, seed=5)
    inside = plain.abs() <= truncation
    assert torch.equal(z[inside], plain[inside])  # components already inside are kept, only the others redrawn
    assert not torch.equal(z, plain)


def test_slerp_endpoints_are_exact_and_path_stays_on_the_sphere():
    start, end = torch.randn(3, 8), torch.randn(3, 8)
    path = slerp(start, end, torch.linspace(0, 1, 7))
    assert path.shape == (3, 7, 8)
    assert torch.equal(path[:, 0], start) and torch.equal(path[:, -1], end)
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])  # orthogonal unit vectors: a quarter circle
    mid = slerp(a, b, torch.tensor([0.5]))[0, 0]
    assert torch.allclose(mid, torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]), atol=1e-6)
    same = slerp(a, 2 * a, torch.tensor([0.5]))[0, 0]  # parallel: linear fallback, no NaN
    assert torch.allclose(same, torch.tensor([1.5, 0.0]))


def test_interpolation_latents_rows_join_samples_2r_and_2r_plus_1():
    latents = interpolation_latents(rows=3, steps=5, latent_dim=4, seed=9, truncation=1.5).view(3, 5, 4)
    samples = latent_noise(6, 4, seed=9, truncation=1.5)
    assert torch.equal(latents[:, 0], samples[0::2]) and torch.equal(latents[:, -1], samples[1::2])


def _fake_generator(decode) -> LoadedGenerator:
    from genvision.checkpoint import Checkpoint

    return LoadedGenerator(decode, 4, 2, 1, Checkpoint(path=Path("fake"), meta={}), False)


def test_generated_images_are_batch_independent_and_quantised():
    loaded = _fake_generator(lambda z: torch.tanh(z[:, :4].reshape(-1, 1, 2, 2)))
    reference = generate(loaded, 9, seed=1, batch_size=9)
    assert reference.dtype == torch.uint8 and reference.shape == (9, 1, 2, 2)
    for batch_size in (1, 4, 64):
        assert torch.equal(generate(loaded, 9, seed=1, batch_size=batch_size), reference)
    walk = interpolate(loaded, rows=2, steps=3, seed=1, batch_size=2)
    assert torch.equal(walk[0], reference[0]) and torch.equal(walk[2], reference[1])
    assert torch.equal(walk[3], reference[2]) and torch.equal(walk[5], reference[3])


def test_non_finite_output_is_refused_on_every_path():
    loaded = _fake_generator(lambda z: torch.full((len(z), 1, 2, 2), float("nan")))
    for call in (lambda: generate(loaded, 3, seed=0), lambda: interpolate(loaded, 2, 3, seed=0),
                 lambda: decode_latents(loaded, torch.zeros(2, 4))):
        with pytest.raises(UsageError, match="non-finite"):
            call()


def test_rows_above_keeps_inputs_over_their_reconstructions():
    top = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1) + 1
    bottom = top + 100
    laid = rows_above(top, bottom, nrow=4)
    assert laid.shape[0] == 24  # 3 rows of 4 inputs + 3 rows of 4 outputs; the short last rows padded black
    grid = make_grid(laid, nrow=4, padding=0)[..., 0]
    assert grid.tolist() == [[1, 2, 3, 4], [101, 102, 103, 104], [5, 6, 7, 8], [105, 106, 107, 108],
                             [9, 10, 0, 0], [109, 110, 0, 0]]
    assert rows_above(top[:3], bottom[:3], nrow=8).shape[0] == 6  # fewer than nrow: no padding


def test_make_grid_refuses_bad_nrow():
    with pytest.raises(UsageError, match="--nrow"):
        make_grid(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), nrow=0)
