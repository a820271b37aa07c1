"""KID, classifier (Inception) score, precision/recall, density/coverage and class coverage, on hand-built inputs."""

import math

import pytest
import torch

from genvision.errors import UsageError
from genvision.metrics.scores import (
    CLASS_KL_EPS,
    class_coverage,
    classifier_score,
    kernel_inception_distance,
    manifold_scores,
    precision_recall,
)


def gaussian(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


# --- KID --------------------------------------------------------------------------------------------------------


def test_kid_of_identical_sets_is_near_zero_and_grows_with_a_shift():
    x = gaussian(2000, 16, seed=0)
    same_mean, same_std = kernel_inception_distance(x, x, num_subsets=10, subset_size=100)
    other_sample_mean, _ = kernel_inception_distance(x, gaussian(2000, 16, seed=1), num_subsets=10, subset_size=100)
    shifted_mean, _ = kernel_inception_distance(x, gaussian(2000, 16, seed=2, shift=0.5), 10, 100)
    # Subset-to-subset noise here is ~0.02 per subset; a 0.5 shift in every coordinate gives ~1.
    assert abs(same_mean) < 0.03
    assert abs(other_sample_mean) < 0.03
    assert 0 < same_std < 0.1
    assert shifted_mean > 0.5


def test_kid_on_exactly_equal_subsets_is_zero():
    # subset_size = N and the same rows on both sides: every subset pair is the same set, so MMD² is
    # (sum_xx + sum_xx) / (m (m-1)) - 2 sum_all / m², i.e. exactly the bias of the cross term: compute it by hand.
    x = gaussian(5, 3, seed=2)
    k = (x @ x.T / 3 + 1) ** 3
    m = 5
    off_diag = k.sum() - k.diagonal().sum()
    expected = 2 * off_diag / (m * (m - 1)) - 2 * k.sum() / m**2
    mean, std = kernel_inception_distance(x, x, num_subsets=3, subset_size=10)  # clipped to 5
    assert mean == pytest.approx(float(expected), rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_matches_torchmetrics():
    from torchmetrics.image.kid import KernelInceptionDistance, poly_mmd

    real = gaussian(60, 8, seed=3)
    fake = gaussian(50, 8, seed=4, shift=0.3)

    # Same subsets through torchmetrics' own MMD function.
    g = torch.Generator().manual_seed(5)
    reference = []
    for _ in range(4):
        ia = torch.randperm(60, generator=g)[:25]
        ib = torch.randperm(50, generator=g)[:25]
        reference.append(poly_mmd(real[ia], fake[ib]))
    reference = torch.stack(reference)
    mean, std = kernel_inception_distance(
        real, fake, num_subsets=4, subset_size=25, generator=torch.Generator().manual_seed(5)
    )
    assert mean == pytest.approx(float(reference.mean()), rel=1e-10)
    assert std == pytest.approx(float(reference.std(correction=0)), rel=1e-10)

    # The whole metric class, fed features through an identity "extractor"; it draws subsets from the global RNG
    # in the same order (real, then fake), so seeding it the same way gives the same subsets.
    with pytest.warns(UserWarning, match="save all extracted features"):
        metric = KernelInceptionDistance(feature=torch.nn.Identity(), subsets=4, subset_size=25)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    torch.manual_seed(5)
    tm_mean, tm_std = metric.compute()
    assert mean == pytest.approx(float(tm_mean), rel=1e-10)
    assert std == pytest.approx(float(tm_std), rel=1e-10)


def written_out_kid(a: torch.Tensor, b: torch.Tensor, num_subsets: int, subset_size: int, seed: int
                    ) -> tuple[float, float]:
    """KID written out pair by pair in Python floats (math.fsum), independent of `scores._poly_mmd2`: the unbiased
    MMD² of Bińkowski et al. with k(x, y) = (x.y / d + 1)³, the within-set sums over i != j divided by m(m-1), the
    cross sum over all m² pairs; subsets drawn as documented (a then b, per subset, from one seeded generator)."""
    generator = torch.Generator().manual_seed(seed)
    m, d = min(subset_size, len(a), len(b)), a.shape[1]

    def kernel(x, y):
        return (math.fsum(p * q for p, q in zip(x, y)) / d + 1) ** 3

    values = []
    for _ in range(num_subsets):
        x = a[torch.randperm(len(a), generator=generator)[:m]].tolist()
        y = b[torch.randperm(len(b), generator=generator)[:m]].tolist()
        within_x = math.fsum(kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
        within_y = math.fsum(kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
        cross = math.fsum(kernel(x[i], y[j]) for i in range(m) for j in range(m))
        values.append(within_x / (m * (m - 1)) + within_y / (m * (m - 1)) - 2 * cross / m**2)
    mean = math.fsum(values) / len(values)
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))


@pytest.mark.parametrize("subset_size", [12, 100])  # 100: clipped to the smaller set (30), every row of it each time
def test_kid_equals_the_estimator_written_out(subset_size):
    a, b = gaussian(40, 5, seed=13), gaussian(30, 5, seed=14, shift=0.4)
    expected = written_out_kid(a, b, num_subsets=6, subset_size=subset_size, seed=21)
    got = kernel_inception_distance(a, b, 6, subset_size, generator=torch.Generator().manual_seed(21))
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # generator=None is a fresh generator seeded with 0
    assert kernel_inception_distance(a, b, 6, subset_size) == pytest.approx(
        written_out_kid(a, b, 6, subset_size, seed=0), rel=1e-9, abs=1e-12)
    assert expected[0] > 0.05  # the shift is seen: a biased or mis-signed estimator would not land on these numbers


def test_kid_is_deterministic_and_validates():
    a, b = gaussian(30, 4, seed=6), gaussian(30, 4, seed=7)
    assert kernel_inception_distance(a, b, 5, 10) == kernel_inception_distance(a, b, 5, 10)
    with pytest.raises(UsageError, match="at least 2 samples"):
        kernel_inception_distance(a[:1], b)
    with pytest.raises(UsageError, match="same dimension"):
        kernel_inception_distance(a, b[:, :3])


# --- classifier score -------------------------------------------------------------------------------------------


def test_classifier_score_of_confident_uniform_predictions_is_num_classes():
    num_classes = 5
    labels = torch.arange(100) % num_classes  # each of the 10 contiguous splits holds every class twice
    logits = 100.0 * torch.nn.functional.one_hot(labels, num_classes).double()
    mean, std = classifier_score(logits)
    assert mean == pytest.approx(num_classes, rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_classifier_score_of_identical_predictions_is_one():
    logits = torch.tensor([[2.0, -1.0, 0.5]]).repeat(40, 1)
    mean, std = classifier_score(logits, num_splits=4)
    assert mean == pytest.approx(1.0, abs=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_classifier_score_by_hand_with_splits_clipped():
    # Two samples, p1 = (1, 0) and p2 = (1/2, 1/2) (logits with -inf-free extremes: 0 vs -1000 underflows to 0).
    logits = torch.tensor([[0.0, -1000.0], [0.0, 0.0]])
    marginal = torch.tensor([0.75, 0.25], dtype=torch.float64)
    kl1 = math.log(1 / 0.75)
    kl2 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert torch.isclose(marginal.sum(), torch.tensor(1.0, dtype=torch.float64))
    mean, std = classifier_score(logits, num_splits=10)  # clipped to 2 splits of one sample: each scores 1
    assert (mean, std) == pytest.approx((1.0, 0.0), abs=1e-12)
    mean, _ = classifier_score(logits, num_splits=1)
    assert mean == pytest.approx(math.exp((kl1 + kl2) / 2), rel=1e-12)


def test_classifier_score_rejects_bad_logits():
    with pytest.raises(UsageError, match=r"\(N, C\)"):
        classifier_score(torch.zeros(5))
    with pytest.raises(UsageError, match="NaN"):
        classifier_score(torch.tensor([[0.0, float("nan")]]))


# --- precision / recall -----------------------------------------------------------------------------------------


def on_a_line(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)[:, None] * torch.tensor([[0.6, 0.8]], dtype=torch.float64)


def test_precision_recall_of_identical_sets_is_one():
    x = gaussian(200, 5, seed=8)
    assert precision_recall(x, x.clone(), k=3, row_chunk=64) == (1.0, 1.0)


def test_precision_recall_of_far_apart_sets_is_zero():
    assert precision_recall(gaussian(50, 5, seed=9), gaussian(50, 5, seed=10, shift=100.0), k=3) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("k", "expected_recall"),
    [
        # k=1: real radii 1, fake radii 0.5 -> real 0, 1, 2 lie within 0.5 of a fake point.
        (1, 0.3),
        # k=3: fake radii (1.5, 1, 1, 1, 1.5) -> real 0..3 covered (3 is 1 from fake 2), real 4 is 2 > 1.5 away.
        (3, 0.4),
    ],
)
def test_precision_recall_of_a_sub_cluster_by_hand(k, expected_recall):
    real = on_a_line(*range(10))  # 0, 1, ..., 9 along a unit direction in 2-D
    fake = on_a_line(0.0, 0.5, 1.0, 1.5, 2.0)  # all within the real manifold, covering only its start
    precision, recall = precision_recall(real, fake, k=k, row_chunk=3)
    assert precision == 1.0
    assert recall == pytest.approx(expected_recall)


def test_precision_by_hand_with_an_outlier():
    real = on_a_line(0, 1, 2, 3, 4)  # k=1 radii: 1 each
    fake = on_a_line(0.5, 1.5, 2.5, 10.0)  # the last one is 6 away from real 4
    precision, recall = precision_recall(real, fake, k=1)
    assert precision == pytest.approx(0.75)
    # fake k=1 radii: 1, 1, 1, 7.5 -> every real point is within 1 of 0.5/1.5/2.5 or 7.5 of 10.
    assert recall == 1.0


def brute_force_precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int) -> tuple[float, float]:
    """Improved precision and recall from the definition, point by point in NumPy float64: a point of one set counts
    when it lies within some point of the other set's distance to that point's k-th nearest neighbour (itself
    excluded)."""
    import numpy as np

    def radii(points):
        distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
        np.fill_diagonal(distances, np.inf)
        return np.sort(distances, axis=1)[:, k - 1]

    def covered(points, centres):
        distances = np.linalg.norm(points[:, None] - centres[None], axis=-1)
        return float(np.mean((distances <= radii(centres)[None]).any(axis=1)))

    real, fake = real.numpy(), fake.numpy()
    return covered(fake, real), covered(real, fake)


def test_precision_recall_of_a_tight_cluster_inside_the_real_set():
    """Generated = a tight cluster at the centre of the real distribution: every generated point is realistic
    (precision ~1) but the generator covers almost none of the real variety (recall ~0). Pins the argument order
    (real first) and which fraction is which."""
    real = gaussian(400, 4, seed=15)
    generated = 0.1 * gaussian(100, 4, seed=16)
    precision, recall = precision_recall(real, generated, k=3, row_chunk=64)
    assert precision > 0.95 and recall < 0.1, (precision, recall)
    assert (precision, recall) == brute_force_precision_recall(real, generated, k=3)
    assert precision_recall(generated, real, k=3) == (recall, precision)  # the roles swap, nothing else


def test_precision_recall_needs_more_than_k_samples():
    with pytest.raises(UsageError, match="k=3 needs at least 4"):
        precision_recall(gaussian(3, 2, seed=11), gaussian(10, 2, seed=12), k=3)


# --- density / coverage (and precision / recall from the same call) ----------------------------------------------


def column(*xs: float) -> torch.Tensor:
    """1-D points as an (N, 1) feature set."""
    return torch.tensor(xs, dtype=torch.float64)[:, None]


@pytest.mark.parametrize("k", [1, 3, 5])
def test_manifold_scores_of_identical_sets_are_one(k):
    # Each real (open) ball holds its centre and its k - 1 nearer neighbours: k fakes per ball, so density is
    # N k / (k N) = 1 exactly; every real's own copy lies in its ball (coverage 1), and in the closed balls too.
    x = gaussian(200, 5, seed=8)
    assert manifold_scores(x, x.clone(), k, row_chunk=64) == {"precision": 1.0, "recall": 1.0, "density": 1.0,
                                                               "coverage": 1.0}


def test_manifold_scores_of_far_apart_sets_are_zero():
    scores = manifold_scores(gaussian(50, 5, seed=9), gaussian(60, 5, seed=10, shift=100.0), k=3, row_chunk=16)
    assert scores == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        # k=1: real radii (1, 1, 1, 1, 7), open balls (-1, 1), (0, 2), (1, 3), (2, 4), (3, 17).
        #   Balls holding each fake: 1.2 -> (0,2) (1,3): 2; 1.3 -> 2; 2.6 -> (1,3) (2,4): 2 (7.4 from 10 is > 7);
        #   5.5 -> (3,17) alone: 1; 30 -> 0.  density = (2+2+2+1+0) / (1·5) = 1.4.
        #   Nearest fake of each real: 0 -> 1.2 (not < 1), 1 -> 0.2, 2 -> 0.6, 3 -> 0.4, 10 -> 4.5 (< 7): coverage 4/5.
        #   precision: every fake but 30 is in a ball: 4/5 (5.5 only in the outlier 10's ball, which density
        #   counts once in k). recall: fake radii (0.1, 0.1, 1.3, 2.9, 24.5) hold reals 2, 3 (via 2.6) and
        #   10 (via 30): 3/5.
        (1, {"precision": 0.8, "recall": 0.6, "density": 1.4, "coverage": 0.8}),
        # k=2: real radii (2, 1, 1, 2, 8), open balls (-2, 2), (0, 2), (1, 3), (1, 5), (2, 18).
        #   1.2 -> all but (2,18): 4; 1.3 -> 4; 2.6 -> (1,3) (1,5) (2,18): 3; 5.5 -> (2,18): 1; 30 -> 0.
        #   density = 12 / (2·5) = 1.2. Every real's nearest fake is inside its ball (0 -> 1.2 < 2): coverage 1.
        #   recall: fake radii (1.4, 1.3, 1.4, 4.2, 27.4) reach 0 (1.2 from 1.2), 1, 2, 3 and 10 (20 from 30): 1.
        (2, {"precision": 0.8, "recall": 1.0, "density": 1.2, "coverage": 1.0}),
    ],
)
def test_manifold_scores_by_hand(k, expected):
    real = column(0, 1, 2, 3, 10)  # four close together and one outlier
    fake = column(1.2, 1.3, 2.6, 5.5, 30)
    got = manifold_scores(real, fake, k, row_chunk=2)
    assert got.keys() == expected.keys()
    torch.testing.assert_close(torch.tensor(list(got.values()), dtype=torch.float64),
                               torch.tensor(list(expected.values()), dtype=torch.float64), rtol=1e-15, atol=0)
    assert precision_recall(real, fake, k, row_chunk=2) == (got["precision"], got["recall"])


