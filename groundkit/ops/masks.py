"""Binary masks: COCO RLE encode/decode, polygons, resizing.

RLE here is COCO's compressed form ``{"size": [h, w], "counts": str}`` (counts decoded to str so it
can go into JSON, as pycocotools users and MMDetection do). Decoders also accept ``bytes`` counts and
the uncompressed form with ``list`` counts that COCO uses for crowd annotations.
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as coco_mask

from groundkit.errors import InputError

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


def decode_rle(rle: RLE) -> np.ndarray:
    """COCO RLE (``counts`` str, bytes or uncompressed list) -> ``(H, W) bool``."""
    h, w = _rle_size(rle)
    counts = rle["counts"]
    if isinstance(counts, list):
        compressed = coco_mask.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    elif isinstance(counts, (str, bytes)):
        compressed = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str)
                      else counts}
    else:
        raise InputError(f"RLE 'counts' must be a str, bytes or list, got {type(counts).__name__}")
    return _decode(compressed)


def rles_to_masks(rles: Sequence[RLE], size: tuple[int, int] | None = None) -> np.ndarray:
    """N RLEs -> ``(N, H, W) bool``; ``size`` gives ``(H, W)`` when there may be no RLE at all."""
    if not rles:
        if size is None:
            raise InputError("rles_to_masks needs `size` when given no RLE")
        return np.zeros((0, *size), dtype=bool)
    return np.stack([decode_rle(r) for r in rles])


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` -> their union as ``(height, width) bool``."""
    # Fewer than 3 points enclose nothing, and pycocotools would read a 4-number list as a box.
    polygons = [list(map(float, p)) for p in polygons if len(p) >= 6]
    if not polygons:
        return np.zeros((height, width), dtype=bool)
    rles = coco_mask.frPyObjects(polygons, height, width)
    return _decode(coco_mask.merge(rles))


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygon list or RLE dict) -> ``(height, width) bool``."""
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width)
    if isinstance(segmentation, dict):
        mask = decode_rle(segmentation)
        if mask.shape != (height, width):
            raise InputError(f"RLE size {list(mask.shape)} differs from the image size "
                             f"{[height, width]}")
        return mask
    raise InputError(f"a COCO segmentation is a polygon list or an RLE dict, got "
                     f"{type(segmentation).__name__}")


def resize_masks(masks: torch.Tensor, size: tuple[int, int], mode: str = "nearest") -> torch.Tensor:
    """Resize ``masks (N, H, W)`` to ``size = (h, w)`` -> ``(N, h, w)``.

    ``nearest`` keeps the dtype (bool masks stay bool); ``bilinear`` is for logits or probabilities
    (resample before thresholding: thresholding first gives blocky edges).
    """
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


def _decode(compressed: RLE) -> np.ndarray:
    # pycocotools' Cython decoder trips NumPy 2's `copy=False` deprecation on every call; the
    # result is correct, so keep the warning out of users' logs.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        return coco_mask.decode(compressed).astype(bool)


def _rle_size(rle: Any) -> tuple[int, int]:
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise InputError(f"an RLE is a dict with 'size' and 'counts', got {str(rle)[:60]}")
    size = rle["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(s, (int, np.integer)) and s >= 0 for s in size)):
        raise InputError(f"RLE 'size' must be [height, width], got {size!r}")
    return int(size[0]), int(size[1])
