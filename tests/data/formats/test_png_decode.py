"""libspng's decode of 8-bit RGB PNGs against Pillow's: the same pixels, the same errors."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from groundkit.data.formats import png_decode, read_segment_png
from groundkit.data.images import read_image
from groundkit.errors import FormatError, InputError

pyspng = pytest.importorskip("pyspng", reason="pyspng has no wheel for this platform; Pillow decodes")


def _pixels(rng: np.random.Generator, h: int = 37, w: int = 53) -> np.ndarray:
    """Blocks of a few ids (as segment maps have: every PNG filter gets used) and some noise."""
    blocks = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    rgb = np.repeat(np.repeat(blocks, 8, 0), 8, 1)[:h, :w].copy()
    rgb[rng.random((h, w)) < 0.1] = rng.integers(0, 256, 3, dtype=np.uint8)
    return rgb


def _write(path, array: np.ndarray, mode: str | None = None, **save) -> None:
    Image.fromarray(array, mode=mode).save(path, format="PNG", **save)


def _gamma_chunk() -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add(b"gAMA", struct.pack(">I", 45455))  # a gamma neither decoder should apply
    return info


RGB8_CASES = {
    "plain": {},
    "interlaced": {"interlace": 1},
    "transparent colour (tRNS)": {"transparency": (1, 2, 3)},
    "gamma chunk": {"pnginfo": _gamma_chunk()},
    "no compression": {"compress_level": 0},
}


@pytest.fixture(params=["zlib-ng", "libspng", "pillow"])
def decoder(request, monkeypatch):
    """Run a test with zlib-ng inflating for libspng, with libspng alone, then with Pillow alone."""
    if request.param == "zlib-ng" and png_decode.zlib_ng is None:
        pytest.skip("zlib-ng has no wheel for this platform")
    if request.param != "zlib-ng":
        monkeypatch.setattr(png_decode, "zlib_ng", None)
    if request.param == "pillow":
        monkeypatch.setattr(png_decode, "pyspng", None)
    return request.param


@pytest.mark.parametrize("case", RGB8_CASES)
def test_rgb8_pngs_decode_to_the_same_pixels_and_ids(tmp_path, case, decoder):
    rgb = _pixels(np.random.default_rng(len(case)))
    path = tmp_path / "a.png"
    _write(path, rgb, **RGB8_CASES[case])
    with Image.open(path) as image:
        fast = png_decode.decode_rgb8(image, path)
    if decoder != "pillow":
        assert fast is not None, "an 8-bit RGB PNG must take the libspng path"
        np.testing.assert_array_equal(fast, rgb)
    np.testing.assert_array_equal(read_image(path), rgb)
    ids = rgb[..., 0] + 256 * rgb[..., 1].astype(np.int64) + 65536 * rgb[..., 2].astype(np.int64)
    np.testing.assert_array_equal(read_segment_png(path, rgb.shape[:2]), ids)
    assert read_segment_png(path, dtype=np.uint32).dtype == np.uint32


def _other_pngs(tmp_path, rng) -> dict[str, tuple]:
    rgb = _pixels(rng)
    files = {
        "RGBA": (np.dstack([rgb, rng.integers(0, 256, rgb.shape[:2], dtype=np.uint8)]), None),
        "grayscale": (rgb[..., 0], None),
        "16-bit grayscale": (rgb[..., 0].astype(np.uint16) * 257, None),
    }
    paths = {}
    for name, (array, mode) in files.items():
        paths[name] = tmp_path / f"{name}.png"
        _write(paths[name], array, mode)
    paths["palette"] = tmp_path / "palette.png"
    Image.fromarray(rgb).quantize(17).save(paths["palette"])
    return paths


def test_other_modes_are_left_to_pillow(tmp_path):
    """libspng takes only 8-bit RGB; the other modes keep Pillow's conversions."""
    for name, path in _other_pngs(tmp_path, np.random.default_rng(0)).items():
        with Image.open(path) as image:
            assert png_decode.decode_rgb8(image, path) is None, name


