"""Decoding 8-bit RGB PNGs with libspng (the ``pyspng`` wheel) where it is installed.

Segment PNGs and the synthetic images are 8-bit RGB; libspng decodes them 1.6x faster than
Pillow (a 512 x 512 segment PNG: 1.2 against 2.0 ms; `read_segment_png` whole, warm: 1.55 against
2.35 ms), which is most of what ``groundkit score panoptic`` spends per image. The same
pixels either way (``tests/data/formats/test_png_decode.py``): Pillow opens the file first and
keeps every check on its header (format, size, decompression bombs); libspng only decodes the
pixel data of the files this module accepts, and Pillow everything else.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

try:  # wheels for x86-64 Linux, Windows and arm64 macOS; Pillow decodes elsewhere
    import pyspng
except ImportError:  # pragma: no cover - depends on the platform
    pyspng = None

# The most bytes a PNG of H x W RGB pixels is read into memory with for libspng: a stored
# (uncompressed) PNG needs 3 bytes a pixel and one a row, plus chunks; a larger file is read by
# Pillow, which streams it, so that a file padded with gigabytes is never held whole.
_SLACK_BYTES = 1 << 20


def decode_rgb8(image: Image.Image, path: str | Path) -> np.ndarray | None:
    """The ``(H, W, 3) uint8`` pixels of ``image``, opened by Pillow from ``path``, decoded by
    libspng; None where that does not apply: pyspng is not installed, the file is no 8-bit RGB
    PNG (Pillow converts the other modes and depths its own way), or it is larger than its pixels
    could need.

    A corrupt or truncated pixel stream raises ``OSError``, as Pillow's decoder does.
    """
    if pyspng is None or image.format != "PNG" or image.mode != "RGB" or not _is_rgb8(image):
        return None
    width, height = image.size
    if os.stat(path).st_size > height * (3 * width + 1) + _SLACK_BYTES:
        return None
    try:
        rgb = pyspng.load(Path(path).read_bytes(), format="RGB")
    except RuntimeError as e:  # pyspng reports libspng's errors as RuntimeError
        raise OSError(f"cannot decode the PNG's pixels ({e})") from None
    if rgb.shape != (height, width, 3) or rgb.dtype != np.uint8:  # pragma: no cover - a guard
        raise OSError(f"libspng decoded {rgb.shape} {rgb.dtype}, expected ({height}, {width}, 3)")
    return rgb


def _is_rgb8(image: Image.Image) -> bool:
    """Whether Pillow reads the PNG as one tile of 8-bit RGB samples (rawmode "RGB"), the case
    in which its pixels and libspng's are the same bytes (16-bit files are "RGB;16B")."""
    tile = getattr(image, "tile", None)
    return bool(tile) and len(tile) == 1 and tile[0][0] == "zip" and tile[0][3] == "RGB"
