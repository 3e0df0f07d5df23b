"""Referring expression metrics: REC box accuracy and RES mask IoUs.

REC: a prediction is correct when its box IoU with the ground truth is ``>= 0.5``; boxes are
``xyxy`` pixels with no "+1" convention (MDETR's GIoU >= 0.5 is a different, stricter number).
RES: ``oiou`` (also called cIoU) = total intersection / total union over all samples; ``miou`` =
mean per-sample IoU (0 for an empty union); ``pr@X`` = fraction of samples with IoU ``>= X``.
"""
from __future__ import annotations

import numpy as np

PRECISION_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)  # literals: np.arange(0.5, 1, 0.1) is not exact


def box_area(boxes: np.ndarray) -> np.ndarray:
    """``(..., 4)`` xyxy -> ``(...)`` area; degenerate boxes have area 0."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return (np.clip(boxes[..., 2] - boxes[..., 0], 0, None)
            * np.clip(boxes[..., 3] - boxes[..., 1], 0, None))


def box_iou_pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a (N, 4)`` with every box of ``b (M, 4)``, xyxy -> ``(N, M)``.

    0 where the union is empty. (NumPy on purpose: metrics do not depend on torch.)
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(bottom_right - top_left, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of matching rows: ``a, b (N, 4)`` xyxy -> ``(N,)``; 0 where the union is empty."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if len(a) != len(b):
        raise ValueError(f"box counts differ: {len(a)} predictions, {len(b)} ground truths")
    wh = np.clip(np.minimum(a[:, 2:], b[:, 2:]) - np.maximum(a[:, :2], b[:, :2]), 0, None)
    inter = wh[:, 0] * wh[:, 1]
    union = box_area(a) + box_area(b) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def rec_accuracy(pred_boxes: np.ndarray, gt_boxes: np.ndarray) -> dict[str, float | int]:
    """``{"acc@0.5", "n"}`` of ``pred_boxes, gt_boxes (N, 4)`` xyxy; NaN accuracy when N = 0."""
    ious = box_iou(pred_boxes, gt_boxes)
    return {"acc@0.5": float(np.mean(ious >= 0.5)) if len(ious) else float("nan"), "n": len(ious)}


def mask_intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """Pixel counts ``(intersection, union)`` of two masks ``(H, W) bool``."""
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: prediction {pred.shape}, ground truth {gt.shape}")
    return int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))


def res_scores(intersections: np.ndarray, unions: np.ndarray) -> dict[str, float | int]:
    """``{"oiou", "miou", "pr@0.5", ..., "pr@0.9", "n"}`` from per-sample pixel counts ``(N,)``.

    NaN values when N = 0; ``oiou`` is 0 when every union is empty.
    """
    inter = np.asarray(intersections, dtype=np.float64)
    union = np.asarray(unions, dtype=np.float64)
    n = len(inter)
    if n == 0:
        empty = {f"pr@{x}": float("nan") for x in PRECISION_THRESHOLDS}
        return {"oiou": float("nan"), "miou": float("nan"), **empty, "n": 0}
    ious = np.divide(inter, union, out=np.zeros(n), where=union > 0)
    total_union = union.sum()
    scores = {"oiou": float(inter.sum() / total_union) if total_union else 0.0,
              "miou": float(ious.mean())}
    scores.update({f"pr@{x}": float(np.mean(ious >= x)) for x in PRECISION_THRESHOLDS})
    scores["n"] = n
    return scores
