"""Streaming feature statistics, the Fréchet distance behind FID, and its bootstrap interval.

FID (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium",
arXiv:1706.08500) is the Fréchet (2-Wasserstein) distance between Gaussians fitted to two sets of feature vectors:

    d² = ||mu1 - mu2||² + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^{1/2})      (Dowson & Landau 1982)

- `FeatureStats`: count, sum of x and sum of x xᵀ in float64, so batches, shards and processes combine by addition.
- `frechet_distance`: pytorch-fid's `calculate_frechet_distance`, square root by symmetric eigendecompositions.
- `FrechetReference`: fixed reference statistics whose matrix square root is computed once, in float64 on a chosen
  device (training FID's and the report's reference): each distance to it is then one symmetric eigendecomposition.
- `bootstrap_fid`, `percentile_interval`: the report's 95% interval (Efron 1979; percentile interval of Efron &
  Tibshirani 1993), resampling the generated features against fixed reference statistics (`weighted_fid`).
- `fd_infinity`, `fd_infinity_sizes`: FID extrapolated to infinitely many generated samples by a linear fit in 1/N
  (Chong & Forsyth 2020), against the same fixed reference statistics.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from genvision.constants import SEED_STRIDE
from genvision.errors import UsageError

ArrayLike = Tensor | np.ndarray


class FeatureStats:
    """Running count, sum and sum of outer products of (N, D) feature batches, in float64.

    The accumulators live on one device: the `device` given, else the device of the first batch (features from
    later batches are moved there). With `keep_features=True` the raw feature vectors are kept too (KID and
    precision/recall need them), as float64 if they arrive as float64, else float32.

    In multi-process runs pass ``device=accelerator.device``: a rank that sees no batch must still hold its
    (zero) sums on the device the collective in `reduce_across_processes` runs on.
    """

    def __init__(
        self, num_features: int, *, keep_features: bool = False, device: torch.device | str | None = None
    ) -> None:
        if num_features < 1:
            raise UsageError(f"num_features must be >= 1, got {num_features}")
        self.num_features = num_features
        self.keep_features = keep_features
        self._device_fixed = device is not None
        device = torch.device(device) if device is not None else torch.device("cpu")
        self._count = torch.zeros((), dtype=torch.int64, device=device)
        self._sum = torch.zeros(num_features, dtype=torch.float64, device=device)
        self._sum_outer = torch.zeros(num_features, num_features, dtype=torch.float64, device=device)
        self._kept: list[Tensor] = []
        self._reduced = False

    @property
    def device(self) -> torch.device:
        return self._sum.device

    @property
    def count(self) -> int:
        return int(self._count.item())

    def _move(self, device: torch.device) -> None:
        self._count, self._sum, self._sum_outer = (t.to(device) for t in (self._count, self._sum, self._sum_outer))
        self._kept = [t.to(device) for t in self._kept]

    def update(self, features: Tensor) -> None:
        """Add a batch of feature vectors, shape (N, D) (any float dtype; N may be 0)."""
        if self._reduced:
            raise RuntimeError("FeatureStats.update after reduce_across_processes: the sums are already global")
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise UsageError(
                f"features must have shape (N, {self.num_features}), got {tuple(features.shape)}"
            )
        if not self._device_fixed:
            self._move(features.device)
            self._device_fixed = True
        x = features.detach().to(self.device, torch.float64)
        self._count += x.shape[0]
        self._sum += x.sum(dim=0)
        self._sum_outer += x.T @ x
        if self.keep_features:
            keep_dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
            self._kept.append(features.detach().to(self.device, keep_dtype))

    def merge(self, other: FeatureStats) -> None:
        """Add another accumulator's statistics (e.g. another shard of the same data set) into this one."""
        if other.num_features != self.num_features:
            raise UsageError(f"cannot merge FeatureStats of {other.num_features} features into {self.num_features}")
        if not self._device_fixed and other._device_fixed:
            self._move(other.device)
            self._device_fixed = True
        self._count += other._count.to(self.device)
        self._sum += other._sum.to(self.device)
        self._sum_outer += other._sum_outer.to(self.device)
        if self.keep_features:
            if not other.keep_features:
                raise ValueError("cannot merge FeatureStats(keep_features=False) into one that keeps features")
            self._kept.extend(t.to(self.device) for t in other._kept)

    def reduce_across_processes(
        self,
        reduce_sum: Callable[[Tensor], Tensor],
        *,
        gather: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        """Replace the local sums by their sum over all processes; call once, after the last `update`.

        `reduce_sum(t)` must return the element-wise sum of `t` over processes, e.g.
        ``lambda t: accelerator.reduce(t, "sum")``; every process must call this (it is a collective). With
        `keep_features=True` pass `gather` too (concatenation along dim 0 over processes, e.g.
        ``accelerator.gather_for_metrics``), otherwise the kept raw features would silently stay local.
        """
        if self._reduced:
            raise RuntimeError("FeatureStats.reduce_across_processes called twice: the sums would be double-counted")
        if self.keep_features and gather is None:
            raise ValueError("FeatureStats(keep_features=True).reduce_across_processes needs gather=")
        self._count = reduce_sum(self._count)
        self._sum = reduce_sum(self._sum)
        self._sum_outer = reduce_sum(self._sum_outer)
        if self.keep_features:
            assert gather is not None
            self._kept = [gather(self.features())]
        self._reduced = True

    def features(self) -> Tensor:
        """The kept raw feature vectors, concatenated: (N, D)."""
        if not self.keep_features:
            raise ValueError("FeatureStats(keep_features=False) does not keep the raw features")
        if not self._kept:
            return torch.zeros(0, self.num_features, device=self.device)
        if len(self._kept) > 1:
            self._kept = [torch.cat(self._kept)]
        return self._kept[0]

    def _check_finite(self) -> None:
        # Checked here rather than per batch: one host sync instead of one per `update`.
        if not (torch.isfinite(self._sum).all() and torch.isfinite(self._sum_outer).all()):
            raise UsageError(
                f"features contain NaN or inf ({self.count} samples accumulated); "
                "the images or the feature extractor produced non-finite values"
            )

    def mean(self) -> Tensor:
        """Sample mean, float64 (D,), on `self.device`."""
        n = self.count
        if n < 1:
            raise UsageError("need at least 1 sample to estimate a mean, got 0")
        self._check_finite()
        return self._sum / n

    def covariance(self) -> Tensor:
        """Unbiased sample covariance (divides by N - 1, like `numpy.cov` and pytorch-fid), float64 (D, D)."""
        n = self.count
        if n < 2:
            raise UsageError(f"need at least 2 samples to estimate a covariance, got {n}")
        mu = self.mean()
        # (Σ x xᵀ - N μ μᵀ) / (N - 1). Raw moments cancel catastrophically only when |μ| dwarfs the spread by
        # ~1e6 or more; float64 accumulation leaves ample margin for network features (|μ| ~ σ).
        cov = (self._sum_outer - n * torch.outer(mu, mu)) / (n - 1)
        # x.T @ x is symmetric in exact arithmetic only; symmetrize so later eigh calls see a symmetric matrix.
        return (cov + cov.T) / 2

    def mean_and_covariance(self) -> tuple[Tensor, Tensor]:
        """(mean (D,), covariance (D, D)), float64 on `self.device`."""
        return self.mean(), self.covariance()


def _as_float64(name: str, value: ArrayLike, device: torch.device | str = "cpu") -> Tensor:
    """`value` as a float64 tensor on `device`, refused (checked where it is) if not finite."""
    t = value.detach() if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value), device="cpu")
    if not torch.isfinite(t).all():
        raise UsageError(f"FID input {name} contains NaN or inf; the statistics were computed from non-finite features")
    return t.to(device, torch.float64)


