"""A memorization check: how close generated images are to their nearest training image, calibrated on real
held-out images.

FID rewards a generator that copies its training set: on a small set such as MNIST-5k (5000 images), the set
itself scores better than any honest generator. This module measures copying in the extractor's feature space.
Each generated image gets its nearest training image (Euclidean distance between features); so does each image of
a real held-out set that the generator never saw, which says how close a *fresh* real image typically lies to the
training set. The copy threshold is the `percentile`-th percentile (default 1 %) of the held-out images'
nearest-training distances, and the copy rate is the share of generated images closer to a training image than
that: a generator that draws new images from the data distribution scores about `percentile` %, one that copies
its training images close to 100 %. The median-distance ratio (median generated nearest distance / median held-out
nearest distance) summarises the whole distribution: below 1, generated images sit closer to the training set than
fresh real images do. The closest pairs (generated image, its nearest training image) are what to look at.

This is the nearest-training-neighbour check of the literature (generated samples shown beside their nearest
training images, as in Goodfellow et al. 2014, arXiv:1406.2661), calibrated on held-out data in the spirit of
Meehan et al. 2020, "A Non-Parametric Test to Detect Data-Copying in Generative Models" (AISTATS, arXiv:2004.05675),
whose three-sample test compares generated-to-training distances with held-out-to-training distances in an
embedding space, and of the authenticity component of Alaa et al. 2022, "How Faithful is your Synthetic Data?
Sample-level Metrics for Evaluating and Auditing Generative Models" (ICML, arXiv:2102.08921), which quantifies how
far a model copies its training data sample by sample. The rate here is a simple thresholded summary, not either
paper's statistic.

Distances are computed in float64 on `device` (the run's accelerator), `row_chunk` query rows at a time, so memory
is O(row_chunk x N) besides the features: 50,000 x 50,000 fits. Everything is deterministic: ties go to the lowest
training index, and the closest pairs are sorted by distance, then by generated index.
"""

from __future__ import annotations

import math
from typing import TypedDict

import torch
from torch import Tensor

from genvision.errors import UsageError

DEFAULT_PERCENTILE = 1.0  # the copy threshold: this percentile of held-out images' nearest-training distances
DEFAULT_PAIRS = 8  # closest (generated, training) pairs returned


class ClosestPair(TypedDict):
    generated: int  # row of the generated features
    training: int  # row of the training features: its nearest neighbour
    distance: float  # their Euclidean feature distance


class Memorization(TypedDict):
    copy_rate: float  # share of generated images with nearest-training distance < copy_threshold, in [0, 1]
    copy_threshold: float  # the copy_percentile-th percentile of held-out images' nearest-training distances
    copy_percentile: float  # in (0, 100)
    num_generated: int
    num_training: int
    num_held_out: int
    median_distance_generated: float  # median nearest-training distance of generated images
    median_distance_held_out: float  # likewise of held-out images
    distance_ratio: float  # median_distance_generated / median_distance_held_out (inf when the latter is 0)
    closest_pairs: list[ClosestPair]  # the generated images nearest to a training image, closest first


def _features(name: str, features: Tensor, device: torch.device | str | None) -> Tensor:
    """(N, D) features as float64 on `device` (default: where they are); refused if empty or not finite."""
    if features.ndim != 2:
        raise UsageError(f"{name} must have shape (N, D), got {tuple(features.shape)}")
    if features.shape[0] < 1:
        raise UsageError(f"{name} is empty")
    features = features.detach()
    if not torch.isfinite(features).all():
        raise UsageError(f"{name} contains NaN or inf")
    return features.to(features.device if device is None else device).to(torch.float64)


