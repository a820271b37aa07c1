"""Atomic file writes: a temp file in the destination folder, fsync, then `os.replace`.

A reader (or a process killed mid-write) therefore sees either the old file or the complete new one, never a
half-written file. Every file genvision writes goes through `atomic_write`, except the lines `append_jsonl` adds.
No write follows a symbolic link: `os.replace` replaces a link at the destination (not its target), and
`append_jsonl` refuses one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from genvision.errors import UsageError


def check_output_path(path: str | os.PathLike, flag: str = "--output") -> Path:
    """Validate that `path` can be written: its folder exists and it is not a folder itself."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: folder {parent} does not exist")
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder, expected a file path")
    return path


def _temp_beside(path: Path) -> str:
    """A new temp file in `path`'s folder with the permissions a plain `open` would give (mkstemp uses 0600)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    _plain_permissions(tmp)
    return tmp


def _plain_permissions(path: str) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside `path` durable (no-op where directories cannot be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temp file beside `path`; on success fsync it and rename it over `path`; on error remove it."""
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        with open(tmp, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_save(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Atomic write for libraries that insist on a filename: `write(tmp_path)` then rename it over `path`."""
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        write(tmp)
        _plain_permissions(tmp)  # some writers (safetensors) recreate the file with mode 0600
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_write(path, "w") as handle:
        json.dump(obj, handle, indent=2, sort_keys=False)
        handle.write("\n")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line (a single small write, flushed: a crash loses at most the line being written). A symbolic
    link at `path` is refused in one line, never followed (the file is opened with O_NOFOLLOW)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError:
        if os.path.islink(path):
            raise UsageError(f"{path} is a symbolic link; refusing to append to it (expected a plain file: a "
                             "genvision run folder holds no links)") from None
        raise
    with os.fdopen(fd, "a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (identifies weights in statistics files and sidecars)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
