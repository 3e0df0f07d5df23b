"""Binary masks: COCO RLE encode/decode, polygons, resizing, erosion.

RLE here is COCO's compressed form ``{"size": [h, w], "counts": str}`` (counts decoded to str so it
can go into JSON, as pycocotools users and MMDetection do). Decoders also accept ``bytes`` counts and
the uncompressed form with ``list`` counts that COCO uses for crowd annotations.

NumPy and pycocotools only at import: the scorers (``groundkit score``) read masks through this
module and must run without importing torch; ``resize_masks`` imports it when called.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from pycocotools import mask as coco_mask

from groundkit.errors import InputError

if TYPE_CHECKING:
    import torch

RLE = dict[str, Any]


def encode_rle(mask: np.ndarray) -> RLE:
    """mask: ``(H, W)`` bool (any dtype; non-zero is inside) -> ``{"size": [H, W], "counts": str}``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"encode_rle expects an (H, W) mask, got shape {mask.shape}")
    rle = coco_mask.encode(np.asfortranarray(mask != 0, dtype=np.uint8))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def masks_to_rles(masks: np.ndarray) -> list[RLE]:
    """masks: ``(N, H, W)`` bool -> N RLEs."""
    return [encode_rle(m) for m in np.asarray(masks)]


def rle_runs(counts: str | bytes | list[int]) -> np.ndarray:
    """Run lengths ``(K,) int64`` of RLE ``counts`` (alternating 0s and 1s, column-major, 0s first).

    COCO's string form writes each run in 5-bit groups, least significant first, as characters
    ``48 + bits``; bit 0x20 says another group follows, bit 0x10 of the last group is the sign; from
    the fourth run on, a run is stored as its difference to the run two before it.
    """
    if isinstance(counts, list):
        if not all(isinstance(c, (int, np.integer)) for c in counts):
            raise InputError("uncompressed RLE 'counts' must be a list of integers")
        try:
            return np.asarray(counts, dtype=np.int64).reshape(-1)
        except OverflowError:
            raise InputError("RLE 'counts' holds a run too long for any mask") from None
    if isinstance(counts, str):
        if not counts.isascii():
            raise InputError("RLE 'counts' is not a COCO RLE string")
        counts = counts.encode("ascii")
    codes = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if codes.size == 0:
        return np.zeros(0, dtype=np.int64)
    if codes.min() < 0 or codes.max() > 63 or codes[-1] & 0x20:
        raise InputError("RLE 'counts' is not a COCO RLE string")
    last = (codes & 0x20) == 0  # the last character of each run
    starts = np.flatnonzero(np.concatenate([[True], last[:-1]]))
    k = np.arange(codes.size) - np.repeat(starts, np.diff(np.append(starts, codes.size)))
    if k.max() > 11:  # 60 bits: more would overflow int64 (no real mask has such a run)
        raise InputError("RLE 'counts' holds a run too long for any mask")
    values = np.add.reduceat((codes & 0x1F) << (5 * k), starts)
    negative = (codes[last] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * (k[last][negative] + 1))
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    return runs


def check_rle(rle: RLE) -> tuple[int, int]:
    """``(H, W)`` of a COCO RLE whose runs are non-negative and cover exactly H * W pixels.

    pycocotools does not check this, and decodes a short RLE into uninitialised memory.
    """
    h, w = _rle_size(rle)
    counts = rle["counts"]
    if not isinstance(counts, (str, bytes, list)):
        raise InputError(f"RLE 'counts' must be a str, bytes or list, got {type(counts).__name__}")
    runs = rle_runs(counts)
    if runs.size and runs.min() < 0:
        raise InputError("RLE 'counts' holds a negative run")
    if runs.size and runs.max() > h * w:  # and so the sum below cannot overflow int64 and wrap
        raise InputError(f"RLE 'counts' holds a run longer than the {h}x{w} = {h * w} pixels of "
                         f"its size")
    if runs.sum() != h * w:
        raise InputError(f"RLE runs cover {runs.sum()} pixels, not the {h}x{w} = {h * w} of its size")
    return h, w


def decode_rle(rle: RLE) -> np.ndarray:
    """COCO RLE (``counts`` str, bytes or uncompressed list) -> ``(H, W) bool``."""
    h, w = check_rle(rle)
    counts = rle["counts"]
    if isinstance(counts, list):
        compressed = coco_mask.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    elif isinstance(counts, (str, bytes)):
        compressed = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str)
                      else counts}
    return _decode(compressed)


def rles_to_masks(rles: Sequence[RLE], size: tuple[int, int] | None = None) -> np.ndarray:
    """N RLEs -> ``(N, H, W) bool``; ``size`` gives ``(H, W)`` when there may be no RLE at all."""
    if not rles:
        if size is None:
            raise InputError("rles_to_masks needs `size` when given no RLE")
        return np.zeros((0, *size), dtype=bool)
    return np.stack([decode_rle(r) for r in rles])