def _sqrt_psd(matrix: Tensor) -> Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix."""
    eigvals, eigvecs = torch.linalg.eigh(matrix)
    # A covariance is PSD, but rounding leaves eigenvalues like -1e-13 where the true value is 0 (rank-deficient
    # covariance: fewer samples than dimensions). Clamp them to 0 instead of taking sqrt of a negative.
    return (eigvecs * eigvals.clamp_min(0).sqrt()) @ eigvecs.T


def _check_shapes(m1: Tensor, s1: Tensor, m2: Tensor, s2: Tensor) -> None:
    if m1.ndim != 1 or m2.shape != m1.shape:
        raise UsageError(f"FID means must both have shape (D,), got {tuple(m1.shape)} and {tuple(m2.shape)}")
    d = m1.shape[0]
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise UsageError(
            f"FID covariances must both have shape ({d}, {d}) to match the means, "
            f"got {tuple(s1.shape)} and {tuple(s2.shape)}"
        )


def _trace_sqrt(root: Tensor, sigma: Tensor) -> Tensor:
    """Tr((root² sigma)^{1/2}) = Σ sqrt(eigenvalues of the symmetric PSD matrix root · sigma · root)."""
    middle = root @ sigma @ root
    middle = (middle + middle.T) / 2
    return torch.linalg.eigvalsh(middle).clamp_min(0).sqrt().sum()


def _distance(squared_mean_difference: Tensor, trace1: Tensor, trace2: Tensor, trace_sqrt: Tensor) -> float:
    fid = float(squared_mean_difference + trace1 + trace2 - 2 * trace_sqrt)
    if not np.isfinite(fid):
        raise UsageError(f"FID is not finite ({fid}); the feature statistics overflow float64")
    # FID is a squared distance; identical statistics give -1e-12-ish after cancellation, report those as 0.
    return max(fid, 0.0)


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), computed in float64 on the CPU.

    Accepts numpy arrays or tensors: mu (D,), sigma (D, D). Raises `UsageError` for mismatched shapes, non-finite
    inputs or a non-finite result. Against fixed reference statistics, or on an accelerator, `FrechetReference`.
    """
    m1, s1, m2, s2 = (_as_float64(n, v) for n, v in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)))
    _check_shapes(m1, s1, m2, s2)
    s1 = (s1 + s1.T) / 2
    s2 = (s2 + s2.T) / 2
    # Tr((σ1 σ2)^{1/2}). pytorch-fid takes scipy.linalg.sqrtm of the non-symmetric product σ1 σ2; for near-singular
    # covariances that can return NaN/complex values and needs an ad-hoc diagonal offset. Instead use the similar
    # matrix  √σ1 σ2 √σ1 = √σ1 (σ1 σ2) √σ1⁻¹: it has the same eigenvalues as σ1 σ2, but it is symmetric PSD, so
    # `eigh` is stable and its eigenvalues are real and >= 0 up to rounding (clamped to 0; the identity holds by
    # continuity when σ1 is singular). Tr of the square root = Σ sqrt(eigenvalues). torch-fidelity and torchmetrics
    # likewise work from eigenvalues instead of sqrtm.
    tr_covmean = _trace_sqrt(_sqrt_psd(s1), s2)
    diff = m1 - m2
    return _distance(diff @ diff, torch.trace(s1), torch.trace(s2), tr_covmean)


