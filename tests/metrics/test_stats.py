"""FeatureStats accumulation and the Fréchet distance, checked analytically and against pytorch-fid/torchmetrics."""

import re

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from genvision.errors import UsageError
from genvision.metrics.stats import (FeatureStats, FrechetReference, bootstrap_fid, fd_infinity, fd_infinity_sizes,
                                     frechet_distance, ieee_float32_matmul, limited_torch_threads, percentile_interval,
                                     weighted_fid)


def random_features(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ mixing + shift


def stats_of(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    arr = x.numpy()
    return arr.mean(axis=0), np.cov(arr, rowvar=False)


# --- frechet_distance -------------------------------------------------------------------------------------------


def test_fid_of_a_set_with_itself_is_zero():
    mu, sigma = stats_of(random_features(300, 32, seed=0))
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)


def test_fid_is_symmetric():
    mu1, s1 = stats_of(random_features(200, 16, seed=1))
    mu2, s2 = stats_of(random_features(200, 16, seed=2, shift=0.3))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-10)


def test_fid_closed_form_for_diagonal_covariances():
    a = np.array([1.0, 4.0, 0.25, 9.0])
    b = np.array([4.0, 1.0, 0.25, 0.0])  # a zero variance: a singular covariance must still work
    mu1 = np.array([0.0, 1.0, 2.0, 3.0])
    mu2 = np.array([1.0, 1.0, 0.0, 3.0])
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + np.sum((mu1 - mu2) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_fid_with_equal_covariances_is_squared_mean_distance():
    _, sigma = stats_of(random_features(100, 8, seed=3))
    mu1 = np.arange(8.0)
    mu2 = mu1 + np.linspace(-1, 1, 8)
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-8)


def test_fid_accepts_tensors():
    mu1, s1 = stats_of(random_features(100, 8, seed=4))
    mu2, s2 = stats_of(random_features(100, 8, seed=5, shift=1.0))
    as_t = [torch.from_numpy(v).float() for v in (mu1, s1, mu2, s2)]
    assert frechet_distance(*as_t) == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=1e-5)


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")
def test_fid_matches_pytorch_fid():
    from pytorch_fid.fid_score import calculate_frechet_distance

    mu1, s1 = stats_of(random_features(500, 64, seed=6))
    mu2, s2 = stats_of(random_features(500, 64, seed=7, shift=0.2))
    expected = calculate_frechet_distance(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_fid_matches_torchmetrics_with_a_custom_extractor():
    from torchmetrics.image.fid import FrechetInceptionDistance

    class TinyExtractor(torch.nn.Module):
        num_features = 12  # torchmetrics reads this instead of probing the module with a dummy image

        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3 * 4 * 4, self.num_features, dtype=torch.float64)
            torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))

        def forward(self, images):
            return self.proj(images.flatten(1).double())

    extractor = TinyExtractor()
    g = torch.Generator().manual_seed(8)
    real = torch.rand(120, 3, 4, 4, generator=g)
    fake = (torch.rand(120, 3, 4, 4, generator=g) * 0.8 + 0.1).clamp(0, 1)

    # A custom module receives the images as given (normalize=True only skips the uint8 conversion it does for its
    # own Inception), so float images in [0, 1] are fine.
    metric = FrechetInceptionDistance(feature=extractor, normalize=True)
    stats = {True: FeatureStats(12), False: FeatureStats(12)}
    with torch.no_grad():
        for is_real, images in ((True, real), (False, fake)):
            for batch in images.split(50):
                metric.update(batch, real=is_real)
                stats[is_real].update(extractor(batch))
        expected = float(metric.compute())
    ours = frechet_distance(*stats[True].mean_and_covariance(), *stats[False].mean_and_covariance())
    assert ours == pytest.approx(expected, rel=1e-4)


