"""COCO panoptic: one JSON (images, annotations, categories) + one segment PNG per image.

The id of a pixel is ``R + 256 * G + 256**2 * B``; 0 is VOID.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from groundkit._io import atomic_path


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """Segment ids of an RGB segment image.

    rgb: ``(H, W, 3)`` any integer dtype -> ``(H, W) int64``. Casts before the arithmetic: on uint8
    NumPy 2 raises on overflow and older NumPy wraps silently.
    """
    rgb = np.asarray(rgb).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(id_map: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_id`: ``(H, W)`` int -> ``(H, W, 3) uint8``."""
    ids = np.asarray(id_map).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError(f"segment ids must lie in [0, 256**3), got [{ids.min()}, {ids.max()}]")
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def write_segment_png(path: str | Path, id_map: np.ndarray) -> None:
    """Write ``id_map (H, W)`` as a COCO panoptic RGB PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(id_to_rgb(id_map), mode="RGB").save(tmp, format="PNG")
