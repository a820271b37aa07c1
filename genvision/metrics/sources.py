"""Image sources for FID and friends: what a SOURCE string names, and the features and statistics of each.

A SOURCE is a generator (a run folder or checkpoint), a folder of images, an ``.npz`` statistics file or a dataset
spec (`resolve_source`). Every image reaches the extractor as uint8 (generators quantised exactly as PNG saving
does, `imageconv.to_uint8`) through one resize path (`extractors.resize_for_extractor`), so scoring a generator in
memory and scoring the PNGs it wrote give the same features (Parmar et al. 2022, clean-fid, arXiv:2104.11222).
On that path 28-px digits are padded to 32 px, as `data.prepare_image` pads dataset specs' digits
(`imageconv.pads_digits`): a folder of 28-px PNGs and the dataset spec they came from give the same features.
`extract` accumulates `stats.FeatureStats` (FID, Heusel et al. 2017), optionally keeping raw features (KID,
precision/recall) and classifier logits; `generated_statistics` is the one scoring path of generated samples
(training FID, the report, `fid` / `stats`). Reference statistics of dataset specs are cached
(`reference_cache_path`); folders and generators never are: their content changes. Asked for (`need_labels`), a
source also gives the label of each image in the order of its features, for the conditional metrics
(`metrics.conditional`): a dataset's labels, a folder's class subfolders, a conditional generator's requested
classes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections import deque
from itertools import islice
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from genvision import distributed
from genvision.errors import UsageError
from genvision.imageconv import DIGIT_PAD, DIGIT_SIDE, PADDED_DIGIT_SIDE, pads_digits, to_model_range
from genvision.metrics.extractors import (FeatureExtractor, channel_handling, extractor_side, full_float32,
                                          resize_for_extractor)
from genvision.metrics.stats import FeatureStats, limited_torch_threads
from genvision.metrics.statsfile import StatsMetadata, load_stats, save_stats

STATS_CACHE_FORMAT = 2  # bump when extraction changes, so stale reference statistics miss
GENERATOR_KINDS = ("gan", "vae")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


# ---------------------------------------------------------------------------------------------------------------
# Resolving a SOURCE string.


@dataclass(frozen=True)
class Source:
    """A resolved SOURCE: `kind` is "folder", "stats", "generator" or "dataset"."""

    text: str
    kind: str
    path: Path | None = None
    spec: str = ""  # normalised dataset spec, for kind "dataset"

    def __str__(self) -> str:
        return self.text


def is_run_folder(path: Path) -> bool:
    """A training run folder: holds ``checkpoints/`` or a config.json of kind gan or vae."""
    if (path / "checkpoints").is_dir():
        return True
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("kind") in GENERATOR_KINDS
    except (OSError, ValueError, AttributeError):
        return False


def is_inside_checkpoints(path: Path) -> bool:
    """`path` is a ``checkpoints/`` folder or lies below one."""
    return "checkpoints" in path.absolute().parts


def looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.endswith(".npz")


def resolve_source(text: str) -> Source:
    """Classify a SOURCE string; a one-line UsageError when it names nothing. Tried in this order:

    1. an existing folder: a training run folder (holding ``checkpoints/``, or a ``config.json`` whose ``kind`` is
       ``gan`` or ``vae``) or a folder inside ``checkpoints/`` is a generator (prior samples; with
       ``SourceOptions.reconstructions`` a VAE's reconstructions of that dataset split instead); any other folder
       is a folder of images (``folder:PATH`` means the same);
    2. an existing ``.npz`` file: FID statistics (mu, sigma), checked against the extractor's metadata;
    3. any other existing file: a generator checkpoint;
    4. otherwise a dataset spec (``mnist5k:train``, ``cifar10:test``, ...). A string that looks like a path (holds
       a ``/`` or ends in ``.npz``) but exists nowhere is "no such file or folder". ``hf:PATH[:SPLIT]`` is always a
       dataset spec (checked first: a Hub id holds a ``/``).
    """
    from genvision.data import IMAGE_EXTENSIONS, DatasetSpec

    if not text:
        raise UsageError("empty SOURCE; expected a folder, an .npz statistics file, a checkpoint or a dataset spec")
    if text.startswith("folder:"):
        folder = Path(DatasetSpec.parse(text).path or "")
        if not folder.is_dir():  # said now, before an extractor is chosen or loaded for it
            raise UsageError(f"{text}: folder {folder} does not exist" if not folder.exists()
                             else f"{text}: {folder} is not a folder")
        return Source(text, "folder", folder)
    if text.startswith("hf:"):
        return Source(text, "dataset", spec=str(DatasetSpec.parse(text)))
    path = Path(text)
    if path.is_dir():
        if is_run_folder(path) or is_inside_checkpoints(path):
            return Source(text, "generator", path)
        return Source(text, "folder", path)
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return Source(text, "stats", path)
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            raise UsageError(f"{text} is a single image; pass the folder that holds the images")
        return Source(text, "generator", path)
    if path.exists():
        raise UsageError(f"{text} is neither a file nor a folder")
    if looks_like_path(text):
        raise UsageError(f"no such file or folder: {text}")
    try:
        spec = DatasetSpec.parse(text)
    except UsageError as error:
        raise UsageError(f"{text} is not a file, a folder or a dataset spec: {error}") from None
    return Source(text, "dataset", spec=str(spec))


# ---------------------------------------------------------------------------------------------------------------
# Feature extraction.


class GeometryNotes:
    """Says once per source on stderr that 28-px digits are padded, once that images are resized, and once that
    channels are converted; remembers the channel counts and sides it saw, for the protocol notes of the source's
    statistics (`protocol`)."""

    def __init__(self, name: str, extractor: FeatureExtractor) -> None:
        self.name, self.extractor = name, extractor
        self._said: set[str] = set()
        self._lock = threading.Lock()
        self.channels_seen: set[int] = set()
        self.sides_seen: set[int] = set()

    def protocol(self) -> dict:
        """The `StatsMetadata` protocol fields: how channels were handled and the images' side (0 when mixed)."""
        notes = sorted({channel_handling(c, self.extractor.input_channels) for c in self.channels_seen} - {""})
        return {"channel_handling": "; ".join(notes),
                "source_size": next(iter(self.sides_seen)) if len(self.sides_seen) == 1 else 0}

    def _say(self, key: str, message: str) -> None:
        with self._lock:
            if key in self._said:
                return
            self._said.add(key)
        if distributed.is_main():  # under torchrun: said once, not once per rank
            print(f"note: {self.name}: {message}", file=sys.stderr)

    def see(self, channels: int, height: int, width: int, side: int = 0) -> None:
        """Images of `channels` x `height` x `width` px, brought to `side` px (default: the extractor's input)."""
        size, target_channels = side or self.extractor.input_size, self.extractor.input_channels
        with self._lock:
            self.channels_seen.add(channels)
            self.sides_seen.add(min(height, width))
        what = f"the {self.extractor.describe()} extractor"
        if pads_digits(height, width, size):
            then = (f", then resized to {size}x{size} px (bicubic, antialiased)" if size != PADDED_DIGIT_SIDE
                    else "")
            self._say("pad", f"images of {DIGIT_SIDE}x{DIGIT_SIDE} px are padded with {DIGIT_PAD} px of black to "
                             f"{PADDED_DIGIT_SIDE}x{PADDED_DIGIT_SIDE} px, as dataset specs pad digits{then}, for "
                             f"{what}")
        elif (height, width) != (size, size) and self.extractor.resizes_internally and height == width:
            self._say("size", f"images of {height}x{width} px (and any other size) are resized to {size}x{size} px "
                              f"(bicubic, antialiased) to batch them with the first image's size")
        elif (height, width) != (size, size):
            self._say("size", f"images of {height}x{width} px (and any other size) are resized to {size}x{size} px "
                              f"for {what} (center square crop, bicubic, antialiased)")
        if channels != target_channels:
            how = "ITU-R 601-2 luma" if target_channels == 1 else "gray channel repeated"
            self._say("channels", f"{channels}-channel images are converted to {target_channels} channel(s) "
                                  f"for {what} ({how})")


def _batches_of(images: Tensor, batch_size: int) -> Iterator[Tensor]:
    for start in range(0, images.shape[0], batch_size):
        yield images[start : start + batch_size]


def extract(
    images: Tensor | Iterable[Tensor],
    extractor: FeatureExtractor,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    keep_features: bool = False,
    with_logits: bool = False,
    *,
    total: int | None = None,
    name: str = "images",
    notes: GeometryNotes | None = None,
) -> tuple[FeatureStats, Tensor | None]:
    """Feature statistics (and logits) of uint8 images: a (N, C, H, W) tensor or an iterable of such batches.

    Each batch goes through `resize_for_extractor` (a no-op when it already has the extractor's geometry), then
    `to_model_range`, then the extractor on `device`, in eval and inference mode; `notes` (a `GeometryNotes`)
    collects what the batches were, for the statistics' protocol notes. Batches on the host reach CUDA through
    pinned memory without blocking the host (`data.host_to_device`); batches already on `device` stay there.
    Returns (FeatureStats with raw features kept if `keep_features`, logits (N, num_classes) float32 on the CPU,
    copied there once at the end, if `with_logits` else None). A tqdm bar named `name` runs on stderr when stderr is
    a terminal.
    """
    from tqdm import tqdm

    from genvision.data import host_to_device

    if batch_size < 1:
        raise UsageError(f"--batch-size must be > 0, got {batch_size}")
    if with_logits and not extractor.num_classes:
        raise UsageError(f"the {extractor.describe()} extractor has no classifier head, so no logits")
    device = torch.device(device)
    extractor.to(device)
    if isinstance(images, Tensor):
        total = images.shape[0] if total is None else total
        batches: Iterable[Tensor] = _batches_of(images, batch_size)
    else:
        batches = images
    notes = notes or GeometryNotes(name, extractor)
    stats = FeatureStats(extractor.num_features, keep_features=keep_features, device=device)
    logits: list[Tensor] = []
    with torch.inference_mode(), tqdm(total=total, desc=f"features of {name}", unit="img", file=sys.stderr,
                                      leave=False, disable=None) as bar:
        for batch in batches:
            if batch.dtype != torch.uint8 or batch.ndim != 4:
                raise UsageError(f"{name}: expected uint8 (N, C, H, W) images, got {batch.dtype} "
                                 f"{tuple(batch.shape)}")
            if batch.shape[0] == 0:
                continue
            side = extractor_side(extractor, batch.shape[2], batch.shape[3])
            notes.see(batch.shape[1], batch.shape[2], batch.shape[3], side)
            batch = resize_for_extractor(host_to_device(batch, device), side, extractor.input_channels)
            with full_float32(device):  # TF32 and autocast off: GPU and CPU statistics agree (`full_float32`)
                features, batch_logits = extractor.features_and_logits(to_model_range(batch))
            stats.update(features)
            if with_logits:
                logits.append(batch_logits.float())
            bar.update(batch.shape[0])
    if not with_logits:
        return stats, None
    return stats, torch.cat(logits).cpu() if logits else torch.zeros(0, extractor.num_classes)


# ---------------------------------------------------------------------------------------------------------------
# Image folders: threaded decode, bounded prefetch.


def decode_array(path: str | Path) -> np.ndarray:
    """One image file -> uint8 array at its own size: (H, W) for grayscale modes (as L), else (H, W, 3) RGB.

    Same decoding and error message as `data.open_image`, without its defensive copy (this is the hot loop of
    scoring a folder).
    """
    from genvision import imagefile

    with imagefile.opened(path, str(path)) as image:  # a regular file of at most PIL.Image.MAX_IMAGE_PIXELS pixels
        image.load()
        if image.mode == "P":  # palette images may carry transparency; go through RGBA so PIL does not warn
            image = image.convert("RGBA")
        if image.mode not in ("L", "RGB"):
            image = image.convert("L" if image.mode in _GRAY_MODES else "RGB")
        return np.asarray(image, dtype=np.uint8)


def decode_native(path: str | Path) -> Tensor:
    """One image file -> uint8 tensor (C, H, W) at its own size: 1 channel for grayscale modes, else 3 (RGB)."""
    array = np.array(decode_array(path))  # writable, for torch
    tensor = torch.from_numpy(array)
    return tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)


