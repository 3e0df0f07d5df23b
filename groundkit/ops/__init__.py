"""Ops shared by the models: box geometry, IoU, NMS, RoIAlign (pure torch, no torchvision) and
mask codecs (RLE, polygons, resize) and erosion."""
from __future__ import annotations

from groundkit.ops.boxes import (
    batched_nms,
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xywh_to_xyxy,
    box_xyxy_to_cxcywh,
    box_xyxy_to_xywh,
    clip_boxes,
    generalized_box_iou,
    masks_to_boxes,
    nms,
    remove_small_boxes,
)
from groundkit.ops.masks import (
    decode_rle,
    encode_rle,
    erode,
    masks_to_rles,
    polygons_to_mask,
    resize_masks,
    rles_to_masks,
    segmentation_to_mask,
)
from groundkit.ops.roi_align import RoIAlign, roi_align

__all__ = [
    "box_xywh_to_xyxy", "box_xyxy_to_xywh", "box_cxcywh_to_xyxy", "box_xyxy_to_cxcywh",
    "box_area", "box_iou", "generalized_box_iou", "clip_boxes", "masks_to_boxes",
    "nms", "batched_nms", "remove_small_boxes", "roi_align", "RoIAlign",
    "encode_rle", "decode_rle", "masks_to_rles", "rles_to_masks", "polygons_to_mask",
    "segmentation_to_mask", "resize_masks", "erode",
]
