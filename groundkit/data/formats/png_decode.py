"""Decoding 8-bit RGB PNGs with libspng (the ``pyspng`` wheel) where it is installed.

Segment PNGs and the synthetic images are 8-bit RGB; libspng decodes them 1.6x faster than
Pillow (a 512 x 512 segment PNG: 1.2 against 2.0 ms; `read_segment_png` whole, warm: 1.55 against
2.35 ms), which is most of what ``groundkit score panoptic`` spends per image. The same
pixels and errors either way (``tests/data/formats/test_png_decode.py``): Pillow opens the file
first and keeps every check on its header (format, size, decompression bombs); libspng only
decodes the pixel data of the files this module accepts (whole, every CRC right), and Pillow
everything else, including whatever libspng refuses.

Where ``zlib-ng`` is installed, the pixel data is inflated by it first and handed to libspng as
stored (uncompressed) deflate blocks: libspng's own inflate is zlib's, which spends 1.6 ms on a
512 x 512 segment map's long runs where zlib-ng takes 0.07 ms; libspng then only copies the rows
and undoes their filters. The file's other chunks go to libspng unchanged.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

try:  # wheels for x86-64 and arm64 (Linux, macOS, Windows x86-64): pyproject.toml's marker
    import pyspng
except ImportError:  # pragma: no cover - depends on the platform
    pyspng = None
try:  # the same platforms
    from zlib_ng import zlib_ng
except ImportError:  # pragma: no cover - depends on the platform
    zlib_ng = None

# The most bytes a PNG of H x W RGB pixels is read into memory with for libspng: a stored
# (uncompressed) PNG needs 3 bytes a pixel and one a row, plus chunks; a larger file is read by
# Pillow, which streams it, so that a file padded with gigabytes is never held whole.
_SLACK_BYTES = 1 << 20
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Pixel data up to this size is inflated by zlib-ng (the file is then held three times over:
# compressed, inflated, stored); larger images go to libspng as they are.
_STORED_MAX_BYTES = 1 << 26
_STORED_BLOCK = 65535  # the most bytes a stored deflate block holds


def decode_rgb8(image: Image.Image, path: str | Path) -> np.ndarray | None:
    """The ``(H, W, 3) uint8`` pixels of ``image``, opened by Pillow from ``path``, decoded by
    libspng; None where that does not apply, and Pillow decodes: pyspng is not installed, the
    file is no 8-bit RGB PNG (Pillow converts the other modes and depths its own way), it is
    larger than its pixels could need, a chunk is cut or fails its CRC, zlib-ng refuses its
    pixel data, or libspng refuses it.
    Pillow then reads or refuses the file as it would have without libspng (a differential fuzz
    of 8,000 mutated files, each read by both readers: the same pixels or an error from both).
    """
    if pyspng is None or image.format != "PNG" or image.mode != "RGB" or not _is_rgb8(image):
        return None
    width, height = image.size
    rows_bytes = height * (3 * width + 1)  # the inflated pixel data: a filter byte per row
    if os.stat(path).st_size > rows_bytes + _SLACK_BYTES:
        return None
    data = Path(path).read_bytes()
    if not _chunks_intact(memoryview(data)):
        return None
    if zlib_ng is not None and rows_bytes <= _STORED_MAX_BYTES:
        data = _with_stored_pixels(data, rows_bytes)
        if data is None:  # zlib-ng refused the stream (libspng would not check its Adler-32)
            return None
    try:
        rgb = pyspng.load(data, format="RGB")
    except RuntimeError:  # libspng refuses what Pillow may read: Pillow has the last word
        return None
    if rgb.shape != (height, width, 3) or rgb.dtype != np.uint8:  # pragma: no cover - a guard
        return None
    return rgb


def _chunks_intact(data: memoryview) -> bool:
    """Whether every chunk of a PNG up to IEND is whole and matches its CRC-32.

    pyspng has libspng ignore the checksums (CRCs and zlib's Adler-32), so a corrupt file would
    decode to wrong pixels where Pillow refuses it; a file that fails here goes to Pillow, which
    then reads or refuses it as it always did. A few microseconds a file (zlib's CRC-32).
    """
    if data[:8] != _SIGNATURE:
        return False
    pos = 8
    while pos + 12 <= len(data):
        end = pos + 12 + int.from_bytes(data[pos:pos + 4], "big")
        if end > len(data) or zlib.crc32(data[pos + 4:end - 4]) != int.from_bytes(
                data[end - 4:end], "big"):
            return False
        if data[pos + 4:pos + 8] == b"IEND":
            return True
        pos = end
    return False


def _with_stored_pixels(data: bytes, raw_size: int) -> bytes | None:
    """The PNG ``data`` (whole, every CRC checked) with its IDAT chunks replaced by one whose
    zlib stream stores the inflated rows uncompressed. ``data`` itself where the IDAT chunks are
    not one run holding one zlib stream of exactly ``raw_size`` bytes (the rows of a
    non-interlaced image: an interlaced one has more) and nothing after it: libspng decodes it
    as before. None where zlib-ng refuses the stream (corrupt, or a wrong Adler-32, which
    libspng would not check): Pillow then reads or refuses the file. Never inflates more than
    ``raw_size + 1`` bytes.
    """
    view, pos, first, last, parts = memoryview(data), 8, None, None, []
    while True:  # the chunks are whole up to IEND where _chunks_intact said so; else as is
        if pos + 12 > len(view):
            return data
        end = pos + 12 + int.from_bytes(view[pos:pos + 4], "big")
        kind = view[pos + 4:pos + 8]
        if kind == b"IDAT":
            if last is not None and last != pos:  # IDAT chunks must follow one another
                return data
            first, last = pos if first is None else first, end
            parts.append(view[pos + 8:end - 4])
        elif kind == b"IEND":
            break
        pos = end
    if first is None:
        return data
    inflater = zlib_ng.decompressobj()
    try:
        raw = inflater.decompress(b"".join(parts), raw_size + 1)
    except zlib_ng.error:
        return None
    if len(raw) != raw_size or not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
        return data
    rows = memoryview(raw)
    stream = [b"\x78\x01"]  # zlib header: deflate, 32 kB window, no dictionary
    for start in range(0, raw_size, _STORED_BLOCK):
        block = rows[start:start + _STORED_BLOCK]
        final = int(start + _STORED_BLOCK >= raw_size)
        stream += [bytes((final,)), len(block).to_bytes(2, "little"),
                   (0xFFFF ^ len(block)).to_bytes(2, "little"), block]
    stream.append(zlib_ng.adler32(raw).to_bytes(4, "big"))
    body = b"".join(stream)
    chunk = [len(body).to_bytes(4, "big"), b"IDAT", body,
             zlib_ng.crc32(body, zlib_ng.crc32(b"IDAT")).to_bytes(4, "big")]
    return b"".join([view[:first], *chunk, view[last:]])


def _is_rgb8(image: Image.Image) -> bool:
    """Whether Pillow reads the PNG as one tile of 8-bit RGB samples (rawmode "RGB"), the case
    in which its pixels and libspng's are the same bytes (16-bit files are "RGB;16B")."""
    tile = getattr(image, "tile", None)
    return bool(tile) and len(tile) == 1 and tile[0][0] == "zip" and tile[0][3] == "RGB"