def list_images(folder: Path) -> list[str]:
    """Image files under `folder` (any depth), sorted by path components like `data.list_folder`.

    The same selection (IMAGE_EXTENSIONS, case-insensitive) and the same one-line errors as `data.list_folder`,
    through ``os.walk`` and plain strings: ~10x faster on 10,000 files, which matters when scoring takes ~1 s.
    """
    from genvision.data import IMAGE_EXTENSIONS, list_folder

    found: list[str] = []
    if folder.is_dir():
        for root, _, names in os.walk(folder):
            found.extend(os.path.join(root, name) for name in names if name.lower().endswith(IMAGE_EXTENSIONS))
    if not found:
        list_folder(str(folder))  # raises its one-line error: missing, not a folder, or no images
    found.sort(key=lambda path: path.split(os.sep))
    return found


def _decode_group(files: Sequence[str | Path], size: int, channels: int, notes: GeometryNotes) -> Tensor:
    """Decode `files` and bring each to the extractor's geometry: uint8 (n, channels, size, size).

    Images already at the extractor's geometry are copied straight into the output array (the common case of a
    generator's PNGs); the others go through `resize_for_extractor` (28-px digits padded to 32 px, then resized).
    """
    out = np.empty((len(files), channels, size, size), dtype=np.uint8)
    for index, path in enumerate(files):
        array = decode_array(path)
        image_channels = 1 if array.ndim == 2 else 3
        notes.see(image_channels, array.shape[0], array.shape[1], size)
        if array.shape[:2] == (size, size) and image_channels == channels:
            out[index] = array if array.ndim == 2 else array.transpose(2, 0, 1)
            continue
        image = torch.from_numpy(np.array(array))
        image = image[None] if image.ndim == 2 else image.permute(2, 0, 1)
        out[index] = resize_for_extractor(image[None], size, channels)[0].numpy()
    return torch.from_numpy(out)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def split_cpu_cores(device: torch.device) -> tuple[int, int]:
    """(decode threads, torch intra-op threads) for scoring a folder on `device`.

    On the CPU, decoding and the forward pass share the cores: give decoding a quarter (at least one) and torch the
    rest, never more than it had. Oversubscribing them (torch's OpenMP team plus decode threads on the same cores)
    stalls OpenMP's barriers: on a 2-core machine that made the forward pass several times slower. On an
    accelerator, decoding gets up to 8 threads and torch keeps its setting.
    """
    cores = available_cores()
    if device.type != "cpu":
        return min(8, cores), torch.get_num_threads()
    decode = max(1, cores // 4)
    return decode, max(1, min(torch.get_num_threads(), cores - decode))


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) in px of one image file, read from its header."""
    from genvision import imagefile

    with imagefile.opened(path, str(path)) as image:
        return image.height, image.width


def folder_batches(files: Sequence[str | Path], extractor: FeatureExtractor, batch_size: int, name: str,
                   workers: int | None = None, notes: GeometryNotes | None = None) -> Iterator[Tensor]:
    """uint8 batches at the extractor's geometry, decoded by a thread pool (PIL and torch release the GIL).

    The geometry is the extractor's input size, or for an extractor that resizes inside its network the square at
    the first image's shorter side (`extractor_side`: 32 px for 28-px digits, padded). At most two batches are
    decoded ahead of the one being scored, so memory stays O(batch) for any folder size.
    """
    workers = workers or min(8, os.cpu_count() or 1)
    notes = notes or GeometryNotes(name, extractor)
    channels = extractor.input_channels
    size = extractor_side(extractor, *image_size(files[0])) if extractor.resizes_internally and files else (
        extractor.input_size)
    group = max(1, -(-batch_size // (2 * workers)))  # each task decodes a slice: fewer futures than files
    starts = iter(range(0, len(files), batch_size))

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        def submit(start: int):
            chunk = files[start : start + batch_size]
            return [pool.submit(_decode_group, chunk[i : i + group], size, channels, notes)
                    for i in range(0, len(chunk), group)]

        pending = deque(submit(start) for start in islice(starts, 3))
        while pending:
            futures = pending.popleft()
            following = next(starts, None)
            if following is not None:
                pending.append(submit(following))
            yield torch.cat([future.result() for future in futures])


# ---------------------------------------------------------------------------------------------------------------
# Statistics of a source.


@dataclass
class SourceOptions:
    """How sources are read: batch size, device, generator sampling, dataset decoding, the reference cache."""

    batch_size: int = 500
    device: torch.device | str = "cpu"
    num_samples: int = 5000  # images drawn from generator sources
    seed: int = 0  # generator latent noise
    data_root: str = "data"  # torchvision datasets
    dataset_resolution: int = 0  # px at which dataset specs are decoded; 0 = `default_dataset_resolution`
    use_cache: bool = True
    download: bool = False  # let torchvision fetch a missing dataset of a dataset spec (hf: a Hub dataset)
    image_column: str = ""  # hf: dataset specs: their image column ("" = the first datasets.Image one)
    label_column: str = ""  # hf: dataset specs: their label column ("" = label when present)
    cache_dir: Path | None = None  # None = default_cache_dir() / "stats"
    reconstructions: str = ""  # dataset spec: VAE generators give their reconstructions of it, not prior samples
    prior: str = "auto"  # latents of generator samples: auto (a VAE run's saved --prior, else normal), normal, gmm

    def stats_cache_dir(self) -> Path:
        from genvision.data import default_cache_dir

        return Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir() / "stats"


@dataclass
class SourceStatistics:
    """FID statistics of one source, plus raw features and logits when they were asked for and exist."""

    source: str
    kind: str
    count: int
    mu: np.ndarray  # (D,) float64
    sigma: np.ndarray  # (D, D) float64
    features: Tensor | None = None  # (N, D)
    logits: Tensor | None = None  # (N, num_classes)
    from_cache: bool = False
    metadata: StatsMetadata | None = field(default=None, repr=False)
    # With need_labels: int64 (N,) in the order of the features: a dataset's labels, a folder's class subfolder
    # indices, a conditional generator's requested labels; None when the source has none (`source_statistics`).
    labels: Tensor | None = None
    class_names: tuple[str, ...] = ()  # names of the labels where known: a folder's subfolders, a generator's classes


def default_dataset_resolution(extractor: FeatureExtractor) -> int:
    """The side at which dataset specs are decoded (like training) before `resize_for_extractor`.

    The classifier's own input size; for other extractors (Inception's 299 px) the training default of
    `config.DataConfig` (32 px), so a dataset and a generator trained on it are upsampled the same way.
    """
    from genvision.config import DataConfig
    from genvision.metrics.extractors import CLASSIFIER_ID

    if extractor.extractor_id == CLASSIFIER_ID:
        return extractor.input_size
    return DataConfig().resolution


def _require_two(name: str, count: int) -> None:
    if count < 2:
        raise UsageError(f"{name} gives {count} image{'s' if count != 1 else ''}; FID statistics need at least 2")


def combine_shards(stats: FeatureStats, logits: Tensor | None, notes: GeometryNotes | None = None
                   ) -> Tensor | None:
    """Under torchrun, turn this rank's statistics of its shard (`distributed.shard_range`) into those of the whole
    source, on every rank: float64 sums (n, sum x, sum x xᵀ) added across ranks, raw features and logits gathered
    in rank order (the one-process order), the geometry notes merged. Returns the gathered logits; a no-op in one
    process. A collective: every rank calls it once per source."""
    if distributed.world_size() == 1:
        return logits
    stats.reduce_across_processes(distributed.all_reduce_sum, gather=distributed.all_gather_rows)
    if notes is not None:
        seen = [None] * distributed.world_size()
        torch.distributed.all_gather_object(seen, (sorted(notes.channels_seen), sorted(notes.sides_seen)))
        for channels, sides in seen:
            notes.channels_seen.update(channels)
            notes.sides_seen.update(sides)
    return None if logits is None else distributed.all_gather_rows(logits)


def _from_feature_stats(name: str, kind: str, stats: FeatureStats, logits: Tensor | None,
                        extractor: FeatureExtractor, notes: GeometryNotes, sharded: bool = True) -> SourceStatistics:
    """SourceStatistics of a source's features; `sharded`: this rank saw only its shard (`combine_shards`)."""
    if sharded:
        logits = combine_shards(stats, logits, notes)
    _require_two(name, stats.count)
    mu, sigma = stats.mean_and_covariance()
    features = stats.features().cpu() if stats.keep_features else None
    return SourceStatistics(name, kind, stats.count, mu.cpu().numpy(), sigma.cpu().numpy(), features, logits,
                            metadata=extractor.metadata(name, stats.count, **notes.protocol()))