def test_a_file_larger_than_its_pixels_need_is_left_to_pillow(tmp_path):
    """Trailing bytes past IEND are ignored by both decoders, but a file much larger than its
    pixels could need is not read whole into memory: Pillow streams it."""
    rgb = _pixels(np.random.default_rng(1))
    path = tmp_path / "padded.png"
    _write(path, rgb)
    with open(path, "ab") as f:
        f.write(b"\0" * (png_decode._SLACK_BYTES + rgb.size + rgb.shape[0] + 1))
    with Image.open(path) as image:
        assert png_decode.decode_rgb8(image, path) is None
    np.testing.assert_array_equal(read_image(path), rgb)


def test_both_decoders_agree_on_every_mode(tmp_path, monkeypatch):
    paths = _other_pngs(tmp_path, np.random.default_rng(2))
    paths["rgb"] = tmp_path / "rgb.png"
    _write(paths["rgb"], _pixels(np.random.default_rng(3)))
    fast = {name: (read_image(p), read_segment_png(p)) for name, p in paths.items()}
    monkeypatch.setattr(png_decode, "pyspng", None)
    for name, path in paths.items():
        np.testing.assert_array_equal(read_image(path), fast[name][0], err_msg=name)
        np.testing.assert_array_equal(read_segment_png(path), fast[name][1], err_msg=name)


