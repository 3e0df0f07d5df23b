"""VL-NMS's training targets and losses (paper, 3.4: Eqs. 4-7).

The foreground of an expression is its referent and its contextual objects (the pseudo ground
truth of :mod:`groundkit.data.contextual`). A candidate's ``rho`` is its largest IoU with a
foreground box; it is a positive (``r* = 1``) when ``rho >= 0.5``.

Losses take a padded batch (:func:`~groundkit.models.referring.vlnms.pad_rows`): ``logits (B, N)``
of the relatedness modules, targets ``(B, N, ...)`` and ``mask (B, N)`` True on real candidates.
Each is the paper's per-expression mean (over candidates, pairs or positives), then the mean over
the expressions that have at least one such term, so every expression weighs the same whatever its
number of candidates. A batch without any term (e.g. no candidate at all) gives a zero that still
backpropagates, not an error.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from groundkit.errors import InputError
from groundkit.ops.boxes import box_iou

__all__ = ["relatedness_targets", "ranking_levels", "bce_loss", "ranking_loss", "box_regression_loss"]

POSITIVE_IOU = 0.5
LEVEL_STEP = 0.1      # Eq. 5's quantisation: q = ceil(max(0, rho - 0.5) / 0.1), levels 0..5
LEVELS = 6


def relatedness_targets(candidate_boxes: Tensor, referent_box: Tensor, context_boxes: Tensor | None = None,
                        threshold: float = POSITIVE_IOU) -> dict[str, Tensor]:
    """Targets of one expression's candidates.

    candidate_boxes: ``(N, 4)`` xyxy; referent_box: ``(4,)``; context_boxes: ``(M, 4)`` or None
    (M may be 0), in the same pixels. Returns ``labels (N,)`` float ``r*`` (1 where ``rho >=
    threshold``), ``rho (N,)`` the largest IoU with the foreground ``[referent; context]`` (Eq. 5's
    rho), ``referent_iou (N,)``, ``matched (N,)`` long, the row of that foreground box (0: the
    referent, ``1 + m``: context box m; ties: the lower row), and ``matched_boxes (N, 4)`` it
    (the regression target of Eq. 7: ``box_deltas(candidate_boxes, matched_boxes)``).
    """
    foreground = referent_box.reshape(1, 4)
    if context_boxes is not None:
        foreground = torch.cat([foreground, context_boxes.reshape(-1, 4).to(foreground)])
    iou = box_iou(candidate_boxes, foreground)                          # (N, 1 + M)
    matched = iou.argmax(dim=1)
    rho = iou.gather(1, matched[:, None])[:, 0]
    return {"labels": (rho >= threshold).to(iou.dtype), "rho": rho, "referent_iou": iou[:, 0],
            "matched": matched, "matched_boxes": foreground[matched]}


def ranking_levels(rho: Tensor) -> Tensor:
    """Eq. 5's quantisation ``q = ceil(max(0, rho - 0.5) / 0.1)``: ``(...)`` -> ``(...)`` long
    in ``0..5``; ``q >= 1`` exactly when ``rho > 0.5``. Computed in float64, the formula on the
    exact value of ``rho`` (a float32 IoU printed 0.7 is 0.70000002: level 3, as it should)."""
    q = torch.ceil((rho.double() - POSITIVE_IOU).clamp(min=0) / LEVEL_STEP)
    return q.long().clamp(max=LEVELS - 1)


def _mean_per_expression(values: Tensor, rows: Tensor, batch: int, like: Tensor) -> Tensor:
    """``values (P,)`` of expressions ``rows (P,)``: the mean within each expression, then over
    the expressions that have values; a zero tied to ``like``'s graph when none has any."""
    total = like.new_zeros(batch).index_add(0, rows, values)
    count = torch.bincount(rows, minlength=batch)
    has = count > 0
    if not has.any():
        return like.sum() * 0.0
    return (total[has] / count[has]).mean()


def bce_loss(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Eq. 4: binary cross-entropy of ``sigmoid(logits)`` against ``labels``, per expression the
    mean over its candidates. logits, labels: ``(B, N)``; mask: ``(B, N)`` -> scalar."""
    rows = mask.nonzero()[:, 0]
    values = F.binary_cross_entropy_with_logits(logits[mask], labels[mask].to(logits.dtype),
                                                reduction="none")
    return _mean_per_expression(values, rows, len(logits), logits)


def ranking_loss(logits: Tensor, rho: Tensor, mask: Tensor, margin: float = 0.1,
                 top_h: int = 100) -> Tensor:
    """Eq. 5: a hinge between candidates of different IoU levels, on ``r = sigmoid(logits)``.

    Reading of the paper (and of the official Ref-NMS ``PairSampler``/``RankLoss``): levels
    ``q = ranking_levels(rho)``; every candidate with ``q_i >= 1`` (``rho > 0.5``) is a positive;
    its negatives are the ``top_h`` candidates of the same expression with the highest ``r``
    (hard negatives, selection without gradient) among those with a lower level ``q_j < q_i`` —
    positives of lower levels included. The loss of an expression is
    ``1/P sum_(i, j) max(0, r_j - r_i + margin)`` over its ``P`` pairs (the paper's ``rho_j <
    rho_i`` pair, with the names swapped). Ties in the top-h cut do not change the value.

    logits, rho: ``(B, N)``; mask: ``(B, N)`` -> scalar.
    """
    b, n = logits.shape
    r = logits.sigmoid()
    q = ranking_levels(rho).masked_fill(~mask, -1)                    # padding: below every level
    if top_h < 1:
        raise InputError(f"ranking_loss: top_h must be >= 1, got {top_h}")
    if n == 0:
        return logits.sum() * 0.0
    k = min(top_h, n)
    # The negatives of a level l = 1..5: the k real candidates of level < l with the highest r.
    level = torch.arange(1, LEVELS, device=q.device)
    eligible = mask[:, None, :] & (q[:, None, :] < level[None, :, None])              # (B, 5, N)
    order = r.detach()[:, None, :].masked_fill(~eligible, float("-inf")).topk(k, dim=-1).indices
    negative = r[:, None, :].expand(b, LEVELS - 1, n).gather(-1, order)                # (B, 5, k)
    valid = eligible.gather(-1, order)
    # Each candidate takes its level's row of negatives.
    row = (q - 1).clamp(min=0)[..., None].expand(b, n, k)                              # (B, N, k)
    negative, valid = negative.gather(1, row), valid.gather(1, row) & (q >= 1)[..., None]
    hinge = (negative - r[..., None] + margin).clamp(min=0)
    pairs = valid.nonzero()
    return _mean_per_expression(hinge[valid], pairs[:, 0], b, logits)


def box_regression_loss(deltas: Tensor, target_deltas: Tensor, positive: Tensor,
                        beta: float = 1.0) -> Tensor:
    """Eq. 7's regression term: smooth-L1 (``beta``) of the predicted against the target deltas,
    summed over the 4 coordinates, per expression the mean over its positives (``r* = 1``; the
    targets of other candidates are never read, they may be inf or NaN).

    deltas, target_deltas: ``(B, N, 4)``; positive: ``(B, N)`` bool (real positives only) -> scalar.
    """
    rows = positive.nonzero()[:, 0]
    values = F.smooth_l1_loss(deltas[positive], target_deltas[positive].to(deltas.dtype),
                              reduction="none", beta=beta).sum(-1)
    return _mean_per_expression(values, rows, len(deltas), deltas)
