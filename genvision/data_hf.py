"""Datasets in the Hugging Face format: the ``hf:PATH[:SPLIT]`` dataset spec.

PATH is, tried in this order: a folder written by ``save_to_disk`` (read with ``datasets.load_from_disk``); a folder
of ``.parquet`` (else ``.arrow``) files, split by their names (`data_files`); with ``--download``, a Hub dataset id.
SPLIT is the text after the last ``:`` when it holds no ``/`` (`parse_hf`) and defaults to ``train``; the held-out
spec is the ``test`` split, else ``validation``, else the spec itself (`held_out_spec`). The image and label columns
are ``--image-column`` / ``--label-column``, else found by their feature type (`choose_columns`). Images decode
from the bytes a row stores; a row that stores only a path is read when the path lies inside the dataset's folder (a
Hub dataset: the download caches), never elsewhere (`stored_file`).

Entry points: `check_hf` (every check that loads nothing), `open_hf` (an `HFSource` for `data.open_source`) and
`local_splits` (for `config.held_out_dataset`). ``datasets`` (the extra ``genvision[hf]``), PIL and numpy are
imported only inside its functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from genvision.errors import UsageError

PREFIX = "hf:"
FILE_SPLITS = ("train", "validation", "test")  # the splits a data file's name can give
HELD_OUT_SPLITS = ("test", "validation")  # the held-out split of hf:PATH, the first one present
SPLIT_NAME = re.compile(r"\w+(\.\w+)*")  # the split names `datasets` accepts
FILE_SPLIT = re.compile(r"(train|validation|test)(?![A-Za-z0-9])")
INTEGER_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
MISSING_PACKAGE = "hf: datasets need the 'datasets' package: pip install 'genvision[hf]'"


# ---------------------------------------------------------------------------------------------------------------
# The spec and a local dataset's splits: read from the file names, without the datasets package.


def parse_hf(spec: str) -> tuple[str, str]:
    """``hf:PATH[:SPLIT]`` -> (PATH, SPLIT; "" when not given), or a one-line UsageError.

    SPLIT is the text after the last ``:`` when it holds no ``/``, and must be a split name (letters, digits, ``_``
    and ``.``), so a PATH holding a ``:`` ends with ``/`` (``hf:my:data/``).
    """
    body = spec[len(PREFIX):]
    head, colon, tail = body.rpartition(":")
    path, split = (head, tail) if colon and "/" not in tail and os.sep not in tail else (body, "")
    if not path:
        raise UsageError(f"dataset spec {spec!r} needs a path, e.g. hf:path/to/saved or hf:path/to/saved:test")
    if colon and not tail:
        raise UsageError(f"dataset spec {spec!r} ends with ':'; expected hf:PATH or hf:PATH:SPLIT")
    if split and not SPLIT_NAME.fullmatch(split):
        raise UsageError(f"{split!r} in {spec} is not a split name (letters, digits, _ and .); a PATH holding ':' "
                         "must end with '/'")
    return path, split


def spec_text(path: str, split: str) -> str:
    """(PATH, SPLIT) -> ``hf:PATH:SPLIT`` (``hf:PATH`` when SPLIT is empty); `parse_hf` reads it back."""
    return f"{PREFIX}{path}:{split}" if split else f"{PREFIX}{path}"


def saved_layout(root: Path) -> str:
    """How a local folder holds its dataset: "dict" (DatasetDict.save_to_disk), "single" (Dataset.save_to_disk) or
    "files" (parquet or arrow files)."""
    if (root / "dataset_dict.json").is_file():
        return "dict"
    return "single" if (root / "state.json").is_file() else "files"


def file_split(relative: Path) -> str:
    """The split a data file's name, else the nearest folder's name, gives (`FILE_SPLITS`); "" when none does."""
    for name in (relative.name, *reversed(relative.parent.parts)):
        match = FILE_SPLIT.match(name)
        if match:
            return match.group(1)
    return ""


def data_files(root: Path) -> dict[str, list[Path]]:
    """Split -> the sorted .parquet files under `root` (else its .arrow files), at any depth.

    A file belongs to split ``train``, ``validation`` or ``test`` when its name, or else the name of a folder it lies
    in, starts with that word followed by ``-``, ``_``, ``.`` or nothing: ``train-00000-of-00002.parquet``,
    ``data/test-00000-of-00001.parquet``, ``validation.parquet``, ``test/0000.parquet`` (the layouts ``datasets`` and
    the Hub write). When no file names a split, all of them are split ``train``; when some do, every file must.
    """
    def found(suffix: str) -> list[Path]:
        return sorted(p for p in root.rglob(f"*{suffix}") if p.is_file()
                      and not any(part.startswith(".") for part in p.relative_to(root).parts))

    files = found(".parquet") or found(".arrow")
    if not files:
        raise UsageError(f"{root} holds neither a dataset written by save_to_disk (dataset_dict.json or state.json) "
                         "nor .parquet or .arrow files")
    splits = {file: file_split(file.relative_to(root)) for file in files}
    if not any(splits.values()):
        return {"train": files}
    unnamed = [file for file, split in splits.items() if not split]
    if unnamed:
        raise UsageError(f"cannot tell the split of {unnamed[0]}: other files under {root} name theirs; expected "
                         "names such as train-00000-of-00001.parquet (train, validation or test), or folders of "
                         "those names")
    by_split: dict[str, list[Path]] = {}
    for file, split in splits.items():
        by_split.setdefault(split, []).append(file)
    return {split: by_split[split] for split in FILE_SPLITS if split in by_split}


def local_splits(path: str) -> tuple[str, ...] | None:
    """The splits of the dataset in the local folder `path` (() for one saved without splits); None when `path` is
    not a local file or folder (a Hub id). A file that is not a folder is a one-line UsageError."""
    root = Path(path)
    if not root.exists():
        return None
    if not root.is_dir():
        raise UsageError(f"{path} is not a folder; expected a folder written by save_to_disk, or of parquet or "
                         "arrow files")
    layout = saved_layout(root)
    if layout == "single":
        return ()
    if layout == "files":
        return tuple(data_files(root))
    try:
        splits = json.loads((root / "dataset_dict.json").read_text())["splits"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"{root / 'dataset_dict.json'} is unreadable: {type(error).__name__}: {error}") from None
    return tuple(str(split) for split in splits)


def resolve_split(path: str, split: str, splits: tuple[str, ...] | None) -> str:
    """The split `hf:PATH[:SPLIT]` reads: SPLIT, else ``train`` ("" for a dataset saved without splits), checked
    against the local dataset's `splits` (None: a Hub id, checked when it loads)."""
    if splits == ():
        if split:
            raise UsageError(f"{path} holds one dataset saved without splits (Dataset.save_to_disk); drop "
                             f"':{split}'")
        return ""
    chosen = split or "train"
    if splits is not None and chosen not in splits:
        hint = "" if split else f"; name one, e.g. {spec_text(path, splits[0])}"
        raise UsageError(f"{path} has no split {chosen!r}; its splits: {', '.join(splits)}{hint}")
    return chosen