def _truncated(tmp_path) -> object:
    """An 8-bit RGB PNG cut in its pixel data: the header opens, the decode must fail."""
    rng = np.random.default_rng(4)
    path = tmp_path / "cut.png"
    _write(path, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_pixel_data_is_a_named_error_either_way(tmp_path, decoder):
    path = _truncated(tmp_path)
    with pytest.raises(FormatError, match="cut.png"):
        read_segment_png(path)
    with pytest.raises(InputError, match="cut.png"):
        read_image(path)


def test_corrupt_pixel_data_is_a_named_error_either_way(tmp_path, decoder):
    """Bytes of the compressed stream overwritten, the chunk's CRC left stale (pyspng has libspng
    ignore CRCs: png_decode checks them itself and leaves such a file to Pillow)."""
    rng = np.random.default_rng(5)
    path = tmp_path / "corrupt.png"
    _write(path, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 4
    data[start + 2:start + 40] = b"\xff" * 38  # past the zlib header: an invalid deflate block
    path.write_bytes(bytes(data))
    with Image.open(path) as image:   # the stale CRC sends the file to Pillow
        assert png_decode.decode_rgb8(image, path) is None
    with pytest.raises(FormatError, match="corrupt.png"):
        read_segment_png(path)
    with pytest.raises(InputError, match="corrupt.png"):
        read_image(path)


def test_a_flipped_bit_with_a_stale_crc_is_never_decoded_by_libspng(tmp_path):
    """One byte of the pixel data changed in a stored (uncompressed) stream, so that it still
    inflates: libspng alone (told by pyspng to ignore checksums) returns wrong pixels without a
    word; png_decode leaves the file to Pillow instead, which refuses it (zlib's Adler-32)."""
    rng = np.random.default_rng(6)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    path = tmp_path / "flipped.png"
    _write(path, rgb, compress_level=0)
    data = bytearray(path.read_bytes())
    data[data.index(b"IDAT") + 4 + 200] ^= 0x01
    path.write_bytes(bytes(data))
    silently_wrong = pyspng.load(bytes(data), format="RGB")
    assert silently_wrong.shape == rgb.shape and not np.array_equal(silently_wrong, rgb)
    with Image.open(path) as image:
        assert png_decode.decode_rgb8(image, path) is None
    with pytest.raises(FormatError, match="flipped.png"):
        read_segment_png(path)


# --- zlib-ng inflating for libspng ----------------------------------------------------------------

def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_with_idat(rgb: np.ndarray, stream: bytes, pieces: int = 1) -> bytes:
    """An 8-bit RGB PNG of ``rgb``'s size whose IDAT chunks (``pieces`` of them) hold ``stream``."""
    h, w = rgb.shape[:2]
    cut = np.linspace(0, len(stream), pieces + 1).astype(int)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + b"".join(_chunk(b"IDAT", stream[a:b]) for a, b in zip(cut[:-1], cut[1:]))
            + _chunk(b"IEND", b""))


def _rows(rgb: np.ndarray) -> bytes:
    """The image's rows with filter type 0 before each: what a PNG's zlib stream holds."""
    return np.concatenate([np.zeros((rgb.shape[0], 1), np.uint8), rgb.reshape(rgb.shape[0], -1)], 1).tobytes()


needs_zlib_ng = pytest.mark.skipif(png_decode.zlib_ng is None, reason="zlib-ng has no wheel here")


@needs_zlib_ng
@pytest.mark.parametrize("pieces", [1, 3])
def test_stored_pixels_decode_to_the_same_pixels(tmp_path, pieces):
    """Pillow's own files (every filter type) and a stream cut over several IDAT chunks become
    one IDAT of stored deflate blocks (BTYPE 00) that Pillow and libspng read to the same pixels."""
    rgb = _pixels(np.random.default_rng(7), 300, 250)   # 225 kB of rows: several 64 kB blocks
    path = tmp_path / "a.png"
    _write(path, rgb)
    files = {"pillow": path.read_bytes(), "cut": _png_with_idat(rgb, zlib.compress(_rows(rgb)), pieces)}
    for name, data in files.items():
        stored = png_decode._with_stored_pixels(data, rgb.shape[0] * (3 * rgb.shape[1] + 1))
        body = stored[stored.index(b"IDAT") + 4:]
        assert stored.count(b"IDAT") == 1 and body[2] & 0b110 == 0, name   # a stored block first
        (tmp_path / f"{name}.png").write_bytes(stored)
        np.testing.assert_array_equal(read_image(tmp_path / f"{name}.png"), rgb, err_msg=name)
        np.testing.assert_array_equal(pyspng.load(stored, format="RGB"), rgb, err_msg=name)


@needs_zlib_ng
def test_streams_that_are_not_exactly_the_rows_go_to_libspng_as_they_are():
    """More bytes than the rows (a bomb is cut at one byte past them), fewer, bytes after the
    zlib stream, or no IEND: the file is given back unchanged."""
    rgb = _pixels(np.random.default_rng(8))
    size = rgb.shape[0] * (3 * rgb.shape[1] + 1)
    for stream in (zlib.compress(_rows(rgb) + b"\0" * 10_000_000), zlib.compress(_rows(rgb)[:-1]),
                   zlib.compress(_rows(rgb)) + b"\0\0"):
        data = _png_with_idat(rgb, stream)
        assert png_decode._with_stored_pixels(data, size) is data
    no_end = _png_with_idat(rgb, zlib.compress(_rows(rgb)))[:-12]   # IEND cut off: never loops
    assert png_decode._with_stored_pixels(no_end, size) is no_end


@needs_zlib_ng
def test_a_wrong_adler32_with_right_crcs_is_left_to_pillow(tmp_path):
    """The chunks' CRCs right but the zlib stream's Adler-32 wrong: libspng alone would decode
    it without a word; zlib-ng refuses it and Pillow then does, with the file's name."""
    rgb = _pixels(np.random.default_rng(9))
    stream = bytearray(zlib.compress(_rows(rgb)))
    stream[-1] ^= 0x01
    path = tmp_path / "adler.png"
    path.write_bytes(_png_with_idat(rgb, bytes(stream)))
    np.testing.assert_array_equal(pyspng.load(path.read_bytes(), format="RGB"), rgb)
    with Image.open(path) as image:
        assert png_decode.decode_rgb8(image, path) is None
    with pytest.raises(FormatError, match="adler.png"):
        read_segment_png(path)
