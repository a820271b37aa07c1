"""Sample-quality scores computed from raw feature vectors or classifier logits.

- `kernel_inception_distance`: KID, Bińkowski et al. 2018, "Demystifying MMD GANs" (arXiv:1801.01401): unbiased
  MMD² with the polynomial kernel k(x, y) = (xᵀy / d + 1)³, averaged over random subsets.
- `classifier_score`: the Inception Score formula exp(E_x KL(p(y|x) || p(y))), Salimans et al. 2016, "Improved
  Techniques for Training GANs" (arXiv:1606.03498), applied to any classifier's logits; `shuffled_classifier_score`
  (rows shuffled with a fixed seed first) is the one `genvision fid` and the report print.
- `manifold_scores`: improved precision and recall, Kynkäänniemi et al. 2019, "Improved Precision and Recall
  Metric for Assessing Generative Models" (arXiv:1904.06991), and density and coverage, Naeem et al. 2020,
  "Reliable Fidelity and Diversity Metrics for Generative Models" (arXiv:2002.09797), all four from the same k-NN
  radii. With real features X_1..X_N, fake features Y_1..Y_M, B(x, r) the ball of radius r around x and NND_k(x)
  the distance from x to its k-th nearest neighbour in its own set (itself excluded):
    precision = 1/M Σ_j 1[∃i: Y_j ∈ B(X_i, NND_k(X_i))]   (fidelity: fakes inside the real manifold)
    recall    = 1/N Σ_i 1[∃j: X_i ∈ B(Y_j, NND_k(Y_j))]   (diversity: reals inside the fake manifold)
    density   = 1/(kM) Σ_j Σ_i 1[Y_j ∈ B(X_i, NND_k(X_i))]   (fidelity, counting balls: robust to real outliers)
    coverage  = 1/N Σ_i 1[∃j: Y_j ∈ B(X_i, NND_k(X_i))]   (diversity from the real side: robust to fake outliers)
  Each pair keeps its authors' reference code: closed balls (<=) for precision and recall, open balls (<) for
  density and coverage (Naeem et al.'s `prdc`), so identical sets give density exactly 1 (each real ball holds its
  centre and its k - 1 nearer neighbours) and coverage 1. For independent samples of one distribution density is 1
  in expectation and coverage 1 - Π_{i=1..k} (N - i) / (N + M - i) (Naeem et al., Lemma 2: ~0.875 at k = 3, M = N);
  density can exceed 1, up to N / k (fakes crowded where real balls overlap). A real sample with k exact
  duplicates has radius 0 and an empty open ball. `precision_recall` returns the first two.
- `class_coverage`: how many classes a generator produces, and KL between its predicted-class histogram and a
  reference set's (in the spirit of the mode-count metrics of Srivastava et al. 2017, VEEGAN, arXiv:1705.07761).

Every function computes in float64 and returns Python floats. KID and the manifold scores run on `device` when given
(the run's accelerator: the reference split's k-NN radii are N x N distances), else on the device of their first
input, in row blocks so memory stays O(row_chunk x N).
"""

from __future__ import annotations

import math
from typing import TypedDict

import torch
from torch import Tensor

from genvision.errors import UsageError


def _check_features(name: str, features: Tensor, device: torch.device | str | None = None) -> Tensor:
    """`features` (N, D) as float64 on `device` (default: where they are), refused (checked where they are) if not
    finite. Moved first, converted there: a float32 CPU set is never doubled in host memory."""
    if features.ndim != 2:
        raise UsageError(f"{name} must have shape (N, D), got {tuple(features.shape)}")
    features = features.detach()
    if not torch.isfinite(features).all():
        raise UsageError(f"{name} contains NaN or inf")
    return features.to(features.device if device is None else device).to(torch.float64)