def generated_statistics(images: Tensor | Sequence[Tensor], extractor: FeatureExtractor, batch_size: int = 500,
                         device: torch.device | str = "cpu", *, name: str = "generated", need_features: bool = False,
                         need_logits: bool = False, sharded: bool = True) -> SourceStatistics:
    """The one scoring path of generated samples, for training FID, the report and `fid` / `stats` of a generator:
    uint8 (N, C, H, W) samples, or a sequence of such batches (left on the device they were made on, as training
    FID's are: no round trip through the host), -> `extract` -> statistics. `sharded`: `images` are this rank's
    block of the samples (`distributed.shard_range`), and the statistics returned on every rank are those of every
    rank's blocks together (`combine_shards`), so the Fréchet distance against them is the one-process value."""
    notes = GeometryNotes(name, extractor)
    total = None if isinstance(images, Tensor) else sum(batch.shape[0] for batch in images)
    stats, logits = extract(images, extractor, batch_size, device, need_features, need_logits, name=name,
                            notes=notes, total=total)
    return _from_feature_stats(name, "generator", stats, logits, extractor, notes, sharded=sharded)


def reference_cache_path(spec: str, resolution: int, extractor: FeatureExtractor, data_root: str,
                         cache_dir: Path, fingerprint: str = "") -> Path:
    """<dataset>-<split>-<res>px-<ch>ch-<extractor>-<hash16>[-<root8>|-<fingerprint>]-v<decode>.<stats>.npz; an hf:
    spec is ``hf-<name>`` (`data.cache_name`) with the `fingerprint` of its files and columns.

    Under ``default_cache_dir() / "stats"``: a `statsfile` ``.npz`` (mu, sigma, metadata; readable by pytorch-fid)
    plus a ``.features.safetensors`` sidecar (float32, never pickle) holding the logits (always, they are small) and
    the raw features (only once a run asked for them: for Inception on a large set they are hundreds of MB). A run
    that needs raw features and finds only mu/sigma recomputes the set and adds them."""
    from genvision.data import CACHE_FORMAT, DatasetSpec, cache_name

    parsed = DatasetSpec.parse(spec)
    name = (f"{cache_name(parsed)}-{resolution}px-{extractor.input_channels}ch-{extractor.extractor_id}-"
            f"{extractor.weights_hash[:16]}")
    if parsed.name == "hf":
        name += f"-{fingerprint}"
    elif parsed.name != "mnist5k":  # torchvision datasets: which copy was read
        name += "-" + hashlib.sha256(str(Path(data_root).resolve()).encode()).hexdigest()[:8]
    return cache_dir / f"{name}-v{CACHE_FORMAT}.{STATS_CACHE_FORMAT}.npz"


