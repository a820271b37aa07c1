"""Opening image files and stored image bytes that others made: a pixel limit, regular files only, one-line errors.

Every image genvision decodes from a file or from stored bytes (image folders, ``folder:`` and ``hf:`` datasets,
CelebA, the PNGs of a run folder that the report embeds) opens through `opened` or `decoded`. A PNG of a few KB can
declare 12000 x 12000 pixels and decode to hundreds of MB (a decompression bomb); PIL only warns above its limit
``PIL.Image.MAX_IMAGE_PIXELS`` and refuses above twice it. When genvision first opens an image (`configure_pil`, not
at import) it lowers PIL's default limit to `MAX_IMAGE_PIXELS` (8192 x 8192, a 64-megapixel photo; a limit the user
set is kept) and turns PIL's `DecompressionBombWarning` into an error; `opened` refuses any image above the limit
(PIL's value when it is opened, so it stays the one setting) before a pixel is decoded. Paths must be regular files, so a FIFO or a device named like an image never blocks a read.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import warnings
from typing import Iterator

from PIL import Image

from genvision.errors import UsageError

MAX_IMAGE_PIXELS = 8192 * 8192  # 67,108,864 pixels: 192 MiB decoded as RGB, below PIL's default of 89,478,485
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")  # PIL's messages: "Image size (N pixels) exceeds limit of ..."

PIL_DEFAULT_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)  # PIL's own default MAX_IMAGE_PIXELS (89,478,485)
_configured = False  # configure_pil has run in this process


def configure_pil() -> None:
    """Once per process, at genvision's first image open: PIL's pixel limit lowered to MAX_IMAGE_PIXELS unless the
    user set one of their own, and PIL's bomb warning made an error (a warning would decode the image first)."""
    global _configured
    if _configured:
        return
    if Image.MAX_IMAGE_PIXELS == PIL_DEFAULT_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
    _configured = True


def too_large(name: str, pixels: int | None) -> UsageError:
    """The one-line error of an image over the limit (`pixels`: its size, None when PIL did not say)."""
    size = f"{pixels} pixels" if pixels else "its size"
    return UsageError(f"cannot read image {name}: {size} exceeds the limit of {Image.MAX_IMAGE_PIXELS} pixels per "
                      "image (PIL.Image.MAX_IMAGE_PIXELS); refusing a possible decompression bomb")


def check_regular_file(path: str | os.PathLike, name: str) -> None:
    """A one-line UsageError unless `path` is a regular file (links followed): never a FIFO, device or folder."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise UsageError(f"cannot read image {name}: {error.strerror or error}") from None
    if not stat.S_ISREG(mode):
        raise UsageError(f"cannot read image {name}: not a regular file")


@contextlib.contextmanager
def opened(source: str | os.PathLike | bytes | io.BytesIO, name: str) -> Iterator[Image.Image]:
    """``Image.open(source)`` with only its header read, refused in one line (naming `name`) when it is not a regular
    file, not an image, or larger than the pixel limit; errors while the caller decodes it in the ``with`` body are
    one line too."""
    configure_pil()
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    elif not isinstance(source, io.IOBase):
        check_regular_file(source, name)
    try:
        with Image.open(source) as image:
            limit = Image.MAX_IMAGE_PIXELS
            pixels = max(1, image.width) * max(1, image.height)
            if limit is not None and pixels > limit:
                raise too_large(name, pixels)
            yield image
    except UsageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:  # PIL's own check, in open
        found = _BOMB_PIXELS.search(str(error))
        raise too_large(name, int(found.group(1)) if found else None) from None
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read image {name}: {error}") from None


def decoded(source: str | os.PathLike | bytes | io.BytesIO, name: str) -> Image.Image:
    """The image of `source` fully decoded (a copy, its file closed), with `opened`'s checks and errors."""
    with opened(source, name) as image:
        image.load()
        return image.copy()