def check_hf(path: str, split: str, download: bool) -> str:
    """Every check of ``hf:PATH[:SPLIT]`` that loads nothing: the datasets package, a local folder (or --download
    for a Hub id), the split. Returns the split read ("" for a dataset saved without splits)."""
    import_datasets()
    splits = local_splits(path)
    if splits is None and not download:
        raise UsageError(f"{path} is not a local folder; --download fetches the Hub dataset {path}")
    return resolve_split(path, split, splits)


def held_out_spec(spec: str) -> str:
    """The held-out spec of ``hf:PATH[:SPLIT]``: its test split, else its validation split, else `spec` itself; a
    Hub id's test split."""
    path, _ = parse_hf(spec)
    splits = local_splits(path)
    for split in HELD_OUT_SPLITS:
        if (splits is None and split == "test") or (splits and split in splits):
            return spec_text(path, split)
    return spec


def identity(path: str, split: str) -> tuple[str, str]:
    """(resolved folder or Hub id, split read): equal for two specs of the same images."""
    splits = local_splits(path)
    return (str(Path(path).resolve()) if splits is not None else path), resolve_split(path, split, splits)


# ---------------------------------------------------------------------------------------------------------------
# Loading.


def import_datasets():
    """The `datasets` module, or a one-line UsageError naming the extra that installs it."""
    try:
        import datasets
    except ImportError:
        raise UsageError(MISSING_PACKAGE) from None
    return datasets


@contextlib.contextmanager
def quiet(datasets):
    """No progress bars or info logging from `datasets` (a command's stderr stays its own), restored afterwards."""
    bars, verbosity = not datasets.utils.are_progress_bars_disabled(), datasets.utils.logging.get_verbosity()
    datasets.utils.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()
    try:
        yield
    finally:
        datasets.utils.logging.set_verbosity(verbosity)
        if bars:
            datasets.utils.enable_progress_bars()


