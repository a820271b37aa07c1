"""Checkpoints: self-describing folders, committed atomically, loadable without unpickling code.

A checkpoint is a folder ``checkpoints/step-NNNNNN/`` (or ``checkpoints/best-step-NNNNNN/``) holding

- ``weights.safetensors``: every network's weights, keys prefixed by role (``generator.``, ``discriminator.``,
  ``generator_ema.``, ``vae.``, ...);
- ``state.pt``: optimizer states, grad scaler, RNG states, data-iterator position, fixed noise, best FID: plain
  tensors, numbers and strings, loaded with ``torch.load(weights_only=True)``;
- ``checkpoint.json``: kind (``gan``/``vae``), genvision version, step, the resolved config, metrics.

It is written into a hidden temp folder beside it, every file fsynced, then renamed into place, so a reader (or a
run killed at any moment) sees either no checkpoint or a complete one. Older ones are deleted only after the new one
is committed. `resolve_checkpoint` turns a run folder into its best checkpoint (else the latest). Pruning never
follows a symbolic link: a linked ``checkpoints/`` folder is left alone, a linked entry is removed as a link.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from genvision.errors import UsageError
from genvision.fileio import fsync_dir
from genvision.version import __version__

WEIGHTS_FILE, STATE_FILE, META_FILE = "weights.safetensors", "state.pt", "checkpoint.json"
STEP_PATTERN = re.compile(r"^(best-)?step-(\d+)$")


@dataclass
class Checkpoint:
    """A committed checkpoint folder: `meta` is checkpoint.json; weights and state load on demand."""

    path: Path
    meta: dict

    @property
    def kind(self) -> str:
        return self.meta.get("kind", "")

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))

    @property
    def config(self) -> dict:
        return self.meta.get("config", {})

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class names of a conditional run, in label order; () for unconditional runs and older checkpoints."""
        return tuple(str(name) for name in self.meta.get("class_names") or ())

    @property
    def class_counts(self) -> tuple[int, ...]:
        """Training images per class of a conditional run (order of `class_names`); () when unconditional."""
        return tuple(int(count) for count in self.meta.get("class_counts") or ())

    def weights(self, role: str, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The state dict of one network (`role` = prefix in weights.safetensors); empty if absent."""
        from safetensors.torch import load_file

        prefix = role + "."
        try:
            tensors = load_file(str(self.path / WEIGHTS_FILE), device=str(device))
        except Exception as error:  # noqa: BLE001 - any decoding failure means a corrupt file
            raise UsageError(f"checkpoint {self.path}: cannot read {WEIGHTS_FILE} ({error})") from None
        return {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}

    def roles(self) -> set[str]:
        from safetensors import safe_open

        with safe_open(str(self.path / WEIGHTS_FILE), framework="pt") as handle:
            return {key.split(".", 1)[0] for key in handle.keys()}

    def state(self) -> dict:
        """Training state (optimizers, RNGs, data position, ...), loaded with weights_only=True."""
        try:
            return torch.load(self.path / STATE_FILE, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - truncated/corrupt pickle of plain data
            raise UsageError(f"checkpoint {self.path}: cannot read {STATE_FILE} ({error})") from None


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def save_checkpoint(folder: Path, meta: dict, weights: dict[str, dict[str, torch.Tensor]], state: dict) -> Path:
    """Commit a checkpoint folder atomically (temp folder, fsync, rename). `weights` maps role -> state dict."""
    from safetensors.torch import save_file

    folder = Path(folder)
    if folder.exists() or folder.is_symlink():
        raise UsageError(f"checkpoint {folder} already exists; refusing to overwrite it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".tmp-{folder.name}-"))
    try:
        flat = {f"{role}.{key}": tensor.detach().cpu().contiguous()
                for role, state_dict in weights.items() for key, tensor in state_dict.items()}
        save_file(flat, str(temp / WEIGHTS_FILE), metadata={"kind": meta["kind"], "genvision_version": __version__})
        torch.save(state, temp / STATE_FILE)
        full_meta = {"kind": meta["kind"], "genvision_version": __version__, **meta}
        (temp / META_FILE).write_text(json.dumps(full_meta, indent=2) + "\n")
        for name in (WEIGHTS_FILE, STATE_FILE, META_FILE):
            _fsync_file(temp / name)
        os.chmod(temp, 0o755)
        fsync_dir(temp)
        os.rename(temp, folder)
        fsync_dir(folder.parent)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return folder


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Open a committed checkpoint folder (or a file inside one), or fail in one line."""
    path = Path(path)
    if path.is_file() and path.name in (WEIGHTS_FILE, STATE_FILE, META_FILE):
        path = path.parent
    if not path.exists():
        raise UsageError(f"checkpoint {path} does not exist")
    if path.is_file() and path.suffix == ".safetensors":
        kind = _weights_file_kind(path)
        raise UsageError(f"{path} is a {kind!r} weights file, not a checkpoint folder (expected {META_FILE}, "
                         f"{WEIGHTS_FILE}, {STATE_FILE} inside a folder)")
    if not path.is_dir() or not (path / META_FILE).is_file():
        raise UsageError(f"{path} is not a genvision checkpoint folder (expected {META_FILE}, {WEIGHTS_FILE}, "
                         f"{STATE_FILE} inside)")
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"checkpoint {path}: corrupt {META_FILE} ({error})") from None
    if not isinstance(meta, dict) or "kind" not in meta:
        raise UsageError(f"checkpoint {path}: {META_FILE} has no 'kind'")
    for name in (WEIGHTS_FILE, STATE_FILE):
        if not (path / name).is_file():
            raise UsageError(f"checkpoint {path} is incomplete: {name} is missing")
    return Checkpoint(path, meta)


