"""Classifier weight files: one self-describing safetensors file each, and the ones shipped in this folder.

A classifier file holds the state dict and, in the safetensors header metadata, ``kind = "classifier"``, the
architecture (JSON) and how it was trained (dataset, held-out accuracy, genvision version). `load_classifier` refuses
any other file in one line. `shipped_classifier("mnist5k")` returns the classifier trained by
``genvision train-classifier --out-dir runs/clf`` that ships with the package (see docs/train-classifier.md).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from genvision.errors import UsageError
from genvision.fileio import atomic_save, file_sha256
from genvision.models.classifier import Classifier, ClassifierArchitecture
from genvision.version import __version__

# The architecture in a file's metadata is `ClassifierArchitecture` under the file format's own names: the feature
# layer's width is recorded as "num_features" (files stay as they were, byte for byte, and so do their hashes, which
# name the FID extractor). A file without "pooling" and "multi_depth" was written by genvision 0.1.0, whose
# classifier averaged the last stage and took the feature layer alone as its FID features; one without
# "semantic_share" by genvision 0.2.0, whose calibration gave each FID block half of the variance.
FILE_NAMES = {"feature_width": "num_features"}  # field -> key in the file
FIELDS_OF_0_1_0 = {"pooling": "global-average", "multi_depth": False}  # the fields 0.1.0 files lack, as 0.1.0 built
FIELDS_OF_0_2_0 = {"semantic_share": 0.5}  # the field 0.2.0 (and 0.1.0) files lack, as 0.2.0 calibrated

WEIGHTS_DIR = Path(__file__).resolve().parent
SHIPPED = {"mnist5k": WEIGHTS_DIR / "classifier-mnist5k.safetensors"}


def save_classifier(model: Classifier, path: str | Path, info: dict) -> None:
    """Write `model` and its architecture + `info` (dataset, accuracy, ...) to one safetensors file, atomically."""
    from safetensors.torch import save_file

    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    metadata = {
        "kind": "classifier",
        "architecture": json.dumps(architecture_record(model.architecture)),
        "info": json.dumps(info),
        "genvision_version": __version__,
    }
    atomic_save(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def architecture_record(architecture: ClassifierArchitecture) -> dict:
    """The architecture as a file records it (`FILE_NAMES`), in field order."""
    return {FILE_NAMES.get(name, name): value for name, value in dataclasses.asdict(architecture).items()}


def architecture_from_record(record: dict) -> ClassifierArchitecture:
    """The architecture a file records (`FILE_NAMES`; the fields an earlier file lacks as its version built
    them); a TypeError for an unknown key."""
    keys = {key: name for name, key in FILE_NAMES.items()}
    recorded = {keys.get(key, key): value for key, value in record.items()}
    return ClassifierArchitecture(**{**FIELDS_OF_0_1_0, **FIELDS_OF_0_2_0, **recorded})


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> tuple[Classifier, dict]:
    """(Classifier in eval mode, info) from a file written by `save_classifier`, or a one-line UsageError."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"classifier file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise UsageError(f"{path} is not a safetensors classifier file ({error})") from None
    if metadata.get("kind") != "classifier":
        raise UsageError(f"{path} is not a genvision classifier (kind {metadata.get('kind')!r}, "
                         f"expected 'classifier')")
    try:
        architecture = architecture_from_record(json.loads(metadata["architecture"]))
        model = Classifier(**dataclasses.asdict(architecture))
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise UsageError(f"{path}: classifier weights do not match their architecture ({error})") from None
    info = json.loads(metadata.get("info", "{}"))
    info["sha256"] = file_sha256(path)
    info["path"] = str(path)
    return model.to(device).eval(), info


def shipped_classifier_path(dataset: str = "mnist5k") -> Path:
    """The shipped classifier file for `dataset` (by name, split ignored), or a UsageError naming --classifier."""
    name = dataset.partition(":")[0]
    if name not in SHIPPED:
        raise UsageError(f"no classifier ships for dataset {name!r} (only {', '.join(SHIPPED)}); train one with "
                         f"`genvision train-classifier --dataset {dataset}` and pass --classifier PATH")
    return SHIPPED[name]


def shipped_classifier(dataset: str = "mnist5k", device: torch.device | str = "cpu") -> tuple[Classifier, dict]:
    """The classifier that ships with genvision for `dataset` (currently mnist5k)."""
    return load_classifier(shipped_classifier_path(dataset), device)
