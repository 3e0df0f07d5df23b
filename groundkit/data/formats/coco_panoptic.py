"""COCO panoptic: one JSON (images, annotations, categories) + one segment PNG per image.

The id of a pixel is ``R + 256 * G + 256**2 * B``; 0 is VOID.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from groundkit._io import atomic_path, write_json
from groundkit.structures import Category, ImageRecord, PanopticAnnotation, Segment


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


# --- JSON writer ----------------------------------------------------------------------------------

def _image_json(image: ImageRecord) -> dict[str, Any]:
    return {"id": image.id, "file_name": image.file_name, "height": image.height, "width": image.width}


def _segment_json(seg: Segment) -> dict[str, Any]:
    out = {"id": seg.id, "category_id": seg.category_id, "area": seg.area, "bbox": list(seg.bbox),
           "iscrowd": int(seg.iscrowd)}
    if seg.score is not None:  # predictions only; the official evaluator ignores extra keys
        out["score"] = seg.score
    return out


def _annotation_json(ann: PanopticAnnotation) -> dict[str, Any]:
    return {"image_id": ann.image_id, "file_name": ann.file_name,
            "segments_info": [_segment_json(s) for s in ann.segments]}


def _category_json(cat: Category) -> dict[str, Any]:
    return {"id": cat.id, "name": cat.name, "supercategory": cat.supercategory,
            "isthing": int(cat.isthing), "color": list(cat.color)}


def write_panoptic_json(path: str | Path, images: Iterable[ImageRecord],
                        annotations: Iterable[PanopticAnnotation],
                        categories: Iterable[Category]) -> None:
    """Write a COCO panoptic JSON (``images``, ``annotations``, ``categories``), atomically."""
    write_json(path, {"images": [_image_json(i) for i in images],
                      "annotations": [_annotation_json(a) for a in annotations],
                      "categories": [_category_json(c) for c in categories]})