def _check_same_dim(a: Tensor, b: Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise UsageError(f"feature sets must have the same dimension, got {tuple(a.shape)} and {tuple(b.shape)}")


def _poly_mmd2(x: Tensor, y: Tensor) -> Tensor:
    """Unbiased MMD² between equal-size samples x, y (m, d) with k(a, b) = (aᵀb / d + 1)³."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    # Unbiased: the within-set sums drop the diagonal k(x_i, x_i) and divide by m(m-1); the cross term keeps all
    # m² pairs (the estimator of Bińkowski et al.'s reference code and torchmetrics).
    sum_xx = k_xx.sum() - k_xx.diagonal().sum()
    sum_yy = k_yy.sum() - k_yy.diagonal().sum()
    return (sum_xx + sum_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m)


def kernel_inception_distance(
    features_a: Tensor,
    features_b: Tensor,
    num_subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
) -> tuple[float, float]:
    """KID between two feature sets (N_a, D) and (N_b, D): (mean, std) of MMD² over `num_subsets` random subsets,
    computed on `device` (default: the device of `features_a`).

    Each subset draws `subset_size` rows of each set without replacement (`subset_size` is clipped to
    min(N_a, N_b)); the std is the population std over subsets, as in the reference code. Subsets come from
    `generator` (a CPU generator); when it is None a fresh one seeded with 0 is used, so the same features always
    give the same KID. Draw order (a then b, per subset) matches torchmetrics' `KernelInceptionDistance`.
    The estimator is unbiased for independent samples; scoring a set against itself, the subsets share samples
    and the mean comes out slightly negative.
    """
    a = _check_features("features_a", features_a, device)
    b = _check_features("features_b", features_b, a.device)
    _check_same_dim(a, b)
    if num_subsets < 1:
        raise UsageError(f"num_subsets must be >= 1, got {num_subsets}")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise UsageError(
            f"KID needs subsets of at least 2 samples, got subset_size={subset_size} with "
            f"{a.shape[0]} and {b.shape[0]} samples"
        )
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    scores = torch.empty(num_subsets, dtype=torch.float64, device=a.device)
    for i in range(num_subsets):  # subsets drawn on the CPU (the generator's stream), scored on the device, no sync
        idx_a = torch.randperm(a.shape[0], generator=generator, device="cpu")[:m].to(a.device)
        idx_b = torch.randperm(b.shape[0], generator=generator, device="cpu")[:m].to(b.device)
        scores[i] = _poly_mmd2(a[idx_a], b[idx_b])
    return float(scores.mean()), float(scores.std(correction=0))


def classifier_score(logits: Tensor, num_splits: int = 10) -> tuple[float, float]:
    """Inception-Score formula on (N, C) logits: (mean, population std) of exp(E_x KL(p(y|x) || p(y))) over splits.

    Splits are contiguous, with the boundaries i·N // num_splits of the reference implementation; `num_splits` is
    clipped to N. Ranges from 1 (every sample gets the same prediction) to C (confident and uniform over classes).
    """
    if logits.ndim != 2 or logits.shape[0] < 1 or logits.shape[1] < 1:
        raise UsageError(f"logits must have shape (N, C) with N, C >= 1, got {tuple(logits.shape)}")
    if num_splits < 1:
        raise UsageError(f"num_splits must be >= 1, got {num_splits}")
    logits = logits.detach().to(torch.float64)
    if not torch.isfinite(logits).all():
        raise UsageError("logits contain NaN or inf")
    # log_softmax instead of log(softmax(...)): confident predictions underflow p to 0 and log(0) = -inf.
    log_p = torch.log_softmax(logits, dim=1)
    n = logits.shape[0]
    splits = min(num_splits, n)
    scores = []
    for i in range(splits):
        part = log_p[i * n // splits : (i + 1) * n // splits]
        # log of the marginal p(y) = mean over x of p(y|x), computed in log space.
        log_marginal = torch.logsumexp(part, dim=0) - math.log(part.shape[0])
        p = part.exp()
        # p log(p / p_y); where p underflowed to exactly 0 the term's limit is 0 (avoid 0 · (-inf) = NaN).
        kl = torch.where(p > 0, p * (part - log_marginal), torch.zeros_like(p)).sum(dim=1).mean()
        scores.append(kl.exp())
    stacked = torch.stack(scores)
    return float(stacked.mean()), float(stacked.std(correction=0))



def shuffled_classifier_score(logits: Tensor, num_splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """`classifier_score` over a fixed-seed shuffle of the rows: the one classifier score of `genvision fid` and
    the report.

    The IS formula averages over contiguous splits, which assumes i.i.d. rows (true of generator samples). Datasets
    and class-named folders come sorted by class, so each split would hold one class and score ~1; shuffling first
    makes the score independent of the source's order.
    """
    order = torch.randperm(logits.shape[0], generator=torch.Generator().manual_seed(seed))
    return classifier_score(logits[order.to(logits.device)], num_splits)

def _knn_radii(x: Tensor, k: int, row_chunk: int) -> Tensor:
    """Distance from each row of x to its k-th nearest neighbour in x, excluding itself (float64, on x's device:
    torch.cdist's matmul path, |a|² + |b|² - 2 aᵀb, as on the CPU)."""
    radii = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], row_chunk):
        dist = torch.cdist(x[start : start + row_chunk], x)
        rows = torch.arange(dist.shape[0], device=x.device)
        # Exclude the point itself explicitly rather than taking the (k+1)-th smallest: cdist's matmul path can
        # put a self-distance slightly above 0, above a true duplicate's distance.
        dist[rows, rows + start] = math.inf
        radii[start : start + row_chunk] = dist.kthvalue(k, dim=1).values
    return radii


class ManifoldScores(TypedDict):
    precision: float
    recall: float
    density: float
    coverage: float


