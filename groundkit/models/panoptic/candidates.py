"""Detector candidates before NMS, the first stage of two-stage referring (VL-NMS, Ref-NMS).

A candidate is one FCOS point whose best class scores above a threshold (VL-NMS: delta = 0.05),
with its box, its score for every thing class and its RoI feature. The score is the one the detector
ranks detections by, ``sqrt(p_class * p_centre)`` (:func:`~groundkit.models.panoptic.detector.point_scores`),
so a detection is one candidate kept by NMS with its score unchanged: every box of
:meth:`PanopticModel.detections <groundkit.models.panoptic.model.PanopticModel.detections>` is the
box of some candidate whenever its score threshold is above the candidates'. Unlike ``detect``,
candidates have no per-level top-n cut, and a point counts once (with its best class), not once per
class above the threshold.
"""
from __future__ import annotations

import torch

from groundkit.models.panoptic.detector import FCOS, LevelOutputs, nonempty, point_scores
from groundkit.models.panoptic.mask_head import multilevel_roi_align

ROI_CHUNK = 256  # boxes RoIAlign-ed at once: bounds memory when thousands of points pass the threshold


def point_candidates(detector: FCOS, out: LevelOutputs, i: int, size: tuple[int, int],
                     score_thresh: float) -> dict[str, torch.Tensor]:
    """The candidates of image ``i`` of a batch, in point order (level, then row-major cell).

    Returns ``boxes (N, 4)`` xyxy in input pixels clipped to ``size``, ``scores (N, K)`` the
    detector's score of each class, ``confidence (N,)`` their maximum (``> score_thresh``),
    ``classes (N,)`` its class, ``centerness (N,)`` the centre-ness probability (so the class
    probabilities are ``scores ** 2 / centerness``) and ``levels (N,)`` the FPN level ``k`` of
    the point (P``k``, stride ``2**k``). Points whose clipped box is empty are left out, as
    ``detect`` does.
    """
    boxes, prob, ctr_logits = detector.decode(out, i, size)
    scores = point_scores(prob, ctr_logits[:, None])                # (N, K)
    confidence, classes = scores.max(dim=1)
    keep = torch.nonzero((confidence > score_thresh) & nonempty(boxes)).flatten()
    return {"boxes": boxes[keep], "scores": scores[keep], "confidence": confidence[keep],
            "classes": classes[keep], "centerness": ctr_logits[keep].sigmoid(),
            "levels": out.level[keep] + detector.first_level}


def candidates_group(features: dict[str, torch.Tensor], out: LevelOutputs, detector: FCOS,
                     thing_ids: torch.Tensor, sizes: list[tuple[int, int]],
                     orig_sizes: list[tuple[int, int]], score_thresh: float, roi_size: int
                     ) -> list[dict[str, torch.Tensor]]:
    """:func:`point_candidates` of every image of a group that pads to one size, with
    ``category_ids``, ``roi_features (N, C, roi_size, roi_size)`` (RoIAlign on the FPN level of
    each box's size, as ``detections``), ``roi_boxes`` (the boxes in input pixels RoIAlign saw)
    and ``boxes`` rescaled from ``sizes`` to ``orig_sizes``."""
    results = []
    for i, ((h, w), (h0, w0)) in enumerate(zip(sizes, orig_sizes)):
        cand = point_candidates(detector, out, i, (h, w), score_thresh)
        rois = torch.cat([torch.full_like(cand["boxes"][:, :1], i), cand["boxes"]], dim=1)
        channels = features["p2"].shape[1]
        cand["roi_features"] = torch.cat(
            [features["p2"].new_zeros((0, channels, roi_size, roi_size))]
            + [multilevel_roi_align(features, rois[s:s + ROI_CHUNK], roi_size)
               for s in range(0, len(rois), ROI_CHUNK)])
        cand["category_ids"] = thing_ids[cand["classes"]]
        cand["roi_boxes"] = cand["boxes"]
        cand["boxes"] = cand["boxes"] * cand["boxes"].new_tensor([w0 / w, h0 / h] * 2)
        results.append(cand)
    return results