def test_density_exceeds_one_where_real_balls_overlap_while_coverage_stays_at_most_one():
    # k=1: reals -2, -1, 1, 2 have radius 1: open balls (-3, -1), (-2, 0), (0, 2), (1, 3). The three fakes crowd
    # between -2 and -1, each inside two balls: density = 6 / (1·3) = 2. Only the reals -2 and -1 have a fake
    # within 1 (coverage 1/2); every fake is in a real ball (precision 1); the fakes' radii (0.1) reach no real.
    scores = manifold_scores(column(-2, -1, 1, 2), column(-1.6, -1.5, -1.4), k=1)
    assert scores == pytest.approx({"precision": 1.0, "recall": 0.0, "density": 2.0, "coverage": 0.5}, abs=1e-15)
    # The same on random sets: fakes in a tight clump at the centre of a real Gaussian in 4-D.
    clump = manifold_scores(gaussian(400, 4, seed=15), 0.1 * gaussian(100, 4, seed=16), k=3)
    assert clump["density"] > 1 and clump["coverage"] <= 1 and clump["coverage"] < 0.1, clump


def test_density_and_coverage_of_independent_samples_of_one_distribution():
    """Naeem et al.: for real and fake drawn from the same distribution, density is 1 in expectation and coverage
    1 - Π_{i=1..k} (N - i) / (N + M - i) (their Lemma 2): 0.877 here. Averaged over 8 seeded draws; one draw's
    standard deviation is ~0.063 for density and ~0.029 for coverage (measured over 48 draws), so the bounds are
    about 3.5 and 3 standard errors of the mean."""
    n, k, draws = 200, 3, 8
    runs = [manifold_scores(gaussian(n, 4, seed=40 + i), gaussian(n, 4, seed=140 + i), k) for i in range(draws)]
    expected_coverage = 1 - math.prod((n - i) / (2 * n - i) for i in range(1, k + 1))
    assert math.fsum(r["density"] for r in runs) / draws == pytest.approx(1.0, abs=0.08)
    assert math.fsum(r["coverage"] for r in runs) / draws == pytest.approx(expected_coverage, abs=0.03)