@dataclass
class HFSource:
    """An opened hf: dataset: what `data.open_source` needs, and the columns chosen."""

    spec: str  # hf:PATH[:SPLIT] with the split read
    num_items: int
    load: Callable  # index -> (PIL image, label)
    num_classes: int
    native_channels: int  # 1 when the first image is grayscale, else 3
    fingerprint: str
    image_column: str
    label_column: str  # "" = no labels
    columns: str  # every column with its feature, for messages: "image (Image), label (ClassLabel with 2 classes)"
    labels: Any = None  # int64 (N,) numpy array of every row's label (all 0 without a label column)
    class_names: tuple[str, ...] = ()  # a ClassLabel column's names; () for an integer column or none


def describe_feature(datasets, feature) -> str:
    """``Image``, ``ClassLabel, 2 classes``, ``int64``, ``string``, ``Sequence``, ..."""
    if isinstance(feature, datasets.ClassLabel):
        return f"ClassLabel with {feature.num_classes} classes"
    if isinstance(feature, datasets.Value):
        return str(feature.dtype)
    return type(feature).__name__


def is_labels(datasets, feature) -> bool:
    return isinstance(feature, datasets.ClassLabel) or (isinstance(feature, datasets.Value)
                                                         and feature.dtype in INTEGER_DTYPES)


def choose_columns(datasets, features, image_column: str, label_column: str, what: str) -> tuple[str, str, str]:
    """(image column, label column or "", the columns found); a column asked for that is missing or of the wrong
    kind is a one-line UsageError listing the columns found.

    The images are the column `image_column`, else the first column whose feature is ``datasets.Image``; the labels
    the column `label_column` (a ClassLabel or integer column), else ``label`` when it is one, else none (every label
    0, one class).
    """
    columns = ", ".join(f"{name} ({describe_feature(datasets, feature)})" for name, feature in features.items())
    for flag, column in (("--image-column", image_column), ("--label-column", label_column)):
        if column and column not in features:
            raise UsageError(f"{what} has no column {column!r} ({flag}); its columns: {columns}")
    if image_column and not isinstance(features[image_column], datasets.Image):
        raise UsageError(f"column {image_column!r} of {what} is {describe_feature(datasets, features[image_column])}, "
                         f"not an image column (datasets.Image); its columns: {columns}")
    if label_column and not is_labels(datasets, features[label_column]):
        raise UsageError(f"column {label_column!r} of {what} is {describe_feature(datasets, features[label_column])}, "
                         f"not labels (a ClassLabel or integer column); its columns: {columns}")
    if not image_column:
        image_column = next((name for name, feature in features.items() if isinstance(feature, datasets.Image)), "")
        if not image_column:
            raise UsageError(f"{what} has no image column (feature datasets.Image); its columns: {columns}; name "
                             "one with --image-column")
    if not label_column and "label" in features and is_labels(datasets, features["label"]):
        label_column = "label"
    return image_column, label_column, columns


def read_labels(datasets, dataset, column: str, what: str):
    """(int64 labels (N,) as a numpy array, number of classes); all 0 and 1 class without a label column."""
    import numpy as np
    import pyarrow

    if not column:
        return np.zeros(len(dataset), dtype=np.int64), 1
    values = dataset.with_format("arrow")[column]
    if isinstance(values, pyarrow.ChunkedArray):
        values = values.combine_chunks()
    if values.null_count:
        raise UsageError(f"label column {column!r} of {what} has {values.null_count} empty rows")
    labels = values.to_numpy(zero_copy_only=False).astype(np.int64)
    if len(labels) and labels.min() < 0:
        row = int(np.argmax(labels < 0))
        raise UsageError(f"label column {column!r} of {what} holds {labels[row]} (no label) at row {row}; expected "
                         "labels >= 0")
    feature = dataset.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return labels, feature.num_classes
    return labels, int(labels.max()) + 1 if len(labels) else 1


def image_folders(datasets, path: str, local: bool) -> tuple[Path, ...]:
    """Where the image files of rows that store a path instead of bytes may lie: the dataset's own folder (a local
    dataset), else the caches that ``datasets`` and ``huggingface_hub`` download a Hub dataset's files into."""
    if local:
        return (Path(path).resolve(),)
    import huggingface_hub.constants

    return tuple(Path(folder).resolve() for folder in (datasets.config.HF_DATASETS_CACHE,
                                                       huggingface_hub.constants.HF_HUB_CACHE))


def stored_file(path: str, folders: tuple[Path, ...], index: int, what: str, column: str) -> Path:
    """The file a row without image bytes names, when it resolves inside one of `folders` (links followed); else a
    one-line UsageError naming the row, so that a data file never makes genvision read a file outside the dataset."""
    resolved = Path(path).resolve()
    if not any(resolved.is_relative_to(folder) for folder in folders):
        where = f"the dataset's folder {folders[0]}" if len(folders) == 1 else "the Hugging Face caches"
        raise UsageError(f"row {index} of {what} stores no image bytes in column {column!r}, only the path {path}, "
                         f"which leads outside {where}; genvision reads no image files from elsewhere (store the "
                         "images' bytes, e.g. with save_to_disk)")
    return resolved


