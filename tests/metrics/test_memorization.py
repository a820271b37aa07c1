"""`genvision.metrics.memorization` on hand-made points whose nearest neighbours, percentiles, copy rate and
closest pairs are known, on random points against a brute-force search (any row_chunk), and on sets drawn from one
distribution (copy rate near the calibration level) against copies of the training set (copy rate 1)."""

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from genvision.errors import UsageError
from genvision.metrics.memorization import closest_pairs, memorization, nearest_neighbours, percentile


def points(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_nearest_neighbours_of_hand_made_points():
    reference = points([0, 0], [10, 0], [0, 10], [10, 0])  # row 3 duplicates row 1
    queries = points([1, 0], [9, 1], [0, 7], [5, 5], [10, 0], [-3, -4])
    distances, indices = nearest_neighbours(queries, reference)
    # (5, 5) is sqrt(50) from rows 0, 1, 2 and 3: the lowest index wins; (10, 0) is an exact copy of rows 1 and 3.
    assert indices.tolist() == [0, 1, 2, 0, 1, 0]
    assert_close(distances, torch.tensor([1, math.sqrt(2), 3, math.sqrt(50), 0, 5], dtype=torch.float64))
    assert distances[4] == 0 and distances.dtype == torch.float64 and indices.dtype == torch.int64


@pytest.mark.parametrize("row_chunk", [1, 7, 64, 4096])
def test_nearest_neighbours_match_brute_force_for_any_row_chunk(row_chunk):
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(300, 16, generator=generator)
    queries = torch.cat([torch.randn(200, 16, generator=generator), reference[[5, 17, 299]]])  # 3 exact copies
    distances, indices = nearest_neighbours(queries, reference, row_chunk=row_chunk)
    brute = torch.cdist(queries.double(), reference.double(), compute_mode="donot_use_mm_for_euclid_dist")
    assert torch.equal(indices, brute.argmin(dim=1))
    assert_close(distances, brute.min(dim=1).values)
    assert indices[-3:].tolist() == [5, 17, 299] and distances[-3:].tolist() == [0, 0, 0]
    same = nearest_neighbours(queries, reference, row_chunk=1024)
    assert torch.equal(distances, same[0]) and torch.equal(indices, same[1])  # bit for bit, whatever the chunk


def test_percentile_is_numpys_linear_interpolation():
    assert percentile(torch.arange(101.0), 1.0) == pytest.approx(1.0)
    assert percentile(torch.tensor([4.0, 1.0, 3.0, 2.0]), 50) == pytest.approx(2.5)
    assert percentile(torch.tensor([7.0]), 1.0) == 7.0
    values = torch.randn(37, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for q in (0, 1, 12.5, 50, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values.numpy(), q)), abs=1e-15)


def test_memorization_of_hand_made_points():
    """Training points (0, 0) and (1000, 0); held-out points at distances 1, 2, ..., 101 from (0, 0), so the 1st
    percentile of their nearest-training distances is 2 (position 0.01 x 100 = 1 of the sorted values) and their
    median 51; generated points at distances 3, 0.5, 0 (a copy), 1.9, 2 and 50."""
    training = points([0, 0], [1000, 0])
    held_out = torch.stack([torch.tensor([float(d), 0.0]) for d in range(1, 102)]).double()
    generated = points([1000, 3], [0, 0.5], [1000, 0], [1.9, 0], [0, 2], [50, 0])
    result = memorization(generated, training, held_out, num_pairs=4)
    assert result["copy_threshold"] == pytest.approx(2.0)
    assert result["copy_rate"] == pytest.approx(3 / 6)  # 0.5, 0 and 1.9 are below 2; 2 itself is not
    assert result["copy_percentile"] == 1.0
    assert (result["num_generated"], result["num_training"], result["num_held_out"]) == (6, 2, 101)
    assert result["median_distance_held_out"] == pytest.approx(51.0)
    assert result["median_distance_generated"] == pytest.approx((1.9 + 2) / 2)
    assert result["distance_ratio"] == pytest.approx(1.95 / 51)
    pairs = result["closest_pairs"]
    assert [(pair["generated"], pair["training"]) for pair in pairs] == [(2, 1), (1, 0), (3, 0), (4, 0)]
    assert_close(torch.tensor([pair["distance"] for pair in pairs]), torch.tensor([0.0, 0.5, 1.9, 2.0]))
    assert set(result) == {"copy_rate", "copy_threshold", "copy_percentile", "num_generated", "num_training",
                           "num_held_out", "median_distance_generated", "median_distance_held_out",
                           "distance_ratio", "closest_pairs"}
    wider = memorization(generated, training, held_out, copy_percentile=50.0)
    assert wider["copy_threshold"] == pytest.approx(51.0) and wider["copy_rate"] == pytest.approx(6 / 6)
    assert len(wider["closest_pairs"]) == 6  # all of them: fewer generated rows than the 8 asked for


def test_closest_pairs_break_ties_by_lowest_generated_index():
    distances = torch.tensor([0.5, 0.2, 0.5, 0.2, 0.1], dtype=torch.float64)
    indices = torch.tensor([9, 8, 7, 6, 5])
    pairs = closest_pairs(distances, indices, 4)
    assert [(pair["generated"], pair["training"]) for pair in pairs] == [(4, 5), (1, 8), (3, 6), (0, 9)]
    assert closest_pairs(distances, indices, 0) == []


def test_copies_are_flagged_and_fresh_samples_are_at_the_calibration_level():
    """Training, held-out and fresh sets drawn from one Gaussian: about copy_percentile % of the fresh set falls
    below the threshold (binomial noise); copies of training rows all do, and lie at distance 0."""
    generator = torch.Generator().manual_seed(0)
    training, held_out, fresh = (torch.randn(2000, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    fresh_result = memorization(fresh, training, held_out, copy_percentile=10.0)
    assert 0.07 < fresh_result["copy_rate"] < 0.13
    assert 0.95 < fresh_result["distance_ratio"] < 1.05
    copies = memorization(training[:300], training, held_out, copy_percentile=10.0)
    assert copies["copy_rate"] == 1.0 and copies["distance_ratio"] == 0.0
    assert all(pair["distance"] == 0 and pair["training"] == pair["generated"] for pair in copies["closest_pairs"])


def test_runs_on_the_given_device_and_returns_cpu_tensors():
    features = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    distances, indices = nearest_neighbours(features, features, device="cpu")
    assert distances.device.type == indices.device.type == "cpu"
    assert indices.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("case, message", [
    ("dimension", "same dimension"), ("nan", "NaN or inf"), ("empty", "is empty"), ("shape", "shape (N, D)"),
    ("chunk", "row_chunk must be >= 1"), ("percentile", "copy percentile must be in (0, 100)"),
])
def test_bad_input_is_a_usage_error(case, message):
    good = torch.zeros(4, 2)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        if case == "dimension":
            nearest_neighbours(good, torch.zeros(4, 3))
        elif case == "nan":
            nearest_neighbours(good, torch.full((4, 2), math.nan))
        elif case == "empty":
            nearest_neighbours(torch.zeros(0, 2), good)
        elif case == "shape":
            nearest_neighbours(torch.zeros(4), good)
        elif case == "chunk":
            nearest_neighbours(good, good, row_chunk=0)
        else:
            memorization(good, good, good, copy_percentile=100.0)
