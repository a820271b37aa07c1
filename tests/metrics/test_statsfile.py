"""Statistics .npz files: round trip, pytorch-fid compatibility, and one-line errors for every kind of bad file."""

import dataclasses
import os
import zipfile

import numpy as np
import pytest

import genvision
from genvision.errors import UsageError
from genvision.metrics.statsfile import StatsMetadata, load_stats, save_stats

META = StatsMetadata(
    extractor="classifier",
    extractor_hash="1a2b3c",
    image_size=32,
    image_channels=1,
    source="mnist:train",
    num_samples=5000,
)


def random_stats(d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(50, d))
    return x.mean(axis=0), np.cov(x, rowvar=False)


def test_round_trip(tmp_path):
    path = tmp_path / "stats.npz"
    mu, sigma = random_stats()
    save_stats(path, mu, sigma, META)
    mu2, sigma2, meta2 = load_stats(path, META, expected_dim=6)
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(sigma2, sigma)
    assert mu2.dtype == sigma2.dtype == np.float64
    assert meta2 == META
    assert meta2.genvision_version == genvision.__version__
    assert sorted(os.listdir(tmp_path)) == ["stats.npz"]  # no temp files left behind


def test_metadata_uses_plain_dtypes(tmp_path):
    path = tmp_path / "stats.npz"
    save_stats(path, *random_stats(), META)
    with np.load(path, allow_pickle=False) as f:
        assert f["extractor"].dtype.kind == "U" and f["extractor"].shape == ()
        assert f["image_size"].dtype == np.int64
        assert all(f[key].dtype != object for key in f.files)


def test_written_file_is_readable_by_pytorch_fid(tmp_path):
    from pytorch_fid.fid_score import compute_statistics_of_path

    path = tmp_path / "stats.npz"
    mu, sigma = random_stats()
    save_stats(path, mu, sigma, META)
    m, s = compute_statistics_of_path(str(path), model=None, batch_size=1, dims=6, device="cpu")
    np.testing.assert_array_equal(m, mu)
    np.testing.assert_array_equal(s, sigma)


def test_pytorch_fid_file_loads_without_metadata_but_is_refused_when_an_extractor_is_expected(tmp_path):
    path = tmp_path / "fid_stats.npz"
    mu, sigma = random_stats()
    np.savez(path, mu=mu.astype(np.float32), sigma=sigma)  # pytorch-fid's own layout
    mu2, _, meta = load_stats(path)
    assert meta is None
    np.testing.assert_allclose(mu2, mu, rtol=1e-6)
    with pytest.raises(UsageError, match=r"fid_stats\.npz has no extractor metadata.*classifier@1a2b3c"):
        load_stats(path, META)


def test_other_extractor_is_refused_naming_both_sides(tmp_path):
    path = tmp_path / "stats.npz"
    save_stats(path, *random_stats(), META)
    other = StatsMetadata("classifier", "9f8e7d", 32, 1)
    expected_message = (
        f"{path} was computed with extractor classifier@1a2b3c (32 px, 1 ch, pad28+bicubic-antialias resize) "
        "but this run uses classifier@9f8e7d (32 px, 1 ch, pad28+bicubic-antialias resize)"
    )
    with pytest.raises(UsageError) as info:
        load_stats(path, other)
    assert str(info.value) == expected_message
    with pytest.raises(UsageError, match=r"\(64 px, 1 ch, pad28\+bicubic-antialias resize\)"):
        load_stats(path, StatsMetadata("classifier", "1a2b3c", 64, 1))
    # Only the feature-space fields are compared: source and sample count may differ.
    load_stats(path, StatsMetadata("classifier", "1a2b3c", 32, 1, source="elsewhere", num_samples=1))


@pytest.mark.parametrize("old_resize", ["bicubic-antialias", "tf1-bilinear", None], ids=["bicubic", "tf1", "absent"])
def test_statistics_of_the_rule_that_resized_28px_digits_are_refused(tmp_path, old_resize):
    """Files written before 28-px digits were padded record the bare filter, or no resize at all."""
    path = tmp_path / "old.npz"
    save_stats(path, *random_stats(), META)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files if key != "resize"}
    if old_resize is not None:
        arrays["resize"] = np.array(old_resize)
    write_npz(path, **arrays)
    recorded = old_resize or "bicubic-antialias"  # LEGACY_RESIZE: what files without the field used
    assert load_stats(path)[2].resize == recorded
    expected = dataclasses.replace(META, resize="pad28+tf1-bilinear" if old_resize == "tf1-bilinear" else META.resize)
    with pytest.raises(UsageError) as info:
        load_stats(path, expected)
    message = str(info.value)
    assert "\n" not in message and f"(32 px, 1 ch, {recorded} resize)" in message
    assert f"(32 px, 1 ch, {expected.resize} resize)" in message
    assert "resized 28-px images instead of padding them to 32 px: recompute them" in message
    # another extractor as well: named as such, without the hint about the earlier rule
    with pytest.raises(UsageError) as info:
        load_stats(path, StatsMetadata("classifier", "9f8e7d", 32, 1))
    assert "recompute them" not in str(info.value)


