"""The heuristic merge of Panoptic FPN (Kirillov et al. 2019), kept for the paper's "heu." ablation
(Table 1, D1 vs D2): the same model's outputs merged by rules instead of the argmax over P.

Rules: visit instances by decreasing score, skip those under ``score_thresh``; an instance whose
mask is already taken for more than ``overlap_thresh`` of its area is dropped, otherwise it gets its
still-free pixels. Then every stuff label of the semantic prediction gets its still-free pixels,
when at least ``stuff_area_min`` of them are left. Everything else stays void (id 0).
"""
from __future__ import annotations

import torch


def heuristic_merge(masks: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor,
                    semantic: torch.Tensor, num_things: int, score_thresh: float = 0.5,
                    overlap_thresh: float = 0.5, stuff_area_min: int = 4096
                    ) -> tuple[torch.Tensor, list[dict]]:
    """Merge instance and semantic predictions of one image.

    masks: ``(D, H, W)`` bool; scores: ``(D,)``; classes: ``(D,)`` thing labels; semantic: ``(H, W)``
    int64 argmax labels (things ``[0, num_things)``, then stuff). Returns ``id_map (H, W) int64`` with
    ids 1..n (0 = void) and ``segments``: ``[{"id", "label", "isthing", "score"}]`` in id order.
    """
    id_map = torch.zeros(semantic.shape, dtype=torch.long, device=semantic.device)
    segments: list[dict] = []
    for k in torch.argsort(scores, descending=True, stable=True).tolist():
        score = float(scores[k])
        area = int(masks[k].sum())
        if score < score_thresh or area == 0:
            continue
        free = masks[k] & (id_map == 0)
        if area - int(free.sum()) > overlap_thresh * area:
            continue
        segments.append({"id": len(segments) + 1, "label": int(classes[k]), "isthing": True,
                         "score": score})
        id_map[free] = len(segments)
    for label in torch.unique(semantic).tolist():
        if label < num_things:
            continue
        free = (semantic == label) & (id_map == 0)
        if int(free.sum()) < stuff_area_min:
            continue
        segments.append({"id": len(segments) + 1, "label": int(label), "isthing": False, "score": 1.0})
        id_map[free] = len(segments)
    return id_map, segments
