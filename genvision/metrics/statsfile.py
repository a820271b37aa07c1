"""FID statistics files: `.npz` archives readable by pytorch-fid and clean-fid, plus extractor metadata.

Layout: ``mu`` (D,) and ``sigma`` (D, D) float64, what pytorch-fid's `compute_statistics_of_path` reads (FID:
Heusel et al. 2017, arXiv:1706.08500), plus the fields of `StatsMetadata` as 0-d arrays of plain dtypes (never
object arrays, so ``allow_pickle=False`` always suffices). Entry points: `save_stats` (atomic) and `load_stats`.

FIDs compare only within one feature space on one image geometry, so `load_stats` checks the identity fields
(extractor, hash, size, channels, resize) against the caller's ``expected``; a file without a ``resize`` field reads
as `LEGACY_RESIZE`. The ``resize`` field names the whole path images took to the extractor: ``pad28+...`` says
that 28-px images were padded to 32 px first (`imageconv.pads_digits`), so files of the earlier rule (which resized
them instead: ``bicubic-antialias``, ``tf1-bilinear``, or no field) are refused. A file without metadata
(pytorch-fid, clean-fid) loads when nothing is expected and is refused otherwise, since nothing shows which extractor
computed it.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from genvision.errors import UsageError
from genvision.fileio import atomic_write, check_output_path
from genvision.version import __version__


@dataclass(frozen=True)
class StatsMetadata:
    """Where a statistics file's features came from. The first four fields and `resize` identify the feature space."""

    extractor: str
    extractor_hash: str
    image_size: int
    image_channels: int
    source: str = ""
    num_samples: int = 0
    genvision_version: str = __version__
    resize: str = "pad28+bicubic-antialias"  # how images reached image_size (extractors.BICUBIC_RESIZE, ...)
    channel_handling: str = ""  # e.g. "1-channel repeated to 3"; "" = images already had image_channels
    source_size: int = 0  # px of the (square) images before `resize`; 0 = not recorded

    def describe(self) -> str:
        """E.g. ``classifier@1a2b3c (32 px, 1 ch, pad28+bicubic-antialias resize)``."""
        return (f"{self.extractor}@{self.extractor_hash} ({self.image_size} px, {self.image_channels} ch, "
                f"{self.resize} resize)")

    def same_feature_space(self, other: StatsMetadata) -> bool:
        return (self.extractor, self.extractor_hash, self.image_size, self.image_channels, self.resize) == (
            other.extractor,
            other.extractor_hash,
            other.image_size,
            other.image_channels,
            other.resize,
        )


LEGACY_RESIZE = "bicubic-antialias"  # the resize of files written before `resize` was recorded (28-px not padded)
_OPTIONAL_KEYS = ("resize", "channel_handling", "source_size")  # absent from files of earlier versions
_STR_FIELDS = tuple(f.name for f in dataclasses.fields(StatsMetadata) if f.type in ("str", str))
_INT_FIELDS = tuple(f.name for f in dataclasses.fields(StatsMetadata) if f.type in ("int", int))
_META_KEYS = _STR_FIELDS + _INT_FIELDS
_REQUIRED_KEYS = tuple(key for key in _META_KEYS if key not in _OPTIONAL_KEYS)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; this module does not import torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _check_mu_sigma(where: str, mu: np.ndarray, sigma: np.ndarray, expected_dim: int | None = None) -> None:
    for key, arr in (("mu", mu), ("sigma", sigma)):
        if arr.dtype.kind not in "fiu":
            raise UsageError(f"{where}: {key} has dtype {arr.dtype}, expected floating point")
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise UsageError(
            f"{where}: expected mu of shape (D,) and sigma of shape (D, D), "
            f"got mu {tuple(mu.shape)} and sigma {tuple(sigma.shape)}"
        )
    if expected_dim is not None and mu.shape[0] != expected_dim:
        raise UsageError(
            f"{where} holds {mu.shape[0]}-dimensional statistics, expected {expected_dim} "
            "(the feature extractor's output size)"
        )
    for key, arr in (("mu", mu), ("sigma", sigma)):
        if not np.isfinite(arr).all():
            raise UsageError(f"{where}: {key} contains NaN or inf")


def save_stats(path: str | os.PathLike, mu: Any, sigma: Any, metadata: StatsMetadata) -> None:
    """Write ``mu`` (D,) and ``sigma`` (D, D) (numpy arrays or tensors) and `metadata` to `path` atomically.

    `path` must end in ``.npz``: pytorch-fid and clean-fid recognise statistics files by that suffix.
    """
    path = check_output_path(path, "stats file")
    if path.suffix != ".npz":
        raise UsageError(f"stats file {path} must end in .npz (pytorch-fid and clean-fid recognise it by that)")
    mu_arr = _to_numpy(mu).astype(np.float64)
    sigma_arr = _to_numpy(sigma).astype(np.float64)
    _check_mu_sigma(f"refusing to write stats file {path}", mu_arr, sigma_arr)
    arrays: dict[str, np.ndarray] = {"mu": mu_arr, "sigma": sigma_arr}
    for key in _STR_FIELDS:
        arrays[key] = np.array(str(getattr(metadata, key)))  # 0-d unicode ('<U…'), never object
    for key in _INT_FIELDS:
        arrays[key] = np.array(int(getattr(metadata, key)), dtype=np.int64)
    # Write through a file handle: given a filename lacking ".npz", np.savez would append the suffix and so miss
    # the temp file that atomic_write renames into place.
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **arrays)