def manifold_scores(
    real_features: Tensor, fake_features: Tensor, k: int = 3, *, row_chunk: int = 1024,
    device: torch.device | str | None = None,
) -> ManifoldScores:
    """Improved precision and recall, density and coverage of fake features (M, D) against real features (N, D)
    (the module docstring gives the formulas), from one set of k-NN radii.

    The radii take one pass over the real x real and one over the fake x fake distances; the four scores one pass
    over the real x fake distances, `row_chunk` real rows at a time, so memory is O(row_chunk · max(N, M)) besides
    the features, in float64 on `device` (default: the device of `real_features`). On a GPU that is the same
    formula as on the CPU, so only a distance within rounding (~1e-13 relative) of a radius can fall on the other
    side of it.
    """
    real = _check_features("real_features", real_features, device)
    fake = _check_features("fake_features", fake_features, real.device)
    _check_same_dim(real, fake)
    if k < 1:
        raise UsageError(f"k must be >= 1, got {k}")
    if min(real.shape[0], fake.shape[0]) < k + 1:
        raise UsageError(
            f"precision/recall with k={k} needs at least {k + 1} samples per set, "
            f"got {real.shape[0]} real and {fake.shape[0]} fake"
        )
    if row_chunk < 1:
        raise UsageError(f"row_chunk must be >= 1, got {row_chunk}")
    real_radii = _knn_radii(real, k, row_chunk)
    fake_radii = _knn_radii(fake, k, row_chunk)
    # Counted on the device, read once at the end.
    fake_inside = torch.zeros(fake.shape[0], dtype=torch.bool, device=real.device)  # in some closed real ball
    balls_holding_fakes = torch.zeros((), dtype=torch.int64, device=real.device)  # (real ball, fake) pairs, open
    covered = torch.zeros((), dtype=torch.int64, device=real.device)  # reals whose open ball holds a fake
    recalled = torch.zeros((), dtype=torch.int64, device=real.device)  # reals in some closed fake ball
    for start in range(0, real.shape[0], row_chunk):
        dist = torch.cdist(real[start : start + row_chunk], fake)  # (rows, M)
        radii = real_radii[start : start + row_chunk, None]
        fake_inside |= (dist <= radii).any(dim=0)
        balls_holding_fakes += (dist < radii).sum()
        covered += (dist.min(dim=1).values < radii[:, 0]).sum()
        recalled += (dist <= fake_radii[None, :]).any(dim=1).sum()
    num_real, num_fake = real.shape[0], fake.shape[0]
    return ManifoldScores(
        precision=int(fake_inside.sum()) / num_fake,
        recall=int(recalled) / num_real,
        density=int(balls_holding_fakes) / (k * num_fake),
        coverage=int(covered) / num_real,
    )


def precision_recall(
    real_features: Tensor, fake_features: Tensor, k: int = 3, *, row_chunk: int = 1024,
    device: torch.device | str | None = None,
) -> tuple[float, float]:
    """Improved precision and recall of fake features (M, D) against real features (N, D): the first two of
    `manifold_scores` (same arguments).

    The real manifold is the union of balls around each real sample with radius = distance to its k-th nearest
    real neighbour; precision is the fraction of fake samples inside it. Recall swaps the roles.
    """
    values = manifold_scores(real_features, fake_features, k, row_chunk=row_chunk, device=device)
    return values["precision"], values["recall"]


class ClassCoverage(TypedDict):
    classes_covered: int
    class_kl: float


# Added to each reference class frequency (then renormalised) so that a class the generator produces but the
# reference set never does gives a large finite KL rather than log(p / 0) = inf.
CLASS_KL_EPS = 1e-6


def _class_histogram(name: str, values: Tensor, num_classes: int) -> Tensor:
    if values.ndim == 2 and values.is_floating_point():
        if values.shape[1] != num_classes:
            raise UsageError(f"{name} must have {num_classes} columns (one per class), got {tuple(values.shape)}")
        labels = values.argmax(dim=1)
    elif values.ndim == 1 and not values.is_floating_point() and not values.is_complex():
        labels = values.long()
    else:
        raise UsageError(
            f"{name} must be float logits (N, {num_classes}) or integer labels (N,), "
            f"got {values.dtype} of shape {tuple(values.shape)}"
        )
    if labels.numel() == 0:
        raise UsageError(f"{name} is empty")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise UsageError(
            f"{name} holds labels outside [0, {num_classes}): min {int(labels.min())}, max {int(labels.max())}"
        )
    counts = torch.bincount(labels.flatten().cpu(), minlength=num_classes).to(torch.float64)
    return counts / counts.sum()


def class_coverage(
    fake_logits: Tensor, reference: Tensor, num_classes: int, threshold: float = 0.02
) -> ClassCoverage:
    """Predicted-class coverage of generated samples.

    `fake_logits` (N, C): classifier logits of generated samples. `reference`: logits (M, C) or predicted labels
    (M,) of the reference (real) set. `classes_covered` counts classes holding at least `threshold` of the
    generated samples; `class_kl` = KL(generated histogram || reference histogram), with the reference histogram
    smoothed by `CLASS_KL_EPS`; empty generated classes contribute 0 (the limit of p log p).
    """
    if num_classes < 1:
        raise UsageError(f"num_classes must be >= 1, got {num_classes}")
    if not 0 <= threshold <= 1:
        raise UsageError(f"threshold must be in [0, 1], got {threshold}")
    p = _class_histogram("fake_logits", fake_logits.detach(), num_classes)
    q = _class_histogram("reference", reference.detach(), num_classes)
    q = (q + CLASS_KL_EPS) / (1 + num_classes * CLASS_KL_EPS)
    kl = (torch.xlogy(p, p) - p * q.log()).sum()
    return ClassCoverage(classes_covered=int((p >= threshold).sum()), class_kl=float(kl))