def _weights_file_kind(path: Path) -> str:
    """The `kind` in a safetensors file's metadata ("classifier", ...), or "unknown"."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("kind", "unknown")
    except Exception:  # noqa: BLE001 - not a readable safetensors file
        return "unreadable"


def list_checkpoints(run_dir: str | Path, best: bool = False) -> list[Path]:
    """Committed `step-*` (or `best-step-*`) folders of a run, oldest first (hidden temp folders are ignored)."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = STEP_PATTERN.match(child.name)
        if match and bool(match.group(1)) == best and (child / META_FILE).is_file():
            found.append((int(match.group(2)), child))
    return [path for _, path in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def best_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir, best=True)
    return found[-1] if found else None


def resolve_checkpoint(path: str | Path) -> Checkpoint:
    """A checkpoint folder, a file inside one, or a run folder (its best checkpoint, else its latest)."""
    path = Path(path)
    if path.is_dir() and (path / "checkpoints").is_dir() and not (path / META_FILE).exists():
        chosen = best_checkpoint(path) or latest_checkpoint(path)
        if chosen is None:
            raise UsageError(f"run folder {path} has no committed checkpoint in {path / 'checkpoints'}")
        return read_checkpoint(chosen)
    return read_checkpoint(path)


def _delete(folder: Path) -> None:
    """Delete a checkpoint folder; it is first renamed to a hidden temp name, so a run killed mid-delete leaves a
    temp folder (ignored, and removed by `remove_stale_temps`), never a half-deleted checkpoint that still lists.
    A symbolic link is removed itself, never what it points to."""
    if folder.is_symlink():
        folder.unlink(missing_ok=True)
        return
    doomed = folder.parent / f".tmp-{folder.name}-deleting"
    try:
        os.rename(folder, doomed)
    except OSError:
        doomed = folder
    shutil.rmtree(doomed, ignore_errors=True)


def prune(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` step checkpoints and all but the newest best checkpoint. A ``checkpoints``
    folder that is a symbolic link is skipped: nothing is deleted through it."""
    if (Path(run_dir) / "checkpoints").is_symlink():
        return
    for stale in list_checkpoints(run_dir)[:-keep]:
        _delete(stale)
    for stale in list_checkpoints(run_dir, best=True)[:-1]:
        _delete(stale)


def remove_stale_temps(run_dir: str | Path) -> None:
    """Remove temp folders left by a run that was killed while writing a checkpoint. A ``checkpoints`` folder that is
    a symbolic link is skipped; a temp name that is a link is removed as a link."""
    folder = Path(run_dir) / "checkpoints"
    if folder.is_dir() and not folder.is_symlink():
        for child in folder.glob(".tmp-*"):
            if child.is_symlink():
                child.unlink(missing_ok=True)
            else:
                shutil.rmtree(child, ignore_errors=True)


def check_kind(checkpoint: Checkpoint, expected: str, flag: str) -> None:
    """Refuse a checkpoint of another kind, naming both."""
    if checkpoint.kind != expected:
        raise UsageError(f"{flag} {checkpoint.path} is a {checkpoint.kind!r} checkpoint, expected {expected!r}")


ARCHITECTURE_DEFAULTS = {"conditional": False}  # architecture fields that checkpoints of older versions lack


def check_architecture(checkpoint: Checkpoint, config: dict, fields: tuple[str, ...]) -> None:
    """Refuse to resume when architecture fields differ, naming each (checkpoint value vs requested value); a field
    an older checkpoint lacks counts as its `ARCHITECTURE_DEFAULTS` value."""
    saved = {name: ARCHITECTURE_DEFAULTS[name] for name in ARCHITECTURE_DEFAULTS if name in fields}
    saved.update(checkpoint.config)
    differing = [f"{name} {saved.get(name)!r} vs {config.get(name)!r}" for name in fields
                 if saved.get(name) != config.get(name)]
    if differing:
        raise UsageError(f"checkpoint {checkpoint.path} has a different architecture (checkpoint vs requested): "
                         + ", ".join(differing))