def sidecar_path(stats_path: Path) -> Path:
    return stats_path.with_suffix(".features.safetensors")


def _read_sidecar(path: Path, count: int) -> dict[str, Tensor]:
    """The cached raw features / logits (N, ...) and labels (N,) beside a reference stats file; {} when absent or
    inconsistent."""
    from safetensors.torch import load_file

    if not path.is_file():
        return {}
    try:
        tensors = load_file(str(path))
    except Exception:  # an unreadable cache is rebuilt, never trusted
        return {}
    return {key: value for key, value in tensors.items()
            if value.ndim == (1 if key == "labels" else 2) and value.shape[0] == count}


def _write_reference_cache(path: Path, result: SourceStatistics) -> None:
    """Sidecar first, then the .npz (which is what marks the cache entry as present)."""
    from safetensors.torch import save_file

    from genvision.fileio import atomic_save

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {key: value.detach().to(torch.float32).contiguous().cpu()
                   for key, value in (("features", result.features), ("logits", result.logits)) if value is not None}
        if result.labels is not None:  # int64, small: always cached with the logits
            tensors["labels"] = result.labels.detach().to(torch.int64).contiguous().cpu()
        side = sidecar_path(path)
        if tensors:
            atomic_save(side, lambda tmp: save_file(tensors, tmp, metadata={"num_samples": str(result.count)}))
        elif side.exists():
            side.unlink()
        assert result.metadata is not None
        save_stats(path, result.mu, result.sigma, result.metadata)
    except OSError as error:
        print(f"warning: cannot cache reference statistics in {path.parent} ({error}); they will be recomputed "
              "next time", file=sys.stderr)