def nearest_neighbours(queries: Tensor, reference: Tensor, *, row_chunk: int = 1024,
                       device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """For each row of `queries` (M, D), its nearest row of `reference` (N, D) by Euclidean distance: (distances
    (M,) float64, indices (M,) int64), both on the CPU.

    Computed in float64 on `device` (default: the device of `queries`), `row_chunk` query rows at a time (memory
    O(row_chunk x N)). Candidates come from |a|² + |b|² - 2 aᵀb (one matrix product per block); of equal candidates
    the lowest reference index wins, and the distance returned is then recomputed as |a - b| of the chosen pair, so
    an exact copy is at distance 0 and the value does not depend on `row_chunk`.
    """
    if row_chunk < 1:
        raise UsageError(f"row_chunk must be >= 1, got {row_chunk}")
    a = _features("queries", queries, device)
    b = _features("reference", reference, a.device)
    if a.shape[1] != b.shape[1]:
        raise UsageError(f"feature sets must have the same dimension, got {tuple(a.shape)} and {tuple(b.shape)}")
    b_norms = (b * b).sum(dim=1)
    positions = torch.arange(b.shape[0], device=b.device)
    indices = torch.empty(a.shape[0], dtype=torch.int64, device=a.device)
    for start in range(0, a.shape[0], row_chunk):
        block = a[start : start + row_chunk]
        squared = (block * block).sum(dim=1, keepdim=True) + b_norms[None, :] - 2 * block @ b.T
        lowest = squared.min(dim=1, keepdim=True).values
        # The first index holding the minimum (argmin's choice among ties is not documented on every device).
        indices[start : start + row_chunk] = torch.where(squared == lowest, positions, b.shape[0]).min(dim=1).values
    distances = (a - b[indices]).norm(dim=1)
    return distances.cpu(), indices.cpu()


def percentile(values: Tensor, q: float) -> float:
    """The `q`-th percentile (0 <= q <= 100) of 1-D `values`, interpolated linearly between order statistics (as
    numpy.percentile's default): position q / 100 x (n - 1) of the sorted values."""
    if not 0 <= q <= 100:
        raise UsageError(f"percentile must be in [0, 100], got {q}")
    if values.ndim != 1 or values.numel() < 1:
        raise UsageError(f"percentile needs a non-empty 1-D tensor, got shape {tuple(values.shape)}")
    ordered = values.detach().to(torch.float64).cpu().sort().values
    position = q / 100 * (ordered.numel() - 1)
    low, high = math.floor(position), math.ceil(position)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def closest_pairs(distances: Tensor, indices: Tensor, count: int = DEFAULT_PAIRS) -> list[ClosestPair]:
    """The `count` queries nearest to their neighbour, closest first (equal distances: lowest query index first),
    as {"generated": query row, "training": its neighbour's row, "distance": their distance}."""
    if count < 0:
        raise UsageError(f"count must be >= 0, got {count}")
    order = torch.sort(distances.cpu(), stable=True).indices[:count]
    return [ClosestPair(generated=int(i), training=int(indices[i]), distance=float(distances[i])) for i in order]


def memorization(generated: Tensor, training: Tensor, held_out: Tensor, *,
                 copy_percentile: float = DEFAULT_PERCENTILE, num_pairs: int = DEFAULT_PAIRS,
                 row_chunk: int = 1024, device: torch.device | str | None = None) -> Memorization:
    """The memorization check of generated features (M, D) against training features (N, D), calibrated on
    held-out real features (H, D) that are not in the training set (see the module docstring).

    copy_threshold = the `copy_percentile`-th percentile of the held-out rows' nearest-training distances;
    copy_rate = share of generated rows whose nearest-training distance is strictly below it. Distances run on
    `device` (default: the device of `generated`), `row_chunk` rows at a time (`nearest_neighbours`).
    """
    if not 0 < copy_percentile < 100:
        raise UsageError(f"copy percentile must be in (0, 100), got {copy_percentile}")
    generated_distances, generated_indices = nearest_neighbours(generated, training, row_chunk=row_chunk,
                                                                device=device)
    held_out_distances, _ = nearest_neighbours(held_out, training, row_chunk=row_chunk, device=device)
    threshold = percentile(held_out_distances, copy_percentile)
    median_generated = percentile(generated_distances, 50.0)
    median_held_out = percentile(held_out_distances, 50.0)
    ratio = median_generated / median_held_out if median_held_out > 0 else math.inf
    return Memorization(
        copy_rate=float((generated_distances < threshold).to(torch.float64).mean()),
        copy_threshold=threshold,
        copy_percentile=float(copy_percentile),
        num_generated=int(generated.shape[0]),
        num_training=int(training.shape[0]),
        num_held_out=int(held_out.shape[0]),
        median_distance_generated=median_generated,
        median_distance_held_out=median_held_out,
        distance_ratio=ratio,
        closest_pairs=closest_pairs(generated_distances, generated_indices, num_pairs),
    )
