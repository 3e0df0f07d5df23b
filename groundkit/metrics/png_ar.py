"""Average Recall of panoptic narrative grounding, exactly as the official PNG evaluation.

One IoU per grounded noun phrase (the phrase's ground truth is the union of its segments). The
official code (PNG baseline ``average_accuracy``, copied by PPMN and later repositories) builds
``recall(t) = mean(iou >= t)`` on ``t = np.arange(0, 1, 1e-5)`` and sums
``(t[i+1] - t[i]) * recall(t[i])`` over the 99,999 intervals, left to right: a left Riemann sum.
The interval widths are the float differences of ``np.arange``, not exactly ``1e-5``; we use the
same widths and the same left-to-right summation, so the value is the official one to the last bit
(and within 1e-11 of the ``1e-5 * sum(recall)`` formula of the metrics notes).

IoU of an empty union: ``mask_iou`` returns 0.0 (the official ``intersection / union`` gives NaN).
``png_average_recall`` also accepts NaN IoUs and treats them as the official code does: a NaN is
below every threshold (it adds nothing to AR, where an IoU of 0 adds 1e-5) but counts in ``n``.
At the original resolution a grounded phrase's ground truth is never empty, so this only matters
for degenerate inputs.
"""
from __future__ import annotations

import numpy as np

THRESHOLDS = np.arange(0, 1, 1e-5)  # (100000,) the official thresholds
_WIDTHS = np.abs(THRESHOLDS[1:] - THRESHOLDS[:-1])  # (99999,) interval widths, as the official loop
SPLITS = ("overall", "things", "stuff", "singulars", "plurals")


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two masks ``(H, W) bool``; 0.0 when both are empty."""
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: prediction {pred.shape}, ground truth {gt.shape}")
    inter = np.count_nonzero(pred & gt)
    union = np.count_nonzero(pred | gt)
    return inter / union if union else 0.0


def mask_ious(preds: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """IoU of mask pairs: ``preds, gts (N, H, W) bool -> (N,) float64``; 0.0 for empty unions."""
    if preds.shape != gts.shape:
        raise ValueError(f"mask shapes differ: predictions {preds.shape}, ground truth {gts.shape}")
    n = len(preds)
    inter = np.count_nonzero((preds & gts).reshape(n, -1), axis=1)
    union = np.count_nonzero((preds | gts).reshape(n, -1), axis=1)
    return np.divide(inter, union, out=np.zeros(n), where=union > 0)


def _num_thresholds_reached(ious: np.ndarray) -> np.ndarray:
    """For each IoU, how many of the first 99,999 thresholds satisfy ``t <= iou`` (NaN: none).

    Compared against the threshold array itself, so that IoUs at exact multiples of 1e-5 land on
    the same side as the official ``iou >= t``.
    """
    k = np.searchsorted(THRESHOLDS[:-1], ious, side="right")
    return np.where(np.isnan(ious), 0, k)


def recall_curve(ious: np.ndarray, thresholds: np.ndarray = THRESHOLDS) -> np.ndarray:
    """``recall[j]``: the fraction of ``ious (N,)`` that are ``>= thresholds[j]``, ``(T,)``.

    NaN IoUs count in the denominator and never reach a threshold. Empty ``ious``: all NaN.
    """
    ious = np.asarray(ious, dtype=np.float64)
    if len(ious) == 0:
        return np.full(len(thresholds), np.nan)
    valid = np.sort(ious[~np.isnan(ious)])
    reached = len(valid) - np.searchsorted(valid, thresholds, side="left")
    return reached / len(ious)


def average_recall(ious: np.ndarray) -> float:
    """The official AR of phrase IoUs ``(N,)``; NaN when ``N == 0`` (as the official code)."""
    ious = np.asarray(ious, dtype=np.float64)
    n = len(ious)
    if n == 0:
        return float("nan")
    # recalled[i] = number of phrases with iou >= t[i], for the 99,999 left end points
    k = _num_thresholds_reached(ious)
    recalled = n - np.cumsum(np.bincount(k, minlength=len(_WIDTHS) + 1))[:-1]
    # cumsum adds left to right like the official Python loop, so the float result is identical
    return float(np.cumsum(_WIDTHS * (recalled / n))[-1])


def accuracy_at_half(ious: np.ndarray) -> float:
    """Fraction of phrases with IoU strictly above 0.5; NaN when there are none."""
    ious = np.asarray(ious, dtype=np.float64)
    return float(np.mean(ious > 0.5)) if len(ious) else float("nan")


def split_masks(is_thing: np.ndarray, num_segments: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean selections ``(N,)`` of the five reported splits.

    singulars / plurals: exactly one / more than one ground-truth segment (the annotators'
    ``plural`` flag is not used); things / stuff: ``isthing`` of the phrase's last segment.
    """
    is_thing = np.asarray(is_thing, dtype=bool)
    num_segments = np.asarray(num_segments)
    return {
        "overall": np.ones(len(is_thing), dtype=bool),
        "things": is_thing,
        "stuff": ~is_thing,
        "singulars": num_segments == 1,
        "plurals": num_segments > 1,
    }


def png_average_recall(ious: np.ndarray, is_thing: np.ndarray,
                       num_segments: np.ndarray) -> dict[str, dict[str, float | int]]:
    """AR, acc@0.5 and count of every split.

    ious: ``(N,) float`` one IoU per grounded phrase; is_thing: ``(N,) bool`` isthing of the
    phrase's last segment's category; num_segments: ``(N,) int`` its number of GT segments.
    Returns ``{"overall"|"things"|"stuff"|"singulars"|"plurals": {"ar", "acc@0.5", "n"}}``,
    fractions in [0, 1]; an empty split has NaN ``ar`` and ``acc@0.5``.
    """
    ious = np.asarray(ious, dtype=np.float64)
    if not (len(ious) == len(is_thing) == len(num_segments)):
        raise ValueError(f"lengths differ: {len(ious)} ious, {len(is_thing)} is_thing, "
                         f"{len(num_segments)} num_segments")
    return {name: {"ar": average_recall(ious[sel]), "acc@0.5": accuracy_at_half(ious[sel]),
                   "n": int(sel.sum())}
            for name, sel in split_masks(is_thing, num_segments).items()}
