"""Reading images the way users hand them in: any mode Pillow opens becomes 8-bit RGB."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from groundkit.data.formats.png_decode import decode_rgb8
from groundkit.errors import FormatError, InputError
from groundkit.structures import ImageRecord


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8`` RGB.

    Grayscale, palette, RGBA (alpha ignored, colours kept) and 16-bit images are converted; a missing
    or unreadable file, or one whose bytes are not the format its suffix says (a TIFF saved as
    ``.png``), is an :class:`InputError`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            found, expected = image.format, suffix_format(path)
            if expected and found and _same(found) != _same(expected):
                raise InputError(f"{path}: the file is a {found} image, not the {expected} its "
                                 f"name says")
            rgb = decode_rgb8(image, path)  # 8-bit RGB PNGs, by libspng where installed
            if rgb is not None:
                return rgb
            image.load()
            if image.mode == "P":  # palette indices mean nothing as intensities
                image = image.convert("RGBA")
            return to_rgb_array(np.array(image), source=str(path))
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        # Pillow raises ValueError for some corrupt headers ("Truncated IHDR chunk")
        raise InputError(f"{path}: not a readable image ({e})") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # the header claims more pixels than Pillow's limit (the warning raises under `-W error`)
        raise InputError(f"{path}: refused as a possible decompression bomb ({e})") from None


# Formats Pillow reports under another name than the suffix's: a multi-picture JPEG (as phones
# write) opens as MPO.
_SAME_FORMAT = {"MPO": "JPEG"}


def _same(name: str) -> str:
    return _SAME_FORMAT.get(name, name)


def suffix_format(path: str | Path) -> str | None:
    """The Pillow format name the suffix of ``path`` stands for (".jpg": "JPEG"), or None."""
    return Image.registered_extensions().get(Path(path).suffix.lower())


def to_rgb_array(image: np.ndarray, source: str = "image") -> np.ndarray:
    """Any ``(H, W)``, ``(H, W, 1|3|4)`` array of uint8/uint16/int/float -> ``(H, W, 3) uint8``.

    16-bit and wider integers are scaled by their maximum representable value; floats are taken
    as [0, 1]. Alpha is dropped.
    """
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise InputError(f"{source}: expected an (H, W), (H, W, 3) or (H, W, 4) image, "
                         f"got shape {tuple(array.shape)}")
    array = array[..., :3] if array.shape[-1] >= 3 else np.repeat(array, 3, axis=-1)
    return _to_uint8(array, source)


def _to_uint8(array: np.ndarray, source: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        top = 65535 if array.max(initial=0) > 255 else 255
        return (array.astype(np.float64) / top * 255).round().clip(0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InputError(f"{source}: image has NaN or infinite values")
        return (array.clip(0, 1) * 255).round().astype(np.uint8)
    raise InputError(f"{source}: unsupported pixel type {array.dtype}")


def read_record_image(folder: str | Path, record: ImageRecord, json_path: str | Path) -> np.ndarray:
    """The image of a COCO ``record`` in ``folder``, checked against the size its JSON gives."""
    image = read_image(Path(folder) / record.file_name)
    if image.shape[:2] != (record.height, record.width):
        raise FormatError(json_path, f"expected {record.height}x{record.width} from the JSON, the "
                          f"image file is {image.shape[0]}x{image.shape[1]}",
                          item=f"image {record.id} ({record.file_name})", field="height/width")
    return image
