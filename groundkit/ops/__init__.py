"""Pure-torch ops shared by the models: box geometry, IoU, NMS and RoIAlign (no torchvision)."""
from __future__ import annotations

from groundkit.ops.boxes import (
    batched_nms, box_area, box_cxcywh_to_xyxy, box_iou, box_xywh_to_xyxy, box_xyxy_to_cxcywh,
    box_xyxy_to_xywh, clip_boxes, generalized_box_iou, masks_to_boxes, nms, remove_small_boxes,
)
from groundkit.ops.roi_align import RoIAlign, roi_align

__all__ = [
    "box_xywh_to_xyxy", "box_xyxy_to_xywh", "box_cxcywh_to_xyxy", "box_xyxy_to_cxcywh",
    "box_area", "box_iou", "generalized_box_iou", "clip_boxes", "masks_to_boxes",
    "nms", "batched_nms", "remove_small_boxes", "roi_align", "RoIAlign",
]