class FrechetReference:
    """Fixed reference statistics N(mu, sigma), with sigma's symmetric square root R computed once, in float64 on
    `device`: `distance(mu, sigma)` is `frechet_distance(mu, sigma, reference mu, reference sigma)` with one
    symmetric eigendecomposition (of R sigma R) instead of two.

    R sigma R = (√sigma R)ᵀ (√sigma R) and √sigma sigma_ref √sigma = (√sigma R)(√sigma R)ᵀ have the same non-zero
    eigenvalues (those of sigma sigma_ref), so the two agree up to rounding, singular covariances included (a
    rank-deficient reference: R is the square root of its eigenvalues clamped at 0).
    """

    def __init__(self, mu: ArrayLike, sigma: ArrayLike, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.mu = _as_float64("reference mu", mu, self.device)
        sigma_ = _as_float64("reference sigma", sigma, self.device)
        _check_shapes(self.mu, sigma_, self.mu, sigma_)
        self.sigma = (sigma_ + sigma_.T) / 2
        self.root = _sqrt_psd(self.sigma)
        self.trace = torch.trace(self.sigma)

    def distance(self, mu: ArrayLike, sigma: ArrayLike) -> float:
        """Fréchet distance between N(mu, sigma) (numpy arrays or tensors, any device) and the reference."""
        m1, s1 = _as_float64("mu", mu, self.device), _as_float64("sigma", sigma, self.device)
        _check_shapes(m1, s1, self.mu, self.sigma)
        s1 = (s1 + s1.T) / 2
        diff = m1 - self.mu
        return _distance(diff @ diff, torch.trace(s1), self.trace, _trace_sqrt(self.root, s1))


@contextmanager
def ieee_float32_matmul() -> Iterator[None]:
    """float32 matmuls in full IEEE precision for the duration of the block, whatever the run set (training turns
    TF32 on for CUDA: its 10-bit mantissa would move FIDs computed from float32 products); then restored."""
    previous = torch.get_float32_matmul_precision()
    if previous != "highest":
        torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        if torch.get_float32_matmul_precision() != previous:
            torch.set_float32_matmul_precision(previous)


@contextmanager
def limited_torch_threads(threads: int) -> Iterator[None]:
    """Set torch's intra-op thread count for the duration of the block, then restore it."""
    previous = torch.get_num_threads()
    if threads != previous:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------------------------
# Bootstrap interval of FID (the report's final metrics).


def weighted_fid(features: torch.Tensor, weights: torch.Tensor, reference_mu: ArrayLike,
                 reference_sigma: ArrayLike, *, device: torch.device | str | None = None) -> torch.Tensor:
    """(B,) FIDs of B reweightings of `features` (N, D) against fixed reference statistics, computed on `device`
    (default: the features' device) and returned there.

    Row b of `weights` (B, N) holds how often each feature vector is drawn (a bootstrap resample: non-negative
    counts summing to N); all ones gives the plain FID of `features` (`stats.frechet_distance`, same formula:
    Tr((S_ref^1/2 S S_ref^1/2)^1/2) from eigenvalues).

    With c_i the centred features, o the resample's mean offset and R = S_ref^1/2, the resample's covariance is
    S = Z^T Z / (N - 1) for the rows z_i = sqrt(w_i) (c_i - o), so R S R = (Z R)^T (Z R) / (N - 1): its non-zero
    eigenvalues are those of the N x N Gram matrix (Z R)(Z R)^T / (N - 1). The smaller of the two matrices is
    decomposed (N x N for 16 Inception samples instead of 2048 x 2048), C R is computed once for every resample,
    and Tr(S) comes from the row norms; the D x D products run in float32 (IEEE, never TF32), everything else in
    float64.
    """
    reference = FrechetReference(reference_mu, reference_sigma, features.device if device is None else device)
    return _weighted_fid(features, weights, reference)


def _weighted_fid(features: torch.Tensor, weights: torch.Tensor, reference: FrechetReference) -> torch.Tensor:
    """`weighted_fid` against a reference whose square root is already computed, on the reference's device."""
    x = features.detach().to(reference.device).to(torch.float64)
    n, dim = x.shape
    centre = x.mean(0)
    centred = x - centre
    mu_ref, root_ref = reference.mu, reference.root
    weights = weights.to(reference.device).to(torch.float64)
    projected = centred @ root_ref  # (N, D): C R, shared by every resample
    offsets = weights @ centred / n  # (B, D): resample mean - centre
    projected_offsets = offsets @ root_ref  # (B, D): o R
    trace_covariance = (weights @ (centred ** 2).sum(1) - n * (offsets ** 2).sum(1)) / (n - 1)
    projected32 = projected.float() if n >= dim else projected
    trace_sqrt = []
    # One eigvalsh per matrix: with 2 threads the batched call nests MKL threads inside ATen's and took minutes on
    # busy cores for 200 matrices of 128 x 128.
    with ieee_float32_matmul():
        for row, offset in zip(weights, projected_offsets):
            if n < dim:  # small: float64 throughout
                rows = (projected - offset) * row.sqrt()[:, None]  # Z R
                matrix = rows @ rows.T / (n - 1)
            else:
                second = (projected32 * row.float()[:, None]).T @ projected32  # (C R)^T W (C R)
                matrix = (second.double() - n * offset[:, None] * offset[None, :]) / (n - 1)
            matrix = (matrix + matrix.T) / 2
            trace_sqrt.append(torch.linalg.eigvalsh(matrix).clamp_min(0).sqrt().sum())
    difference = centre + offsets - mu_ref
    fid = (difference ** 2).sum(-1) + trace_covariance + reference.trace - 2 * torch.stack(trace_sqrt)
    return fid.clamp_min(0)


def bootstrap_fid(features: torch.Tensor, reference_mu: ArrayLike, reference_sigma: ArrayLike,
                  num_resamples: int = 200, seed: int = 0, chunk: int = 50,
                  indices: range | None = None, *, device: torch.device | str | None = None) -> torch.Tensor:
    """FIDs of resamples with replacement of `features`, one per index of `indices` (default: all
    `num_resamples`), as a float64 CPU tensor. Resample i draws its rows from its own generator, seeded by (seed, i),
    so it is the same whichever block of indices computes it: under torchrun each rank takes a block
    (`distributed.shard_range`) and the blocks, gathered in rank order, are the one-process replicates. The draws
    are made on the CPU; the FIDs are computed on `device` (default: the features' device), the reference's square
    root once for all of them."""
    indices = range(num_resamples) if indices is None else indices
    n = features.shape[0]
    device = features.device if device is None else torch.device(device)
    features = features.detach().to(device)
    out = []
    # Hundreds of small eigendecompositions gain nothing from threads, and on busy cores MKL's threads and the
    # OpenMP team of the matmuls before them spin against each other (measured: 0.7 s on one thread, 20+ s on two).
    with limited_torch_threads(1):
        reference = FrechetReference(reference_mu, reference_sigma, device)
        for first in range(0, len(indices), chunk):
            block = indices[first:first + chunk]
            draws = torch.stack([torch.randint(0, n, (n,), generator=torch.Generator().manual_seed(
                seed * SEED_STRIDE + index), device="cpu") for index in block])  # (count, n) row indices
            weights = torch.zeros(len(block), n, device="cpu").scatter_add_(
                1, draws, torch.ones(len(block), n, device="cpu"))
            out.append(_weighted_fid(features, weights, reference).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64, device="cpu")


def percentile_interval(values: torch.Tensor, level: float = 0.95) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap replicates."""
    tail = (1 - level) / 2
    low, high = torch.quantile(values.double(), torch.tensor([tail, 1 - tail], dtype=torch.float64,
                                                             device=values.device))
    return float(low), float(high)


def block_frechet_distances(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike,
                            blocks: Sequence[tuple[str, int]]) -> dict[str, float]:
    """The Fréchet distance of each feature block on its own: {name: FD of its columns}, `blocks` being (name,
    width) in column order (an extractor's `feature_blocks`, covering all D columns); {} for a single block, whose
    distance is the FID itself: nothing to take apart.

    Each block's distance uses its own rows and columns of mu and sigma, so their sum is the Fréchet distance with
    the cross-block covariances set to 0 (the block-diagonal formula: the mean term splits by columns, the trace
    terms by diagonal blocks, and the square root of a block-diagonal product is taken block by block). The full
    FID also counts how the blocks covary, so the sum differs from it by that share.
    """
    named = (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2))
    m1, s1, m2, s2 = (_as_float64(name, value) for name, value in named)
    widths = [width for _, width in blocks]
    if sum(widths) != m1.shape[0] or min(widths, default=0) < 1:
        raise UsageError(f"feature blocks {list(blocks)} do not cover the {m1.shape[0]} feature columns")
    if len(blocks) < 2:
        return {}
    distances, start = {}, 0
    for name, width in blocks:
        part = slice(start, start + width)
        distances[name] = frechet_distance(m1[part], s1[part, part], m2[part], s2[part, part])
        start += width
    return distances


# ---------------------------------------------------------------------------------------------------------------
# FD-infinity: FID extrapolated to N -> infinity (Chong & Forsyth 2020).


@dataclass(frozen=True)
class FdInfinity:
    """The fit FID_N = value + slope / N and the points it was fitted to."""

    value: float  # the intercept: FID extrapolated to N -> infinity
    slope: float  # b of b / N: the bias of FID at N samples is about slope / N
    points: tuple[tuple[int, float], ...]  # (N, FID_N) at each size, smallest N first


def fd_infinity_sizes(num_samples: int, num_features: int, num_points: int = 15, min_samples: int = 0) -> list[int]:
    """The sample sizes FD-infinity evaluates FID at: `num_points` evenly spaced in N from N_min to `num_samples`
    (all of them), rounded down as the paper's code does, duplicates dropped; smallest first.

    N_min is `min_samples` when given (>= 2), else max(num_samples // 10, 2 * num_features). The paper goes from 5000
    to 50000 Inception samples, hence N // 10. The floor keeps every subset's covariance well conditioned: below D
    samples it is singular, and the 1/N expansion behind the fit holds only for N well above D (the paper's 5000 is
    2.4 x its 2048 features), hence 2 x D. With 5000 Inception samples that leaves 4096..5000: a short lever arm,
    but an honest one. Near D the O(1/N²) terms still show: on two identical isotropic Gaussians in 128 dimensions
    (FD 0) the fit over 256..312 samples gave -1.0 where FID_312 is 14.6, over 312..3125 (the paper's ratios) -0.13
    where FID_3125 is 1.37 (means of 5 draws): it undershoots by about a tenth of FID_N's bias, a line fitted to a
    curve convex in 1/N. A UsageError when fewer than 2 distinct sizes remain.
    """
    if num_points < 2:
        raise UsageError(f"FD-infinity needs at least 2 points for its fit, got {num_points}")
    if min_samples:
        if not 2 <= min_samples < num_samples:
            raise UsageError(f"FD-infinity's smallest subset (--fd-infinity-min-samples) must be >= 2 and below the "
                             f"{num_samples} samples, got {min_samples}")
        smallest, rule = min_samples, f"--fd-infinity-min-samples {min_samples}"
    else:
        smallest = max(num_samples // 10, 2 * num_features)
        rule = f"N_min = max(N // 10, 2 x {num_features} features) = {smallest}"
    sizes = sorted({int(size) for size in np.floor(np.linspace(smallest, num_samples, num_points))})
    if len(sizes) < 2 or smallest >= num_samples:
        raise UsageError(f"FD-infinity needs at least 2 sample sizes from {rule} to the {num_samples} samples; give "
                         f"more than {smallest} samples")
    return sizes


def fd_infinity(features: Tensor, reference: FrechetReference, sizes: Sequence[int], seed: int = 0,
                device: torch.device | str | None = None) -> FdInfinity:
    """FD-infinity (Chong & Forsyth 2020, "Effectively Unbiased FID and Inception Score and where to find them",
    arXiv:1911.07023): FID is biased upwards in 1/N, E[FID_N] = FID_inf + b / N + O(1/N²), with b depending on the
    generator. For each N of `sizes` (`fd_infinity_sizes`), smallest first, FID_N of the first N rows of a fresh
    random permutation of `features` (N_total, D) against the fixed `reference` statistics; then the least-squares
    line through (1/N, FID_N), whose intercept (1/N = 0) is FD-infinity: the FID of infinitely many samples,
    comparable across sample counts, where plain FID favours whoever drew more. Only the generated side is
    subsampled, as in the paper's code; the reference statistics (and their square root, computed once) stay whole.

    The permutations come from one CPU `torch.Generator` seeded `seed`, one after another, so the result is the same
    on every rank and every run; the covariances (N - 1 normalised, as `FeatureStats`) and distances are float64 on
    `device` (default: the reference's). The intercept is an extrapolation: it may fall slightly below 0 when the
    two distributions match. Returns the intercept, the slope and the fit's points (N, FID_N).
    """
    total = features.shape[0]
    sizes = sorted(int(size) for size in sizes)
    if len(set(sizes)) < 2 or min(sizes) < 2 or max(sizes) > total:
        raise UsageError(f"FD-infinity needs at least 2 distinct sample sizes in [2, {total}], got {sizes}")
    device = reference.device if device is None else torch.device(device)
    x = _as_float64("features", features, device)
    generator = torch.Generator().manual_seed(seed)
    points = []
    for size in sizes:
        rows = torch.randperm(total, generator=generator)[:size].to(device)
        subset = x[rows]
        mean = subset.mean(0)
        centred = subset - mean
        points.append((size, reference.distance(mean, centred.T @ centred / (size - 1))))
    inverse = np.array([1.0 / size for size, _ in points])
    values = np.array([value for _, value in points])
    spread = inverse - inverse.mean()
    slope = float(spread @ (values - values.mean()) / (spread @ spread))
    return FdInfinity(float(values.mean() - slope * inverse.mean()), slope, tuple(points))