def brute_force_manifold_scores(real: torch.Tensor, fake: torch.Tensor, k: int) -> dict[str, float]:
    """The four scores from their definitions, point by point in NumPy float64 (direct differences, no matmul):
    k-NN radii with the point itself excluded; closed balls for precision and recall, open balls for density and
    coverage (Naeem et al.'s reference code)."""
    import numpy as np

    real, fake = real.double().numpy(), fake.double().numpy()

    def radii(points):
        distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
        np.fill_diagonal(distances, np.inf)
        return np.sort(distances, axis=1)[:, k - 1]

    real_fake = np.linalg.norm(real[:, None] - fake[None], axis=-1)  # (N, M)
    real_radii, fake_radii = radii(real), radii(fake)
    precision = sum(any(real_fake[i, j] <= real_radii[i] for i in range(len(real))) for j in range(len(fake)))
    recall = sum(any(real_fake[i, j] <= fake_radii[j] for j in range(len(fake))) for i in range(len(real)))
    held = sum(int(real_fake[i, j] < real_radii[i]) for i in range(len(real)) for j in range(len(fake)))
    covered = sum(min(real_fake[i]) < real_radii[i] for i in range(len(real)))
    return {"precision": precision / len(fake), "recall": recall / len(real), "density": held / (k * len(fake)),
            "coverage": covered / len(real)}