def dataset_statistics(source: Source, extractor: FeatureExtractor, options: SourceOptions, *,
                       need_features: bool = False, need_logits: bool = False,
                       need_labels: bool = False) -> SourceStatistics:
    """Statistics of a dataset spec, through the on-disk reference cache (see the module docstring); with
    `need_labels` the dataset's labels too (whole on every rank, in the order of the features; cached beside the
    logits, so a cache entry written without them is recomputed once).

    Under torchrun the images are downloaded (--download) and decoded once per machine, by its local rank 0, which
    writes them to the decoded-image cache (`data.load_dataset`) while the other ranks wait
    (`distributed.local_main_first`, bounded by --process-group-timeout), then read that cache; every rank then
    extracts the features of its shard and the sums are combined (`combine_shards`)."""
    from genvision.data import DatasetSpec, hf_source, load_dataset

    resolution = options.dataset_resolution or default_dataset_resolution(extractor)
    parsed = DatasetSpec.parse(source.spec)
    fingerprint = ""
    if parsed.name == "hf":
        with distributed.local_main_first():  # with --download local rank 0 fetches the Hub dataset first
            fingerprint = hf_source(parsed, options.download, options.image_column, options.label_column).fingerprint
    path = reference_cache_path(source.spec, resolution, extractor, options.data_root, options.stats_cache_dir(),
                                fingerprint)
    need_logits = need_logits and bool(extractor.num_classes)
    if options.use_cache and distributed.all_agree(path.is_file()):  # every rank reads it, or every rank extracts
        try:
            mu, sigma, metadata = load_stats(path, extractor.metadata(), expected_dim=extractor.num_features)
        except UsageError:
            metadata = None  # a corrupt or foreign cache entry is recomputed, never trusted
        extras = _read_sidecar(sidecar_path(path), metadata.num_samples) if metadata and (
            need_features or need_logits or need_labels) else {}
        usable = metadata is not None and (not need_features or "features" in extras) and (
            not need_logits or "logits" in extras) and (not need_labels or "labels" in extras)
        if distributed.all_agree(usable):
            assert metadata is not None
            return SourceStatistics(str(source), source.kind, metadata.num_samples, mu, sigma,
                                    extras.get("features"), extras.get("logits"), True, metadata,
                                    labels=extras.get("labels") if need_labels else None)
    with distributed.local_main_first():
        data = load_dataset(source.spec, resolution, 0, options.data_root, options.download,
                            image_column=options.image_column, label_column=options.label_column)
    notes = GeometryNotes(str(source), extractor)
    shard = distributed.shard_range(len(data.images), options.batch_size)
    stats, logits = extract(data.images[shard.start:shard.stop], extractor, options.batch_size, options.device,
                            need_features, bool(extractor.num_classes), name=str(source), notes=notes)
    result = _from_feature_stats(str(source), source.kind, stats, logits, extractor, notes)
    result.labels = data.labels.to(torch.int64).cpu()  # every rank decoded every label: the one-process order
    if options.use_cache and distributed.is_main():
        _write_reference_cache(path, result)
    if not need_labels:
        result.labels = None
    return result