def test_fid_rejects_mismatched_shapes():
    with pytest.raises(UsageError, match=r"\(3,\) and \(4,\)"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(UsageError, match=r"\(3, 3\).*\(3, 2\)"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.ones((3, 2)))


def test_fid_rejects_non_finite_inputs_and_results():
    with pytest.raises(UsageError, match="sigma2 contains NaN"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.full((2, 2), np.nan))
    with pytest.raises(UsageError, match="FID is not finite"):
        frechet_distance(np.array([1e200, 0.0]), np.eye(2), np.array([-1e200, 0.0]), np.eye(2))


# --- FrechetReference: the reference's square root once, on a device ----------------------------------------------


class Stop(Exception):
    """Raised by a spy once it has seen what it records (a meta tensor has no value to go on with)."""


def rotated_diagonal(d: int, seed: int, zeros: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Q, a, b): a random rotation Q and two non-negative spectra; b's first `zeros` entries are exactly 0, so
    Q diag(b) Qᵀ is a rank-deficient covariance. Q diag(a) Qᵀ and Q diag(b) Qᵀ commute: their Fréchet distance is
    |mu1 - mu2|² + Σ (√a - √b)²."""
    generator = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    a = torch.rand(d, generator=generator, dtype=torch.float64) * 2 + 0.1
    b = torch.rand(d, generator=generator, dtype=torch.float64) * 2 + 0.1
    b[:zeros] = 0
    return rotation, a, b


@pytest.mark.parametrize("zeros", [0, 20])
def test_frechet_reference_closed_form_for_commuting_covariances(zeros):
    """Commuting covariances (one rotation, two spectra) have the closed form above; with a singular reference both
    paths carry the sqrt(machine epsilon) noise of its zero eigenvalues (each rounds to ~±1e-16, and its square root
    is ~1e-8: measured 1e-9 to 5e-9 relative, the same for the plain and the cached path), hence 2e-8 there."""
    rotation, a, b = rotated_diagonal(40, seed=zeros, zeros=zeros)
    sigma1, sigma2 = rotation @ torch.diag(a) @ rotation.T, rotation @ torch.diag(b) @ rotation.T
    mu1, mu2 = torch.linspace(-1, 1, 40, dtype=torch.float64), torch.linspace(0, 0.5, 40, dtype=torch.float64)
    expected = float(((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())
    rtol = 2e-8 if zeros else 1e-12
    assert FrechetReference(mu2, sigma2).distance(mu1, sigma1) == pytest.approx(expected, rel=rtol)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=rtol)
    diagonal = FrechetReference(mu2.numpy(), np.diag(b.numpy()))  # numpy input; exact zeros need no rotation
    assert diagonal.distance(mu1.numpy(), np.diag(a.numpy())) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("d", [16, 160])
def test_frechet_reference_equals_the_plain_path(d):
    """Random SPD covariances: the cached path (√σ_ref σ √σ_ref) is the plain one (√σ σ_ref √σ) to 1e-10 relative
    (measured ~1e-14); with a rank-deficient reference (fewer samples than dimensions) to the sqrt(epsilon) noise
    both paths share (see above; measured up to 6e-9)."""
    generator = torch.Generator().manual_seed(d)
    for reference_rank, rtol in ((2 * d, 1e-10), (d // 2, 2e-8)):
        mixing = torch.randn(d, 2 * d, generator=generator, dtype=torch.float64)
        sigma = mixing @ mixing.T / (2 * d)
        factor = torch.randn(d, reference_rank, generator=generator, dtype=torch.float64)
        sigma_ref = factor @ factor.T / reference_rank
        mu, mu_ref = 0.1 * torch.randn(2, d, generator=generator, dtype=torch.float64)
        reference = FrechetReference(mu_ref.numpy(), sigma_ref.numpy())
        plain = frechet_distance(mu.numpy(), sigma.numpy(), mu_ref.numpy(), sigma_ref.numpy())
        assert reference.distance(mu, sigma) == pytest.approx(plain, rel=rtol)
        assert reference.distance(mu_ref, sigma_ref) == pytest.approx(0.0, abs=1e-6 if reference_rank < d else 1e-9)


def test_frechet_reference_validates_like_frechet_distance():
    with pytest.raises(UsageError, match=r"\(3,\) and \(4,\)"):
        FrechetReference(np.zeros(4), np.eye(4)).distance(np.zeros(3), np.eye(3))
    with pytest.raises(UsageError, match=r"\(3, 3\).*\(3, 2\)"):
        FrechetReference(np.zeros(3), np.ones((3, 2)))
    with pytest.raises(UsageError, match="reference sigma contains NaN"):
        FrechetReference(np.zeros(2), np.full((2, 2), np.nan))
    with pytest.raises(UsageError, match="FID is not finite"):
        FrechetReference(np.array([-1e200, 0.0]), np.eye(2)).distance(np.array([1e200, 0.0]), np.eye(2))


def test_frechet_reference_computes_on_its_device(monkeypatch):
    """The square root (eigh) once, at construction, and one eigvalsh per distance, both on the reference's device
    (meta here: a CPU would pass unnoticed); CPU inputs, checked where they are, are moved there."""
    calls = []
    eigh, eigvalsh = torch.linalg.eigh, torch.linalg.eigvalsh

    def spy_eigh(matrix):
        calls.append(("eigh", matrix.device, matrix.dtype))
        return eigh(matrix)

    def spy_eigvalsh(matrix):
        calls.append(("eigvalsh", matrix.device, matrix.dtype))
        raise Stop

    monkeypatch.setattr(torch.linalg, "eigh", spy_eigh)
    monkeypatch.setattr(torch.linalg, "eigvalsh", spy_eigvalsh)
    reference = FrechetReference(np.zeros(5), np.eye(5), device="meta")
    assert reference.root.device.type == "meta" and calls == [("eigh", torch.device("meta"), torch.float64)]
    with pytest.raises(Stop):
        reference.distance(torch.ones(5), torch.eye(5, dtype=torch.float32))
    assert calls[1:] == [("eigvalsh", torch.device("meta"), torch.float64)]


def test_bootstrap_runs_on_the_given_device(monkeypatch):
    """The resamples' eigendecompositions run on `device` (meta), not where the features are (the CPU)."""
    seen = []

    def spy(matrix):
        seen.append(matrix.device)
        raise Stop

    monkeypatch.setattr(torch.linalg, "eigvalsh", spy)
    features = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(Stop):
        bootstrap_fid(features, np.zeros(4), np.eye(4), num_resamples=3, device="meta")
    assert seen == [torch.device("meta")]


def test_weighted_fid_multiplies_in_ieee_float32_under_tf32(monkeypatch):
    """Training turns TF32 on (float32 matmul precision "high"); the bootstrap's float32 D x D products must not use
    it (a 10-bit mantissa), and the setting comes back afterwards."""
    precisions = []
    eigvalsh = torch.linalg.eigvalsh

    def spy(matrix):
        precisions.append(torch.get_float32_matmul_precision())
        return eigvalsh(matrix)

    monkeypatch.setattr(torch.linalg, "eigvalsh", spy)
    features = torch.randn(40, 4, generator=torch.Generator().manual_seed(0))  # N >= D: the float32 path
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        weighted_fid(features, torch.ones(2, 40), np.zeros(4), np.eye(4))
        assert precisions == ["highest", "highest"] and torch.get_float32_matmul_precision() == "high"
        with pytest.raises(RuntimeError), ieee_float32_matmul():
            raise RuntimeError("boom")
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


# --- FeatureStats -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_feature_stats_match_numpy_for_any_batch_size(batch_size):
    x = random_features(130, 10, seed=9, shift=2.0).float()
    stats = FeatureStats(10)
    for batch in x.split(batch_size):
        stats.update(batch)
    mu, sigma = stats_of(x.double())
    assert stats.count == 130
    assert_close(stats.mean(), torch.from_numpy(mu), rtol=1e-12, atol=1e-12)
    assert_close(stats.covariance(), torch.from_numpy(sigma), rtol=1e-12, atol=1e-12)


def test_feature_stats_merged_shards_equal_the_whole():
    x = random_features(100, 6, seed=10)
    whole, shard_a, shard_b = FeatureStats(6), FeatureStats(6), FeatureStats(6)
    whole.update(x)
    shard_a.update(x[:37])
    shard_b.update(x[37:])
    shard_a.merge(shard_b)
    assert shard_a.count == 100
    for ours, ref in zip(shard_a.mean_and_covariance(), whole.mean_and_covariance()):
        assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_reduce_across_processes_with_two_identical_ranks():
    x = random_features(50, 4, seed=11)
    stats = FeatureStats(4)
    stats.update(x)
    mu, sigma = stats.mean_and_covariance()
    stats.reduce_across_processes(lambda t: t * 2)  # two ranks that saw the same 50 samples
    assert stats.count == 100
    assert_close(stats.mean(), mu, rtol=1e-12, atol=1e-12)
    # 100 samples made of each point twice: covariance scales by (n - 1) / (2n - 1) * 2.
    assert_close(stats.covariance(), sigma * (2 * 49 / 99), rtol=1e-12, atol=1e-12)
    with pytest.raises(RuntimeError, match="twice"):
        stats.reduce_across_processes(lambda t: t * 2)


def test_kept_features_are_concatenated_and_gathered():
    x = random_features(20, 3, seed=12)
    stats = FeatureStats(3, keep_features=True)
    stats.update(x[:5].float())
    stats.update(x[5:].float())
    assert stats.features().dtype == torch.float32
    assert_close(stats.features(), x.float())
    with pytest.raises(ValueError, match="gather"):
        stats.reduce_across_processes(lambda t: t)
    stats.reduce_across_processes(lambda t: t * 2, gather=lambda t: torch.cat([t, t]))
    assert stats.features().shape == (40, 3)
    assert stats.count == 40


def test_feature_stats_errors():
    stats = FeatureStats(3)
    with pytest.raises(UsageError, match=r"\(N, 3\), got \(2, 4\)"):
        stats.update(torch.zeros(2, 4))
    stats.update(torch.zeros(1, 3))
    with pytest.raises(UsageError, match="need at least 2 samples to estimate a covariance, got 1"):
        stats.mean_and_covariance()
    stats.update(torch.tensor([[float("nan"), 0.0, 0.0]]))
    with pytest.raises(UsageError, match="NaN or inf"):
        stats.covariance()
    with pytest.raises(ValueError, match="keep"):
        FeatureStats(3).features()


def test_weighted_fid_and_bootstrap():
    generator = torch.Generator().manual_seed(0)
    fake = torch.randn(800, 12, generator=generator) * 1.5 + 0.3
    real = torch.randn(600, 12, generator=generator, dtype=torch.float64)
    mu, sigma = real.mean(0).numpy(), np.cov(real.numpy(), rowvar=False)
    plain = frechet_distance(fake.double().mean(0).numpy(), np.cov(fake.double().numpy(), rowvar=False), mu, sigma)
    assert weighted_fid(fake, torch.ones(1, 800), mu, sigma).item() == pytest.approx(plain, rel=1e-6)
    doubled = torch.cat([fake, fake])  # weights 2 on every row of `fake` = the doubled set (up to N-1 vs 2N-1)
    weights = torch.cat([torch.full((1, 800), 2.0), torch.zeros(1, 800)], dim=1)
    assert weighted_fid(doubled, weights, mu, sigma).item() == pytest.approx(plain, rel=2e-3)
    replicates = bootstrap_fid(fake, mu, sigma, num_resamples=120, seed=3, chunk=50)
    assert replicates.shape == (120,) and torch.equal(replicates, bootstrap_fid(fake, mu, sigma, 120, seed=3))
    assert not torch.equal(replicates, bootstrap_fid(fake, mu, sigma, 120, seed=4))
    # Any blocks of indices (as ranks take them under torchrun), in order, are the same replicates.
    blocks = [bootstrap_fid(fake, mu, sigma, 120, seed=3, indices=block)
              for block in (range(0, 70), range(70, 70), range(70, 120))]
    torch.testing.assert_close(torch.cat(blocks), replicates, rtol=1e-12, atol=0)
    low, high = percentile_interval(replicates)
    assert low < high and low - 0.1 * plain < plain < high


def bootstrap_by_hand(features: torch.Tensor, mu: np.ndarray, sigma: np.ndarray, num_resamples: int,
                      seed: int) -> np.ndarray:
    """The documented bootstrap replicates, one at a time: replicate i draws n rows with replacement from
    torch.Generator seeded seed * SEED_STRIDE + i, and is the plain FID (NumPy covariance) of the rows drawn."""
    from genvision.constants import SEED_STRIDE

    n, values = features.shape[0], []
    for index in range(num_resamples):
        rows = torch.randint(0, n, (n,), generator=torch.Generator().manual_seed(seed * SEED_STRIDE + index))
        drawn = features[rows].double().numpy()
        values.append(frechet_distance(drawn.mean(0), np.cov(drawn, rowvar=False), mu, sigma))
    return np.array(values)


def test_bootstrap_replicates_and_interval_by_hand():
    """Each replicate is the FID of its own seeded draw with replacement, and the interval is the 2.5 / 97.5
    percentiles (linear interpolation, NumPy's default) of the replicates; a wrong percentile, resampling without
    replacement or another seed stream fails here."""
    generator = torch.Generator().manual_seed(5)
    fake = torch.randn(50, 4, generator=generator) * 1.3 + 0.5
    real = torch.randn(400, 4, generator=generator, dtype=torch.float64)
    mu, sigma = real.mean(0).numpy(), np.cov(real.numpy(), rowvar=False)
    replicates = bootstrap_fid(fake, mu, sigma, num_resamples=40, seed=2, chunk=16)
    expected = bootstrap_by_hand(fake, mu, sigma, 40, seed=2)
    np.testing.assert_allclose(replicates.numpy(), expected, rtol=1e-5, atol=1e-7)
    assert np.unique(expected.round(6)).size == 40  # every replicate is a different draw
    low, high = percentile_interval(replicates)
    np.testing.assert_allclose([low, high], np.percentile(expected, [2.5, 97.5]), rtol=1e-5)
    np.testing.assert_allclose(percentile_interval(replicates, level=0.8), np.percentile(expected, [10, 90]),
                               rtol=1e-5)


def test_bootstrap_interval_narrows_as_the_sample_grows():
    """The replicates' spread is the FID's sampling noise, ~1/sqrt(N): 16 times the samples, about a quarter of
    the width (measured: 0.19-0.28 over 12 seeds); a resample without replacement would give zero width at any N."""
    generator = torch.Generator().manual_seed(6)
    real = torch.randn(2000, 4, generator=generator, dtype=torch.float64)
    mu, sigma = real.mean(0).numpy(), np.cov(real.numpy(), rowvar=False)
    widths = {}
    for n in (100, 1600):
        fake = torch.randn(n, 4, generator=generator) + 0.5
        low, high = percentile_interval(bootstrap_fid(fake, mu, sigma, num_resamples=200, seed=0))
        fid = frechet_distance(fake.double().mean(0).numpy(), np.cov(fake.double().numpy(), rowvar=False), mu, sigma)
        assert low < fid < high, (n, fid, low, high)
        widths[n] = high - low
    assert widths[100] > 0 and 0.12 < widths[1600] / widths[100] < 0.45, widths


def test_weighted_fid_with_fewer_samples_than_dimensions():
    """N < D (16 Inception samples, 2048 features) takes the N x N Gram path: the same FIDs as the D x D formula."""
    generator = torch.Generator().manual_seed(1)
    fake = torch.randn(10, 40, generator=generator, dtype=torch.float64) + 0.2
    real = torch.randn(200, 40, generator=generator, dtype=torch.float64)
    mu, sigma = real.mean(0).numpy(), np.cov(real.numpy(), rowvar=False)
    weights = torch.tensor([[1.0] * 10, [3, 0, 0, 2, 1, 1, 0, 2, 1, 0]])
    expected = []
    for row in weights:
        drawn = fake.repeat_interleave(row.long(), dim=0)
        expected.append(frechet_distance(drawn.mean(0).numpy(), np.cov(drawn.numpy(), rowvar=False), mu, sigma))
    torch.testing.assert_close(weighted_fid(fake, weights, mu, sigma), torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-5, atol=1e-6)


def test_limited_torch_threads_restores_the_setting():
    before = torch.get_num_threads()
    with limited_torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), limited_torch_threads(before + 1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_block_distances_sum_to_the_block_diagonal_formula():
    """Per-block Fréchet distances add up to the distance with the cross-block covariance zeroed, and equal the
    full distance when the blocks do not covary (analytic: FD of independent Gaussians is additive)."""
    from genvision.metrics.stats import block_frechet_distances

    generator = torch.Generator().manual_seed(0)
    blocks = (("semantic", 5), ("low-level", 3))

    def spd(dimension):
        a = torch.randn(dimension, dimension, generator=generator, dtype=torch.float64)
        return a @ a.T + 0.1 * torch.eye(dimension, dtype=torch.float64)

    mu1, mu2 = torch.randn(8, generator=generator, dtype=torch.float64), torch.randn(8, generator=generator,
                                                                                      dtype=torch.float64)
    sigma1, sigma2 = spd(8), spd(8)  # full covariances: the blocks covary
    distances = block_frechet_distances(mu1, sigma1, mu2, sigma2, blocks)
    assert list(distances) == ["semantic", "low-level"]
    block_diagonal = [torch.block_diag(s[:5, :5], s[5:, 5:]) for s in (sigma1, sigma2)]
    expected = frechet_distance(mu1, block_diagonal[0], mu2, block_diagonal[1])
    torch.testing.assert_close(torch.tensor(sum(distances.values())), torch.tensor(expected), rtol=1e-10, atol=0)
    torch.testing.assert_close(torch.tensor(distances["semantic"]),
                               torch.tensor(frechet_distance(mu1[:5], sigma1[:5, :5], mu2[:5], sigma2[:5, :5])))
    # cross-block covariance present: the full FID differs from the sum
    assert abs(frechet_distance(mu1, sigma1, mu2, sigma2) - expected) > 1e-3
    with pytest.raises(UsageError, match="do not cover the 8 feature columns"):
        block_frechet_distances(mu1, sigma1, mu2, sigma2, (("semantic", 5),))


# --- FD-infinity (Chong & Forsyth 2020) --------------------------------------------------------------------------


def test_fd_infinity_sizes_follow_the_paper_with_a_floor_of_twice_the_features():
    """N // 10 to N (the paper's 5000..50000), 15 points, rounded down as the paper's code does; never below 2 x D;
    an explicit minimum wins; duplicates after rounding are dropped."""
    assert fd_infinity_sizes(50000, 2048) == [int(n) for n in np.linspace(5000, 50000, 15)]
    assert fd_infinity_sizes(50000, 2048)[:3] == [5000, 8214, 11428]
    assert fd_infinity_sizes(5000, 2048) == [int(n) for n in np.linspace(4096, 5000, 15)]  # the 2 x D floor
    assert fd_infinity_sizes(5000, 32, num_points=4) == [500, 2000, 3500, 5000]
    assert fd_infinity_sizes(5000, 2048, num_points=3, min_samples=1000) == [1000, 3000, 5000]
    assert fd_infinity_sizes(100, 48) == [96, 97, 98, 99, 100]  # 15 points on 5 integers


@pytest.mark.parametrize("args, fragment", [
    ((4000, 2048), "at least 2 sample sizes from N_min = max(N // 10, 2 x 2048 features) = 4096 to the 4000 "
                   "samples; give more than 4096 samples"),
    ((100, 8, 1), "at least 2 points for its fit, got 1"),
    ((100, 8, 15, 100), "smallest subset (--fd-infinity-min-samples) must be >= 2 and below the 100 samples, got "
                        "100"),
    ((100, 8, 15, 1), "got 1"),
])
def test_fd_infinity_sizes_refuse_too_few_samples_in_one_line(args, fragment):
    with pytest.raises(UsageError, match=re.escape(fragment)) as error:
        fd_infinity_sizes(*args)
    assert "\n" not in str(error.value)


def test_fd_infinity_points_are_fids_of_seeded_subsets_and_the_intercept_is_the_least_squares_line():
    """By hand: point i is the plain FID (NumPy covariance) of the first N_i rows of the i-th permutation drawn from
    one torch.Generator seeded `seed`; value and slope are NumPy's degree-1 polynomial fit in 1/N. The same inputs
    give the same result bit for bit; another seed other subsets; the last point (every row) is the plain FID."""
    generator = torch.Generator().manual_seed(7)
    fake = torch.randn(300, 5, generator=generator) * 1.2 + 0.4  # float32 features, as extractors give
    real = torch.randn(500, 5, generator=generator, dtype=torch.float64)
    mu, sigma = real.mean(0).numpy(), np.cov(real.numpy(), rowvar=False)
    sizes = fd_infinity_sizes(300, 5, num_points=6)
    result = fd_infinity(fake, FrechetReference(mu, sigma), sizes, seed=3)
    assert [n for n, _ in result.points] == sizes == [30, 84, 138, 192, 246, 300]
    draws = torch.Generator().manual_seed(3)
    expected = []
    for n in sizes:
        subset = fake[torch.randperm(300, generator=draws)[:n]].double().numpy()
        expected.append(frechet_distance(subset.mean(0), np.cov(subset, rowvar=False), mu, sigma))
    np.testing.assert_allclose([value for _, value in result.points], expected, rtol=1e-10)
    whole = fake.double().numpy()
    assert result.points[-1][1] == pytest.approx(frechet_distance(whole.mean(0), np.cov(whole, rowvar=False), mu,
                                                                  sigma), rel=1e-10)
    slope, intercept = np.polyfit(1 / np.array(sizes), expected, 1)
    assert (result.value, result.slope) == pytest.approx((intercept, slope), rel=1e-9)
    assert fd_infinity(fake, FrechetReference(mu, sigma), sizes, seed=3) == result
    assert fd_infinity(fake, FrechetReference(mu, sigma), sizes[::-1], seed=3) == result  # smallest first
    assert fd_infinity(fake, FrechetReference(mu, sigma), sizes, seed=4).points[0] != result.points[0]
    with pytest.raises(UsageError, match=r"at least 2 distinct sample sizes in \[2, 300\], got \[30, 301\]"):
        fd_infinity(fake, FrechetReference(mu, sigma), [30, 301])


def gaussian_pair(d: int) -> tuple[torch.Tensor, torch.Tensor, FrechetReference, float]:
    """(mu_g, root_g, reference, exact FD): generated N(mu_g, root_g root_gᵀ) and a reference N(mu_r, sigma_r)
    given exactly, one rotation of the same spectrum, the means 1 apart along the direction of variance 1e-4: the
    exact Fréchet distance is 1, and FID_N's sampling noise from the mean shift (2 sqrt(δᵀ sigma δ / N)) is far below
    its 1/N bias, so the test sees the bias rather than the noise."""
    generator = torch.Generator().manual_seed(0)
    rotation, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    spectrum = torch.rand(d, generator=generator, dtype=torch.float64) * 2 + 0.5
    spectrum[0] = 1e-4
    mu_g = torch.linspace(-1, 1, d, dtype=torch.float64)
    mu_r = mu_g + rotation[:, 0]
    reference = FrechetReference(mu_r, rotation @ torch.diag(spectrum) @ rotation.T)
    return mu_g, rotation @ torch.diag(spectrum.sqrt()), reference, 1.0


def test_fd_infinity_approaches_the_exact_frechet_distance_of_two_gaussians():
    """16 independent draws of N = 2000 and of N = 20000 generated samples (8 dimensions) against exact reference
    statistics. FID_N is biased upwards by about tr(sigma_g) (D + 5) / (4 N) (the mean's tr(sigma_g) / N plus the
    square-root term's; measured 0.94 and 0.96 of it); FD-infinity's mean error is a small fraction of that bias
    (measured 1% at 2000 and 13% at 20000; at most 15% and 21% over 8 other seed sets, hence 0.5), and its error
    shrinks with N (mean absolute error 0.0061 at 2000, 0.0007 at 20000: ratio 0.11, at most 0.14, hence 0.4). Per
    draw it is noisier than FID_N (an extrapolation): the claim is on the bias."""
    mu_g, root_g, reference, exact = gaussian_pair(8)
    trace = float((root_g ** 2).sum())
    errors, biases = {}, {}
    for n in (2000, 20000):
        fd_errors, fid_errors = [], []
        for draw in range(16):
            generated = torch.randn(n, 8, generator=torch.Generator().manual_seed(draw), dtype=torch.float64)
            result = fd_infinity(generated @ root_g.T + mu_g, reference, fd_infinity_sizes(n, 8), seed=draw)
            fd_errors.append(result.value - exact)
            fid_errors.append(result.points[-1][1] - exact)
        errors[n], biases[n] = np.array(fd_errors), np.mean(fid_errors)
        assert 0.7 < biases[n] / (trace * (8 + 5) / (4 * n)) < 1.3, (n, biases[n])  # the bias to remove
        assert abs(errors[n].mean()) < 0.5 * biases[n], (n, errors[n].mean(), biases[n])
    assert np.abs(errors[20000]).mean() < 0.4 * np.abs(errors[2000]).mean(), errors