# The most a segmentation's polygons may measure around, in perimeters of their image.
# pycocotools rasterises a polygon by first listing 5 points per pixel of its boundary (16 bytes
# each): a few vertices far apart would allocate gigabytes, and far enough (past 2**31 / 5) its int
# coordinates overflow and it crashes. Real outlines measure a few image perimeters at most.
MAX_POLYGON_PERIMETERS = 64


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` -> their union as ``(height, width) bool``.

    Coordinates must be finite and within one image width (height) of the image, and the
    polygons' outlines at most ``MAX_POLYGON_PERIMETERS`` image perimeters long in all: an
    InputError otherwise, before pycocotools allocates anything.
    """
    polygons = _polygon_coordinates(polygons, height, width)
    if not polygons:
        return np.zeros((height, width), dtype=bool)
    rles = coco_mask.frPyObjects(polygons, height, width)
    return _decode(coco_mask.merge(rles))


def _polygon_coordinates(polygons: Any, height: int, width: int) -> list[list[float]]:
    """The polygons of 3 points or more, as lists of floats, checked (see polygons_to_mask)."""
    def refuse(why: str) -> InputError:
        return InputError(f"COCO polygons are lists of numbers [x1, y1, x2, y2, ...]{why}, got "
                          f"{_preview(polygons)}")

    if not isinstance(polygons, (list, tuple)):
        raise refuse("")
    out, length = [], 0.0
    for p in polygons:
        if not isinstance(p, (list, tuple)) or not all(
                isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                for v in p):
            raise refuse("")
        if len(p) < 6:  # fewer than 3 points enclose nothing; pycocotools reads 4 numbers as a box
            continue
        try:
            xy = np.array(p[: len(p) // 2 * 2], dtype=np.float64).reshape(-1, 2)
        except OverflowError:  # an int too large for a float
            raise refuse(" of finite coordinates") from None
        if not np.isfinite(xy).all():
            raise refuse(" of finite coordinates")
        if ((xy < -np.array([width, height])) | (xy > 2 * np.array([width, height]))).any():
            raise refuse(f" within one image size of the {height}x{width} image")
        length += float(np.abs(xy - np.roll(xy, 1, axis=0)).max(axis=1).sum())
        out.append(xy.ravel().tolist())
    if length > MAX_POLYGON_PERIMETERS * 2 * (height + width):
        raise refuse(f" whose outlines measure at most {MAX_POLYGON_PERIMETERS} perimeters of "
                     f"their {height}x{width} image in all")
    return out


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygon list or RLE dict) -> ``(height, width) bool``."""
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width)
    if isinstance(segmentation, dict):
        # the size checked before decoding: a few bytes of RLE may declare gigabytes of mask
        size = _rle_size(segmentation)
        if size != (height, width):
            raise InputError(f"RLE size {list(size)} differs from the image size "
                             f"{[height, width]}")
        return decode_rle(segmentation)
    raise InputError(f"a COCO segmentation is a polygon list or an RLE dict, got "
                     f"{type(segmentation).__name__}")


def resize_masks(masks: torch.Tensor, size: tuple[int, int], mode: str = "nearest") -> torch.Tensor:
    """Resize ``masks (N, H, W)`` to ``size = (h, w)`` -> ``(N, h, w)``.

    ``nearest`` keeps the dtype (bool masks stay bool); ``bilinear`` is for logits or probabilities
    (resample before thresholding: thresholding first gives blocky edges).
    """
    import torch.nn.functional as F

    if masks.ndim != 3:
        raise InputError(f"resize_masks expects (N, H, W) masks, got shape {tuple(masks.shape)}")
    if mode not in ("nearest", "bilinear"):
        raise InputError(f"resize_masks mode must be 'nearest' or 'bilinear', got {mode!r}")
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size))
    x = masks[None].float()
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")[0].to(masks.dtype)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)[0]


def erode(mask: np.ndarray, steps: int = 1) -> np.ndarray:
    """``mask (H, W) bool`` eroded ``steps`` (>= 1) times by the 4-neighbour cross: a new array of
    the pixels whose four neighbours are all inside the mask too.

    Edge rule: a neighbour outside the image counts as inside, so the image border is no border of
    the mask. Why: the image edge is a crop, not an object's boundary. The synthetic generator draws
    each thing's 1-pixel outline where this erosion takes pixels away (a thing cut by the frame gets
    no outline along it), the benchmark statistics read a thing's colour inside the eroded mask
    (the frame pixels carry the fill colour, so they count), and overlays outline each region
    without framing the ones that touch the image edge. The generated benchmark, and the bundled
    models trained on it, depend on this rule: changing it changes the generated images.
    """
    for _ in range(steps):
        prev, mask = mask, mask.copy()
        mask[1:] &= prev[:-1]
        mask[:-1] &= prev[1:]
        mask[:, 1:] &= prev[:, :-1]
        mask[:, :-1] &= prev[:, 1:]
    return mask


def _decode(compressed: RLE) -> np.ndarray:
    # pycocotools' Cython decoder trips NumPy 2's `copy=False` deprecation on every call; the
    # result is correct, so keep the warning out of users' logs.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        return coco_mask.decode(compressed).astype(bool)


def _rle_size(rle: Any) -> tuple[int, int]:
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise InputError(f"an RLE is a dict with 'size' and 'counts', got {_preview(rle)}")
    size = rle["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(s, (int, np.integer)) and s >= 0 for s in size)):
        raise InputError(f"RLE 'size' must be [height, width], got {size!r}")
    return int(size[0]), int(size[1])


def _preview(value: Any, limit: int = 60) -> str:
    """The start of ``str(value)`` for an error message, whatever ``value`` holds."""
    try:
        return str(value)[:limit]
    except (ValueError, RecursionError):  # an int past max-str-digits; nesting past the stack
        return f"a {type(value).__name__} too large to print"