def generator_images(source: Source, options: SourceOptions, sharded: bool = False) -> Tensor:
    """uint8 (num_samples, C, H, W) samples of a generator checkpoint or run folder (`sampling.generate`), with
    latents of `options.prior` (--prior); `sharded`: only this rank's block of them (`sampling.generate_shard`).

    With `options.reconstructions` (a dataset spec) the generator must be a VAE, and gives instead its posterior-mean
    reconstructions of every image of that split (`generators.reconstruction_images`), whole on every rank.
    """
    return generator_samples(source, options, sharded)[0]


def generator_samples(source: Source, options: SourceOptions, sharded: bool = False, with_labels: bool = False
                      ) -> tuple[Tensor, Tensor | None, tuple[str, ...]]:
    """(`generator_images`, the requested labels of those samples, the generator's class names): `with_labels`, for
    a conditional generator the labels (this rank's block when `sharded`, `sampling.shard_labels`; all of them
    otherwise) are those `sampling.generate` drew with the training set's class frequencies; (images, None, ()) for
    an unconditional generator, for reconstructions and without `with_labels`."""
    if options.reconstructions:
        from genvision.generators import reconstruction_images

        images = reconstruction_images(str(source.path), options.reconstructions, options.batch_size,
                                       options.device, options.data_root)
        _require_two(f"{source} (reconstructions of {options.reconstructions})", images.shape[0])
        return images, None, ()
    try:
        from genvision.sampling import generate, generate_shard, load_generator
    except ImportError:
        raise UsageError(f"{source} looks like a generator checkpoint, but this genvision install cannot sample "
                         "generators (genvision.sampling is missing)") from None
    loaded = load_generator(str(source.path), device=options.device, prior=options.prior)
    images = (generate_shard(loaded, options.num_samples, options.seed, options.batch_size, options.device)
              if sharded else generate(loaded, options.num_samples, options.seed, options.batch_size, options.device))
    if images.dtype != torch.uint8:
        raise UsageError(f"{source}: the generator returned {images.dtype} images, expected uint8")
    labels = generator_labels(loaded, options, sharded) if with_labels else None
    return images, labels, tuple(loaded.class_names) if labels is not None else ()