def open_stored_image(item, index: int, what: str, column: str, folders: tuple[Path, ...]):
    """A stored image (``{"bytes", "path"}`` as ``datasets.Image(decode=False)`` gives it) -> a fully decoded PIL
    image, or a one-line UsageError naming the row. A row without bytes is read from its path only when that is a
    regular file inside `folders` (`stored_file`); every image is held to `imagefile`'s pixel limit."""
    from genvision import imagefile

    if not item or (item.get("bytes") is None and not item.get("path")):
        raise UsageError(f"row {index} of {what} has no image in column {column!r}")
    name = f"{index} of {what} (column {column!r})"
    if item.get("bytes") is not None:
        return imagefile.decoded(item["bytes"], name)
    return imagefile.decoded(stored_file(item["path"], folders, index, what, column), name)


def files_fingerprint(files: list[Path], *parts: str) -> str:
    """16 hex digits of SHA-256 over each file's path, size and mtime, and `parts`."""
    listing = [f"{file.resolve()}:{file.stat().st_size}:{file.stat().st_mtime_ns}" for file in files]
    return hashlib.sha256("\n".join([*listing, *parts]).encode()).hexdigest()[:16]


def load_split(datasets, path: str, split: str, cache_dir: Path, what: str):
    """(the `datasets.Dataset` of the split, the local files that hold it; [] for a Hub dataset)."""
    root = Path(path)
    splits = local_splits(path)
    try:
        if splits is None:  # a Hub id (check_hf: only with --download); keep its download progress on stderr
            return datasets.load_dataset(path, split=split), []
        with quiet(datasets):
            layout = saved_layout(root)
            if layout == "files":
                files = data_files(root)[split]
                builder = "parquet" if files[0].suffix == ".parquet" else "arrow"
                dataset = datasets.load_dataset(builder, data_files={split: [str(f) for f in files]}, split=split,
                                                cache_dir=str(cache_dir))
                return dataset, files
            loaded = datasets.load_from_disk(str(root))
            folder = root / split if layout == "dict" else root
            return (loaded[split] if layout == "dict" else loaded), sorted(p for p in folder.rglob("*") if p.is_file())
    except UsageError:
        raise
    except Exception as error:  # datasets and the Hub raise many kinds (FileNotFoundError, ConnectionError, ...)
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        action = "download" if splits is None else "read"
        raise UsageError(f"cannot {action} {what}: {type(error).__name__}: {first_line}") from None


def open_hf(path: str, split: str, *, download: bool = False, image_column: str = "", label_column: str = "",
            cache_dir: Path) -> HFSource:
    """Open ``hf:PATH[:SPLIT]`` without decoding its images (`cache_dir`: where ``datasets`` keeps the arrow copy of
    parquet files). Every failure is a one-line UsageError.

    Each image reaches `data.prepare_image` as the PIL image its stored bytes (or file) decode to. The fingerprint
    naming its decode cache hashes the size and mtime of the split's files (a Hub dataset: its ``_fingerprint``)
    together with the split and both columns.
    """
    split = check_hf(path, split, download)
    datasets = import_datasets()
    what = spec_text(path, split)
    dataset, files = load_split(datasets, path, split, cache_dir, what)
    image_column, label_column, columns = choose_columns(datasets, dataset.features, image_column, label_column, what)
    if len(dataset) == 0:
        raise UsageError(f"{what} holds no rows")
    labels, num_classes = read_labels(datasets, dataset, label_column, what)
    images = dataset.select_columns([image_column]).cast_column(image_column, datasets.Image(decode=False))
    parts = (split, image_column, label_column)
    fingerprint = (files_fingerprint(files, *parts) if files else
                   hashlib.sha256("\n".join([dataset._fingerprint, *parts]).encode()).hexdigest()[:16])

    folders = image_folders(datasets, path, local=local_splits(path) is not None)

    def load(index: int):
        return open_stored_image(images[index][image_column], index, what, image_column, folders), int(labels[index])

    first = load(0)[0]
    feature = dataset.features[label_column] if label_column else None
    names = tuple(feature.names) if isinstance(feature, datasets.ClassLabel) else ()
    return HFSource(what, len(dataset), load, num_classes, 1 if first.mode in GRAY_MODES else 3, fingerprint,
                    image_column, label_column, columns, labels, names)