def _read_array(archive: Any, key: str, where: str) -> np.ndarray:
    try:
        value = archive[key]
    except ValueError as exc:
        # numpy: "Object arrays cannot be loaded when allow_pickle=False".
        if "object arrays" in str(exc).lower():
            raise UsageError(f"{where}: {key!r} holds a pickled object array; refusing to unpickle") from None
        raise UsageError(f"{where}: array {key!r} is corrupt") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError):
        raise UsageError(f"{where}: array {key!r} is corrupt") from None
    if not isinstance(value, np.ndarray):  # NpzFile hands back raw bytes for a member that is not a .npy file
        raise UsageError(f"{where}: member {key!r} is not a numpy array")
    return value


def _read_metadata(archive: Any, where: str) -> StatsMetadata | None:
    present = [key for key in _META_KEYS if key in archive.files]
    if not present:
        return None
    missing = [key for key in _REQUIRED_KEYS if key not in archive.files]
    if missing:
        raise UsageError(f"{where} has incomplete metadata: missing {', '.join(missing)}")
    values: dict[str, Any] = {"resize": LEGACY_RESIZE}
    for key in _STR_FIELDS:
        if key in _OPTIONAL_KEYS and key not in archive.files:
            continue
        arr = _read_array(archive, key, where)
        if arr.shape != () or arr.dtype.kind != "U":
            raise UsageError(f"{where}: metadata {key!r} must be a string, got {arr.dtype} of shape {arr.shape}")
        values[key] = str(arr)
    for key in _INT_FIELDS:
        if key in _OPTIONAL_KEYS and key not in archive.files:
            continue
        arr = _read_array(archive, key, where)
        if arr.shape != () or arr.dtype.kind not in "iu":
            raise UsageError(f"{where}: metadata {key!r} must be an integer, got {arr.dtype} of shape {arr.shape}")
        values[key] = int(arr)
    return StatsMetadata(**values)


def load_stats(
    path: str | os.PathLike, expected: StatsMetadata | None = None, *, expected_dim: int | None = None
) -> tuple[np.ndarray, np.ndarray, StatsMetadata | None]:
    """Read a statistics file: (mu (D,) float64, sigma (D, D) float64, metadata or None for a pytorch-fid file).

    With `expected`, refuse a file whose extractor, extractor hash, image size, channel count or resize rule
    differ, or that has no metadata at all. With `expected_dim`, refuse a file whose D differs. Every problem is a
    one-line `UsageError` naming the file.
    """
    where = f"stats file {os.fspath(path)}"
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{where} is a folder, expected an .npz file") from None
    except PermissionError:
        raise UsageError(f"{where} cannot be read: permission denied") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile):
        # np.load refuses unknown bytes as "pickled data" (ValueError), truncated zips raise BadZipFile/EOFError.
        raise UsageError(f"{where} is not a valid .npz archive (expected a zip of arrays mu and sigma)") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise UsageError(f"{where} holds a single array, expected an .npz archive with arrays mu and sigma")
    with loaded as archive:
        for key in ("mu", "sigma"):
            if key not in archive.files:
                raise UsageError(f"{where} has no {key!r} array (found: {', '.join(archive.files) or 'none'})")
        mu = _read_array(archive, "mu", where)
        sigma = _read_array(archive, "sigma", where)
        metadata = _read_metadata(archive, where)
    _check_mu_sigma(where, mu, sigma)
    if expected is not None:  # the extractor first: a file of another extractor is named as such, whatever its D
        if metadata is None:
            raise UsageError(
                f"{where} has no extractor metadata (a pytorch-fid or clean-fid file?), so it cannot be checked "
                f"against this run's extractor {expected.describe()}; recompute the statistics with genvision"
            )
        if not metadata.same_feature_space(expected):
            older = (not metadata.resize.startswith("pad28+") and expected.resize.startswith("pad28+")
                     and dataclasses.replace(metadata, resize=expected.resize).same_feature_space(expected))
            older_note = (" (statistics of the earlier rule, which resized 28-px images instead of padding them to 32 "
                          "px: recompute them)") if older else ""
            raise UsageError(
                f"{os.fspath(path)} was computed with extractor {metadata.describe()} "
                f"but this run uses {expected.describe()}{older_note}"
            )
    _check_mu_sigma(where, mu, sigma, expected_dim)
    return mu.astype(np.float64), sigma.astype(np.float64), metadata
