"""Proposal recall of two-stage referring methods (VL-NMS / Ref-NMS Table 1).

A target object is recalled when at least one proposal of its expression has IoU ``> 0.5``
(strict) with it. Reported with the mean number of proposals per expression, since recall alone
rewards keeping every proposal.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from groundkit.metrics.referring import box_iou_pairwise


def covered(proposals: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Which targets some proposal overlaps with IoU > 0.5.

    proposals: ``(K, 4)``, targets: ``(M, 4)``, both xyxy -> ``(M,) bool``.
    """
    targets = np.asarray(targets, dtype=np.float64).reshape(-1, 4)
    if len(proposals) == 0:
        return np.zeros(len(targets), dtype=bool)
    return (box_iou_pairwise(proposals, targets) > 0.5).any(axis=0)


def proposal_recall(proposals: Sequence[np.ndarray],
                    targets: Sequence[np.ndarray]) -> dict[str, float | int]:
    """Recall over all target objects and the mean proposal count per expression.

    proposals[i]: ``(K_i, 4)`` xyxy boxes kept for expression i; targets[i]: ``(4,)`` its referent,
    or ``(M_i, 4)`` several objects (e.g. the contextual objects), each counted once.
    Returns ``{"recall", "mean_proposals", "n"}`` with ``n`` the number of target objects; NaN
    values when there is nothing to count.
    """
    if len(proposals) != len(targets):
        raise ValueError(f"{len(proposals)} proposal sets for {len(targets)} target sets")
    hits = [covered(np.asarray(p, dtype=np.float64).reshape(-1, 4), t)
            for p, t in zip(proposals, targets)]
    hits_all = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
    counts = [len(np.asarray(p).reshape(-1, 4)) for p in proposals]
    return {"recall": float(hits_all.mean()) if len(hits_all) else float("nan"),
            "mean_proposals": float(np.mean(counts)) if counts else float("nan"),
            "n": int(len(hits_all))}


RECALL_KS = (1, 2, 3, 5)


def recall_at_k(proposals: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                ks: Sequence[int] = RECALL_KS) -> dict[str, float | int]:
    """Recall of the targets among the first ``k`` proposals of each expression, for each ``k``.

    proposals[i]: ``(K_i, 4)`` xyxy, best ranked first (an expression with fewer than ``k``
    proposals is counted with all of them); targets[i]: as :func:`proposal_recall`'s.
    Returns ``{"recall@k": ... for k in ks, "mean_proposals", "n"}`` (``mean_proposals`` of all
    the proposals given, not cut at any ``k``).
    """
    if any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise ValueError(f"ks: expected positive integers, got {list(ks)}")
    boxes = [np.asarray(p, dtype=np.float64).reshape(-1, 4) for p in proposals]
    out: dict[str, float | int] = {f"recall@{k}": proposal_recall([p[:k] for p in boxes], targets)["recall"]
                                   for k in ks}
    whole = proposal_recall(boxes, targets)
    out.update(mean_proposals=whole["mean_proposals"], n=whole["n"])
    return out
