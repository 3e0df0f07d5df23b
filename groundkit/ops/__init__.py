"""Ops shared by the models: box geometry, IoU, NMS, RoIAlign (pure torch, no torchvision) and
mask codecs (RLE, polygons, resize), erosion and the guided filter (edge-aware refinement).

The names below are loaded on first use (PEP 562), not at import: ``boxes``, ``guided_filter``
and ``roi_align`` import torch, and the scorers, which need only the NumPy codecs of ``masks``,
must not pay for it (``groundkit score`` runs without torch).
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_MODULE_OF = {
    **dict.fromkeys([
        "batched_nms", "box_area", "box_cxcywh_to_xyxy", "box_iou", "box_xywh_to_xyxy",
        "box_xyxy_to_cxcywh", "box_xyxy_to_xywh", "clip_boxes", "generalized_box_iou",
        "masks_to_boxes", "nms", "remove_small_boxes"], "boxes"),
    **dict.fromkeys([
        "decode_rle", "encode_rle", "erode", "masks_to_rles", "polygons_to_mask", "resize_masks",
        "rles_to_masks", "segmentation_to_mask"], "masks"),
    **dict.fromkeys(["box_mean", "guided_filter"], "guided_filter"),
    **dict.fromkeys(["RoIAlign", "roi_align"], "roi_align"),
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'groundkit.ops' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"groundkit.ops.{_MODULE_OF[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """``roi_align`` and ``guided_filter`` name a submodule and its function; the package's is the
    function, as when this file imported it eagerly. The import system binds a submodule on its
    package after loading it (whoever imports it), so that binding is turned into the function."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _MODULE_OF.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