@pytest.mark.parametrize("k", [1, 3])
def test_manifold_scores_equal_the_definitions_on_a_float32_set(k):
    real = gaussian(70, 6, seed=50).float()
    fake = (0.7 * gaussian(55, 6, seed=51) + 0.3).float()
    expected = brute_force_manifold_scores(real, fake, k)
    assert 0 < expected["coverage"] < 1 and 0 < expected["density"] and expected["recall"] < 1  # nothing trivial
    assert manifold_scores(real, fake, k, row_chunk=16, device="cpu") == expected


def test_manifold_scores_do_not_depend_on_row_chunk():
    real, fake = gaussian(90, 5, seed=60), 0.8 * gaussian(70, 5, seed=61) + 0.2
    reference = manifold_scores(real, fake, 3, row_chunk=4096)
    assert all(0 < value for value in reference.values())
    for row_chunk in (1, 7, 64):
        assert manifold_scores(real, fake, 3, row_chunk=row_chunk) == reference


# --- on the run's device, the CPU numbers unchanged ---------------------------------------------------------------


def previous_precision_recall(real, fake, k, row_chunk):
    """The CPU implementation before the device argument, verbatim in substance: the reference numbers."""
    real, fake = real.detach().to(torch.float64), fake.detach().to(torch.float64)

    def radii(x):
        out = torch.empty(x.shape[0], dtype=x.dtype)
        for start in range(0, x.shape[0], row_chunk):
            dist = torch.cdist(x[start:start + row_chunk], x)
            rows = torch.arange(dist.shape[0])
            dist[rows, rows + start] = math.inf
            out[start:start + row_chunk] = dist.kthvalue(k, dim=1).values
        return out

    def inside(points, centres, radii_):
        count = 0
        for start in range(0, points.shape[0], row_chunk):
            count += int((torch.cdist(points[start:start + row_chunk], centres) <= radii_[None, :]).any(dim=1).sum())
        return count / points.shape[0]

    return inside(fake, real, radii(real)), inside(real, fake, radii(fake))