def generator_labels(loaded, options: SourceOptions, sharded: bool) -> Tensor | None:
    """The class each sample of a loaded conditional generator was drawn for (int64 on the CPU): this rank's block
    when `sharded` (`sampling.shard_labels`, the blocks of `options.batch_size`), else all `options.num_samples`
    (`sampling.requested_labels`); None for an unconditional generator."""
    from genvision import sampling

    labels = (sampling.shard_labels(loaded, options.num_samples, options.seed, batch_size=options.batch_size)
              if sharded else sampling.requested_labels(loaded, options.num_samples, options.seed))
    return None if labels is None else labels.to(torch.int64).cpu()


def folder_labels(files: Sequence[str], root: Path) -> tuple[Tensor | None, tuple[str, ...]]:
    """(int64 labels (N,), class names) of image files under `root`, by their first-level subfolder as
    `data.list_folder` reads them (names sorted, label i = the i-th name); (None, ()) when some file lies directly
    in `root` or there is a single subfolder: no classes."""
    parts = [Path(os.path.relpath(file, root)).parts for file in files]
    if not parts or any(len(part) < 2 for part in parts):
        return None, ()
    names = sorted({part[0] for part in parts})
    if len(names) < 2:
        return None, ()
    index = {name: i for i, name in enumerate(names)}
    return torch.tensor([index[part[0]] for part in parts], dtype=torch.int64), tuple(names)