def write_npz(path, **arrays):
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def bad_files():
    mu, sigma = random_stats()
    return {
        "missing_mu": ({"sigma": sigma}, "no 'mu' array"),
        "nan": ({"mu": mu, "sigma": np.where(np.eye(6) > 0, np.nan, sigma)}, "sigma contains NaN or inf"),
        "mu_2d": ({"mu": mu[None], "sigma": sigma}, r"got mu \(1, 6\) and sigma \(6, 6\)"),
        "sigma_not_square": ({"mu": mu, "sigma": sigma[:, :5]}, r"got mu \(6,\) and sigma \(6, 5\)"),
        "object": ({"mu": np.array([1.0, "x"], dtype=object), "sigma": sigma}, "pickled object array; refusing"),
        "string_mu": ({"mu": np.array(["a", "b"]), "sigma": sigma}, "mu has dtype <U1"),
        "partial_metadata": ({"mu": mu, "sigma": sigma, "extractor": np.array("classifier")}, "incomplete metadata"),
    }


@pytest.mark.parametrize("case", sorted(bad_files()))
def test_bad_files_raise_usage_errors_naming_the_file(tmp_path, case):
    arrays, message = bad_files()[case]
    path = tmp_path / f"{case}.npz"
    write_npz(path, **arrays)
    with pytest.raises(UsageError, match=message) as info:
        load_stats(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_wrong_dimension_is_refused(tmp_path):
    path = tmp_path / "stats.npz"
    save_stats(path, *random_stats(), META)
    with pytest.raises(UsageError, match=r"stats\.npz holds 6-dimensional statistics, expected 2048"):
        load_stats(path, expected_dim=2048)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a valid .npz archive"),
        (b"hello, not a zip", "not a valid .npz archive"),
        (b"PK\x03\x04truncated", "not a valid .npz archive"),
    ],
)
def test_files_that_are_not_npz_archives(tmp_path, content, message):
    path = tmp_path / "broken.npz"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=message) as info:
        load_stats(path)
    assert str(path) in str(info.value)


def test_missing_file_folder_and_single_npy(tmp_path):
    with pytest.raises(UsageError, match=r"nope\.npz does not exist"):
        load_stats(tmp_path / "nope.npz")
    with pytest.raises(UsageError, match="is a folder"):
        load_stats(tmp_path)
    npy = tmp_path / "mu.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(UsageError, match=r"mu\.npy holds a single array"):
        load_stats(npy)


def test_member_that_is_not_an_array(tmp_path):
    path = tmp_path / "odd.npz"
    mu, sigma = random_stats()
    write_npz(path, sigma=sigma)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("mu.npy", b"not numpy data")
    with pytest.raises(UsageError, match=r"odd\.npz: .*'mu'"):
        load_stats(path)


def test_save_validates_its_input(tmp_path):
    with pytest.raises(UsageError, match=r"must end in \.npz"):
        save_stats(tmp_path / "stats.bin", *random_stats(), META)
    with pytest.raises(UsageError, match="folder"):
        save_stats(tmp_path / "missing" / "stats.npz", *random_stats(), META)
    mu, sigma = random_stats()
    with pytest.raises(UsageError, match="refusing to write.*mu contains NaN"):
        save_stats(tmp_path / "stats.npz", np.full_like(mu, np.nan), sigma, META)
    assert os.listdir(tmp_path) == []


def test_save_accepts_tensors(tmp_path):
    import torch

    mu, sigma = random_stats()
    save_stats(tmp_path / "t.npz", torch.from_numpy(mu).float(), torch.from_numpy(sigma), META)
    mu2, sigma2, _ = load_stats(tmp_path / "t.npz")
    np.testing.assert_allclose(mu2, mu, rtol=1e-6)
    np.testing.assert_array_equal(sigma2, sigma)


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "stats.npz"
    save_stats(path, *random_stats(seed=1), META)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        save_stats(path, *random_stats(seed=2), META)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["stats.npz"]
