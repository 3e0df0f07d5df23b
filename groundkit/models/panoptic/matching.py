"""The panoptic matching loss (paper Sec. 3.5, Eq. 5) on the detector's *predicted* boxes.

Matching, detection-centric as the paper words it: every detection matches the ground-truth thing
segment of its own class with the highest box IoU, when that IoU is ``>= iou_threshold`` (IoU across
classes counts as 0). Several detections matched to one segment are duplicates: all but the top
match (highest IoU; ties go to the lower index) are removed *before* the potential is built, so they
get no channel and no gradient. A segment no kept detection matches becomes "ignore". Detections that
match nothing keep their channel with no pixel assigned: the loss pushes them down (false positives).
Stuff segments match their class's whole-image channel. The loss is a cross-entropy on P.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from groundkit.labels import IGNORE_LABEL
from groundkit.ops.boxes import box_iou

IGNORE = -100  # F.cross_entropy's default ignore_index


def match_detections(det_boxes: torch.Tensor, det_classes: torch.Tensor, gt_boxes: torch.Tensor,
                     gt_classes: torch.Tensor, iou_threshold: float = 0.5
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Match detections to ground-truth thing segments.

    det_boxes: ``(D, 4)`` xyxy; det_classes: ``(D,)``; gt_boxes: ``(G, 4)``; gt_classes: ``(G,)``.
    Returns ``keep (D,) bool`` (False for dropped duplicates) and ``det_to_gt (D,) int64``: the
    segment a kept detection stands for, -1 for none.
    """
    d, g = len(det_boxes), len(gt_boxes)
    det_to_gt = torch.full((d,), -1, dtype=torch.long, device=det_boxes.device)
    keep = torch.ones(d, dtype=torch.bool, device=det_boxes.device)
    if d == 0 or g == 0:
        return keep, det_to_gt
    iou = box_iou(det_boxes.detach(), gt_boxes)
    iou = iou * (det_classes[:, None] == gt_classes[None, :])
    best_iou, best_gt = iou.max(dim=1)
    matched = best_iou >= iou_threshold
    # Per segment, the top match: its highest IoU, then the lowest index among detections reaching
    # it (scatter reductions, because index assignment with repeated indices has no defined winner).
    candidates = torch.nonzero(matched).flatten()
    segments, ious = best_gt[candidates], best_iou[candidates]
    top_iou = torch.full((g,), -1.0, device=iou.device).scatter_reduce(0, segments, ious, "amax")
    at_top = ious == top_iou[segments]
    first = torch.full((g,), d, dtype=torch.long, device=iou.device)
    first = first.scatter_reduce(0, segments[at_top], candidates[at_top], "amin")
    winners = first[first < d]
    keep[candidates] = False
    keep[winners] = True
    det_to_gt[winners] = best_gt[winners]
    return keep, det_to_gt


def panoptic_target(semantic: torch.Tensor, gt_masks: torch.Tensor, det_to_gt: torch.Tensor,
                    num_things: int, ignore_label: int = IGNORE_LABEL) -> torch.Tensor:
    """Channel index of every pixel for P of one image, on P's grid.

    semantic: ``(h, w)`` int64 labels (things ``[0, num_things)``, then stuff; ``ignore_label`` void);
    gt_masks: ``(G, h, w)`` bool thing segments; det_to_gt: ``(D',)`` of the *kept* detections.
    Channels: ``[0, D')`` detections, ``D' + (label - num_things)`` stuff. Returns ``(h, w)`` int64
    with :data:`IGNORE` on void, on unmatched segments and on thing pixels outside every segment
    (crowd regions).
    """
    target = torch.full_like(semantic, IGNORE)
    stuff = (semantic >= num_things) & (semantic != ignore_label)
    target[stuff] = semantic[stuff] - num_things + len(det_to_gt)
    kept = torch.nonzero(det_to_gt >= 0).flatten()
    for channel, segment in zip(kept.tolist(), det_to_gt[kept].tolist()):
        target[gt_masks[segment]] = channel
    return target


def panoptic_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over channels of P. logits: ``(K, h, w)``; target: ``(h, w)`` (IGNORE allowed).

    Returns a scalar; 0 (with a graph) when every pixel is ignored, where cross_entropy gives NaN.
    """
    if not (target != IGNORE).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[None], target[None], ignore_index=IGNORE)