def source_statistics(source: Source | str, extractor: FeatureExtractor, options: SourceOptions | None = None, *,
                      need_features: bool = False, need_logits: bool = False,
                      need_labels: bool = False) -> SourceStatistics:
    """FID statistics of any SOURCE with `extractor`; raw features / logits too when asked for and available.

    Statistics files have neither: asking them for raw features is a UsageError; logits are simply None. With
    `need_labels`, `labels` (int64 (N,), in the order of the features, on every rank) and `class_names` where the
    source has them: a dataset spec's labels (`class_names` empty: matched by index), a folder's class subfolders
    (at least 2), a conditional generator's requested labels and class names; None for other sources.
    """
    options = options or SourceOptions()
    if isinstance(source, str):
        source = resolve_source(source)
    with_logits = need_logits and bool(extractor.num_classes)
    if source.kind == "stats":
        if need_features:
            raise UsageError(f"{source} is a statistics file (mu and sigma only), but --kid and --precision-recall "
                             "need raw features; pass the images, dataset or generator instead")
        mu, sigma, metadata = load_stats(source.path, extractor.metadata(), expected_dim=extractor.num_features)
        assert metadata is not None  # load_stats refuses files without metadata when `expected` is given
        if metadata.num_samples == 1:  # 0 = not recorded
            _require_two(str(source), metadata.num_samples)
        return SourceStatistics(str(source), source.kind, metadata.num_samples, mu, sigma, metadata=metadata)
    if source.kind == "dataset":
        return dataset_statistics(source, extractor, options, need_features=need_features,
                                  need_logits=with_logits, need_labels=need_labels)
    if source.kind == "folder":
        listed = list_images(source.path)
        shard = distributed.shard_range(len(listed), options.batch_size)
        files = listed[shard.start:shard.stop]
        decode_workers, torch_threads = split_cpu_cores(torch.device(options.device))
        notes = GeometryNotes(str(source), extractor)
        with limited_torch_threads(torch_threads):
            batches = folder_batches(files, extractor, options.batch_size, str(source), workers=decode_workers,
                                     notes=notes)
            # `notes` saw the files as decoded (`_decode_group`); `extract` gets them already at the extractor's
            # geometry, which its own notes would record as a second image side.
            stats, logits = extract(batches, extractor, options.batch_size, options.device, need_features,
                                    with_logits, total=len(files), name=str(source))
        result = _from_feature_stats(str(source), source.kind, stats, logits, extractor, notes)
        if need_labels:  # every rank listed every file: the labels are whole, in the one-process order
            result.labels, result.class_names = folder_labels(listed, source.path)
        return result
    if source.kind == "generator":
        # Samples are split by index across ranks; a VAE's reconstructions of a split are made whole on every rank.
        sharded = not options.reconstructions
        images, labels, class_names = generator_samples(source, options, sharded, with_labels=need_labels)
        result = generated_statistics(images, extractor, options.batch_size, options.device, name=str(source),
                                      need_features=need_features, need_logits=with_logits, sharded=sharded)
        if need_labels and labels is not None:  # gathered in rank order, like the features and logits
            result.labels = distributed.all_gather_rows(labels) if sharded else labels
            result.class_names = class_names
        return result
    raise ValueError(f"unknown source kind {source.kind!r}")