def previous_kid(a, b, num_subsets, subset_size):
    a, b = a.detach().to(torch.float64), b.detach().to(torch.float64)
    m, d = min(subset_size, a.shape[0], b.shape[0]), a.shape[1]
    generator, scores = torch.Generator().manual_seed(0), torch.empty(num_subsets, dtype=torch.float64)
    for i in range(num_subsets):
        x = a[torch.randperm(a.shape[0], generator=generator)[:m]]
        y = b[torch.randperm(b.shape[0], generator=generator)[:m]]
        k_xx, k_yy, k_xy = ((x @ x.T / d + 1) ** 3), ((y @ y.T / d + 1) ** 3), ((x @ y.T / d + 1) ** 3)
        sum_xx, sum_yy = k_xx.sum() - k_xx.diagonal().sum(), k_yy.sum() - k_yy.diagonal().sum()
        scores[i] = (sum_xx + sum_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m)
    return float(scores.mean()), float(scores.std(correction=0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_numbers_are_the_previous_implementations(dtype):
    """On the CPU (device None or "cpu") KID and precision/recall are bit for bit what they were, duplicates (ties
    at the radii) included."""
    real = gaussian(90, 6, seed=30).to(dtype)
    fake = torch.cat([gaussian(50, 6, seed=31, shift=0.3), real[:10].double()]).to(dtype)  # 10 duplicates
    for k, row_chunk in ((1, 7), (3, 1024)):
        expected = previous_precision_recall(real, fake, k, row_chunk)
        assert precision_recall(real, fake, k, row_chunk=row_chunk) == expected
        assert precision_recall(real, fake, k, row_chunk=row_chunk, device="cpu") == expected
    assert kernel_inception_distance(fake, real, 9, 40) == previous_kid(fake, real, 9, 40)
    assert kernel_inception_distance(fake, real, 9, 40, device="cpu") == previous_kid(fake, real, 9, 40)


class Stop(Exception):
    """Raised by a spy once it has seen what it records (a meta tensor has no value to go on with)."""


def test_precision_recall_and_kid_compute_on_the_given_device(monkeypatch):
    """CPU features, device meta (a CPU would pass unnoticed): the distances and kernels are computed there, in
    float64, the features moved once."""
    from genvision.metrics import scores

    seen = []

    def spy(*tensors, **_):
        seen.append(tuple((t.device.type, t.dtype) for t in tensors[:2]))
        raise Stop

    real, fake = gaussian(20, 3, seed=1).float(), gaussian(12, 3, seed=2).float()
    monkeypatch.setattr(torch, "cdist", spy)
    with pytest.raises(Stop):
        precision_recall(real, fake, device="meta")
    monkeypatch.setattr(scores, "_poly_mmd2", spy)
    with pytest.raises(Stop):
        kernel_inception_distance(fake, real, 3, 10, device="meta")
    assert seen == [(("meta", torch.float64), ("meta", torch.float64))] * 2


def test_no_tensor_is_made_on_the_default_device():
    """Every tensor KID and the manifold scores make names its device: with another default device (meta) they still
    compute on the CPU, as asked, and give the CPU numbers."""
    real, fake = gaussian(40, 4, seed=3), gaussian(30, 4, seed=4, shift=0.2)
    expected = (manifold_scores(real, fake, 2, row_chunk=16), kernel_inception_distance(fake, real, 4, 20))
    with torch.device("meta"):
        got = (manifold_scores(real, fake, 2, row_chunk=16, device="cpu"),
               kernel_inception_distance(fake, real, 4, 20, device="cpu"))
    assert got == expected


# --- class coverage ---------------------------------------------------------------------------------------------


def test_class_coverage_by_hand():
    fake_labels = torch.tensor([0] * 5 + [1] * 3 + [2] * 2)  # histogram (0.5, 0.3, 0.2, 0)
    fake_logits = torch.nn.functional.one_hot(fake_labels, 4).float() * 5
    reference = torch.arange(40) % 4  # uniform reference labels
    q = 0.25 + CLASS_KL_EPS  # (0.25 + eps) / (1 + 4 eps), same for every class
    q /= 1 + 4 * CLASS_KL_EPS
    expected_kl = 0.5 * math.log(0.5 / q) + 0.3 * math.log(0.3 / q) + 0.2 * math.log(0.2 / q)

    result = class_coverage(fake_logits, reference, num_classes=4)
    assert result["classes_covered"] == 3
    assert result["class_kl"] == pytest.approx(expected_kl, rel=1e-12)
    assert class_coverage(fake_logits, reference, num_classes=4, threshold=0.25)["classes_covered"] == 2

    # Reference given as logits instead of labels gives the same answer.
    ref_logits = torch.nn.functional.one_hot(reference, 4).float()
    assert class_coverage(fake_logits, ref_logits, num_classes=4) == result


def test_class_kl_is_zero_for_matching_histograms_and_finite_for_unseen_classes():
    labels = torch.tensor([0, 1, 1, 2])
    logits = torch.nn.functional.one_hot(labels, 3).float()
    assert class_coverage(logits, labels, 3)["class_kl"] == pytest.approx(0.0, abs=1e-9)
    unseen = class_coverage(logits, torch.tensor([0, 0]), 3)["class_kl"]
    assert math.isfinite(unseen) and unseen > 5


def test_class_coverage_validates():
    with pytest.raises(UsageError, match="4 columns"):
        class_coverage(torch.zeros(3, 5), torch.tensor([0]), num_classes=4)
    with pytest.raises(UsageError, match=r"outside \[0, 4\)"):
        class_coverage(torch.zeros(3, 4), torch.tensor([7]), num_classes=4)
