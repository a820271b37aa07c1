"""Sampling maths in-process: per-sample latents, truncation, slerp, grid layouts, finite checks (no checkpoints)."""

import math
from pathlib import Path

import pytest
import torch

from genvision import distributed
from genvision.errors import UsageError
from genvision.generators import ClassMixturePrior, LoadedGenerator
from genvision.imageconv import to_uint8
from genvision.models.prior import GaussianMixturePrior
from genvision.sampling import (class_folder_names, class_labels, class_rows, decode_latents, generate,
                                generate_shard, interpolate, interpolation_latents, latent_noise, make_grid,
                                resolve_classes, rows_above, shard_labels, slerp)


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


# ---------------------------------------------------------------------------------------------------------------
# Class-conditional generators: stand-ins whose decode is a known function of (z, label).

COUNTS = (5, 3, 2)  # training images per class of the stand-in


def _conditional(prior=None, prior_name: str = "normal") -> LoadedGenerator:
    """decode(z, labels) = tanh(z[:, :4] / 2 + labels / 4) as 1x2x2 images: a known function of (latent, class)."""
    from genvision.checkpoint import Checkpoint

    def decode(z, labels):
        return torch.tanh(z[:, :4] / 2 + labels[:, None].to(z.dtype) / 4).reshape(-1, 1, 2, 2)

    return LoadedGenerator(decode, 4, 2, 1, Checkpoint(path=Path("fake"), meta={}), False, prior, prior_name,
                           ("zero", "one", "two"), COUNTS)


def _expected(latents: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return to_uint8(torch.tanh(latents[:, :4] / 2 + labels[:, None].float() / 4).reshape(-1, 1, 2, 2))


@pytest.mark.parametrize("num,expected", [(20, [10, 6, 4]), (7, [4, 2, 1]), (1, [1, 0, 0]), (0, [0, 0, 0])])
def test_class_labels_have_the_training_frequencies_exactly(num, expected):
    """Largest remainder: 7 * (5, 3, 2) / 10 = (3.5, 2.1, 1.4) -> (3, 2, 1) and the one left to the largest
    remainder, class 0; 1 * (.5, .3, .2) -> class 0."""
    labels = class_labels(num, COUNTS, seed=4)
    assert labels.dtype == torch.int64 and labels.shape == (num,)
    assert torch.bincount(labels, minlength=3).tolist() == expected
    assert torch.equal(labels, class_labels(num, COUNTS, seed=4))  # deterministic


def test_class_labels_are_shuffled_by_their_own_stream():
    labels = class_labels(100, COUNTS, seed=0)
    assert not torch.equal(labels, labels.sort().values)  # shuffled, not class by class
    assert not torch.equal(labels, class_labels(100, COUNTS, seed=1))
    before = torch.get_rng_state()
    class_labels(100, COUNTS, seed=0)
    assert torch.equal(torch.get_rng_state(), before)  # a CPU generator of its own, never the global one
    assert torch.equal(latent_noise(3, 4, seed=0), latent_noise(3, 4, seed=0))
    with pytest.raises(ValueError):
        class_labels(4, (0, 0), seed=0)


@pytest.mark.parametrize("world", [2, 3])
def test_rank_blocks_of_labels_and_samples_join_to_the_one_process_run(monkeypatch, world):
    loaded = _conditional()
    whole_labels = shard_labels(loaded, 23, seed=2, batch_size=4)
    whole = generate_shard(loaded, 23, seed=2, batch_size=4)
    assert torch.equal(whole_labels, class_labels(23, COUNTS, seed=2))
    assert torch.equal(whole, generate(loaded, 23, seed=2, batch_size=4))
    labels, images = [], []
    for rank in range(world):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        monkeypatch.setattr(distributed, "world_size", lambda: world)
        labels.append(shard_labels(loaded, 23, seed=2, batch_size=4))
        images.append(generate_shard(loaded, 23, seed=2, batch_size=4))
    assert torch.equal(torch.cat(labels), whole_labels)
    assert torch.equal(torch.cat(images), whole)
    given = torch.arange(23) % 3
    assert torch.equal(shard_labels(loaded, 23, seed=2, labels=given, batch_size=4),
                       given[distributed.shard_range(23, 4).start:])  # the last rank's block


def test_conditional_samples_are_their_class_and_batch_independent():
    loaded = _conditional()
    labels = torch.tensor([2, 0, 1, 1, 2, 0, 0, 1, 2])
    reference = generate(loaded, 9, seed=3, batch_size=9, labels=labels)
    assert torch.equal(reference, _expected(latent_noise(9, 4, seed=3), labels))  # sample i: latent (3, i), label i
    for batch_size in (1, 3, 64):
        assert torch.equal(generate(loaded, 9, seed=3, batch_size=batch_size, labels=labels), reference)
    default = generate(loaded, 9, seed=3, batch_size=2)  # no labels: the training frequencies
    assert torch.equal(default, _expected(latent_noise(9, 4, seed=3), class_labels(9, COUNTS, seed=3)))
    assert torch.equal(generate(loaded, 4, seed=3, start=5, labels=labels[5:]), reference[5:])


def test_bad_labels_are_refused_in_one_line():
    loaded = _conditional()
    for labels, words in (([0, 3], r"\[0, 3\)"), ([0, -1], r"\[0, 3\)"), ([0], r"shape \(2,\)"),
                          (torch.zeros(2), "integers")):
        with pytest.raises(UsageError, match=words):
            generate(loaded, 2, seed=0, labels=labels)
    unconditional = _fake_generator(lambda z: torch.tanh(z[:, :4].reshape(-1, 1, 2, 2)))
    with pytest.raises(UsageError, match="unconditional"):
        generate(unconditional, 2, seed=0, labels=[0, 1])


def test_class_rows_share_the_noise_of_each_column():
    """Row r is class classes[r]; column j is sample j's latent in every row (exactly, from the known decode)."""
    loaded = _conditional()
    grid = class_rows(loaded, [2, 0, 1], columns=5, seed=6, batch_size=2)
    noise = latent_noise(5, 4, seed=6)
    for row, label in enumerate([2, 0, 1]):
        assert torch.equal(grid[row * 5:(row + 1) * 5], _expected(noise, torch.full((5,), label)))
    laid = make_grid(grid, nrow=5, padding=0)
    assert laid.shape == (3 * 2, 5 * 2, 1)
    with pytest.raises(UsageError, match="unconditional"):
        class_rows(_fake_generator(lambda z: z), [0], 2, seed=0)


def test_interpolation_keeps_one_class_along_a_row():
    loaded = _conditional()
    walk = interpolate(loaded, rows=4, steps=3, seed=1, classes=[2, 1], batch_size=5)
    ends = latent_noise(8, 4, seed=1)
    row_labels = torch.tensor([2, 1, 2, 1])
    assert torch.equal(walk[0::3], _expected(ends[0::2], row_labels))  # each row starts at sample 2r, its class
    assert torch.equal(walk[2::3], _expected(ends[1::2], row_labels))  # and ends at sample 2r+1, the same class
    every = interpolate(loaded, rows=4, steps=3, seed=1)  # no classes: every class in turn
    assert torch.equal(every[0::3], _expected(ends[0::2], torch.tensor([0, 1, 2, 0])))


def test_class_mixture_prior_maps_each_row_through_its_class_mixture():
    torch.manual_seed(0)
    mixtures = [GaussianMixturePrior(torch.rand(2) + 0.1, torch.randn(2, 4) * 3, torch.eye(4).repeat(2, 1, 1) * s)
                for s in (0.5, 1.0, 2.0)]
    prior = ClassMixturePrior(mixtures)
    eps, u, labels = torch.randn(7, 4), torch.rand(7), torch.tensor([0, 2, 1, 2, 0, 1, 1])
    z = prior(eps, u, labels)
    for i in range(7):
        assert torch.equal(z[i], mixtures[labels[i]](eps[i:i + 1], u[i:i + 1])[0])
    loaded = _conditional(prior, "gmm")
    reference = generate(loaded, 6, seed=2, batch_size=6, labels=[0, 1, 2, 2, 1, 0])
    assert torch.equal(generate(loaded, 6, seed=2, batch_size=1, labels=[0, 1, 2, 2, 1, 0]), reference)
    with pytest.raises(UsageError, match="--prior normal"):  # slerp walks N(0, I) latents
        interpolate(loaded, 2, 3, seed=0)


def test_classes_by_name_index_or_comma_list():
    names = ("airplane", "cat", "tench, Tinca tinca", "7")
    assert resolve_classes(["cat", "0", 1, "3,airplane", "tench, Tinca tinca"], names, "run") == [1, 0, 1, 3, 0, 2]
    assert resolve_classes(["7"], names, "run") == [3]  # a name first, then an index
    assert resolve_classes((), names, "run") == []
    with pytest.raises(UsageError, match=r"--class 'dog' is not a class of run: .*\[0, 4\): 0 \(airplane\), 1 "
                                         r"\(cat\)"):
        resolve_classes(["cat,dog"], names, "run")
    with pytest.raises(UsageError, match="--class 4 is not a class"):
        resolve_classes([4], names, "run")
    with pytest.raises(UsageError, match="--class needs a class-conditional run .*run is unconditional"):
        resolve_classes(["3"], (), "run")


def test_class_folders_keep_the_folder_readers_labels():
    digits = [str(k) for k in range(10)]
    assert class_folder_names(digits) == digits
    assert class_folder_names(["airplane", "bird", "cat"]) == ["airplane", "bird", "cat"]
    assert class_folder_names(["T-shirt/top", "Trouser", "..", "cat dog"]) == ["0-T-shirt_top", "1-Trouser",
                                                                               "2-class", "3-cat_dog"]
    assert class_folder_names(["pos", "neg"]) == ["0-pos", "1-neg"]  # sorted, the folders would swap the labels
    assert class_folder_names(["Cat", "cat"]) == ["0-Cat", "1-cat"]  # one folder on a case-insensitive disk
    names = class_folder_names([f"c{k}" for k in range(12)])  # "c10" sorts before "c2"
    assert names[:3] == ["00-c0", "01-c1", "02-c2"] and names == sorted(names)
