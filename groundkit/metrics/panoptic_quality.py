"""Panoptic Quality, exactly as the COCO panoptic API's ``pq_compute``.

Per image: count the pixels of every (ground-truth id, predicted id) pair; a pair of the same
category whose ground truth is neither VOID nor crowd is a true positive when
``IoU = inter / (pred_area + gt_area - inter - pred_void) > 0.5`` (strict, so matches are unique).
Ground-truth areas come from the JSON, predicted areas from the PNG. Unmatched non-crowd ground
truth is a false negative; an unmatched prediction is a false positive unless more than half of it
lies on VOID plus the crowd segment of its category (the last crowd segment of that category in
the image, as the official dict keeps). Pixels of a ground-truth id missing from the JSON count
neither as VOID nor as a segment, as in the official code.

``pq_stats_image`` counts one image into a :class:`PQStat`; stats add up over images;
``pq_average`` turns them into the All / Things / Stuff means and per-class values.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from groundkit.errors import FormatError
from groundkit.structures import Category, PanopticAnnotation, Segment

VOID = 0


@dataclass
class ClassStat:
    """Counts of one category: true positives, false positives, false negatives, sum of TP IoUs."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou: float = 0.0


@dataclass
class PQStat:
    """Per-category counts; ``a += b`` accumulates images (or shards of a split)."""

    per_class: defaultdict[int, ClassStat] = field(default_factory=lambda: defaultdict(ClassStat))

    def __iadd__(self, other: PQStat) -> PQStat:
        for cat, s in other.per_class.items():
            mine = self.per_class[cat]
            mine.tp += s.tp
            mine.fp += s.fp
            mine.fn += s.fn
            mine.iou += s.iou
        return self


def _categories_by_id(categories: Mapping[int, Category] | Sequence[Category]
                      ) -> dict[int, Category]:
    return dict(categories) if isinstance(categories, Mapping) else {c.id: c for c in categories}


def _check_ids(segments: Sequence[Segment], what: str, where: str | None, image_id) -> np.ndarray:
    """Segment ids ``(K,) int64``; VOID and repeated ids are refused (a PNG cannot tell them
    apart)."""
    listed = [s.id for s in segments]
    if VOID in listed or len(set(listed)) != len(listed):  # the rare case: find the first culprit
        for i, sid in enumerate(listed):
            if sid == VOID or sid in listed[:i]:
                problem = "is VOID (0)" if sid == VOID else "is listed twice"
                raise FormatError(where, f"{what} segment id {sid} {problem}",
                                  item=f"image {image_id}")
    return np.array(listed, dtype=np.int64)


def segment_index_map(ids: np.ndarray, seg_ids: np.ndarray) -> np.ndarray:
    """``ids (H, W)`` -> flat index ``(H*W,)``: 0 VOID, ``1 + j`` for ``seg_ids[j]`` and ``K + 1``
    for any other id.

    Compact indices let ``np.bincount`` count pixels; one binary search per pixel over the K sorted
    ids (K is small) is cheaper than sorting the pixels as ``np.unique`` does.
    """
    flat = np.asarray(ids, dtype=np.int64).ravel()
    k = len(seg_ids)
    if k == 0:
        return np.where(flat == VOID, 0, 1)
    order = np.argsort(seg_ids)
    pos = np.minimum(np.searchsorted(seg_ids[order], flat), k - 1)
    index = np.where(seg_ids[order][pos] == flat, order[pos] + 1, k + 1)
    index[flat == VOID] = 0
    return index


def union_masks(ids: np.ndarray, ann: PanopticAnnotation, groups: Sequence[Iterable[int]]
                ) -> np.ndarray:
    """``(N, H, W) bool``: for each of N groups of segment ids of ``ann``, the union of their masks
    in the segment map ``ids (H, W)``, by one gather for all groups (``np.isin`` per group gives
    the same, slower). Every id of a group must be one of ``ann``'s segments."""
    seg_ids = np.array([s.id for s in ann.segments], dtype=np.int64)
    column = {sid: j + 1 for j, sid in enumerate(seg_ids.tolist())}  # as segment_index_map
    member = np.zeros((len(groups), len(seg_ids) + 2), dtype=bool)
    for k, group in enumerate(groups):
        member[k, [column[s] for s in group]] = True
    return member[:, segment_index_map(ids, seg_ids)].reshape(len(groups), *np.shape(ids))


def _overlaps(gt_ids: np.ndarray, gt_seg_ids: np.ndarray, pred_ids: np.ndarray,
              pred_seg_ids: np.ndarray) -> np.ndarray:
    """Pixel counts ``(G + 2, P + 2)``: row/column 0 is VOID, then the listed segments, then the
    ids not listed.

    Counted over runs of pixels of the same (gt id, pred id) pair in row-major order: segments are
    regions, so a 128 px map has some 20 times fewer runs than pixels, and only the runs go
    through the binary search of :func:`segment_index_map` (noise would make every pixel a run:
    the same counts, no faster).
    """
    if np.shape(gt_ids) != np.shape(pred_ids):
        raise ValueError(f"id maps differ in size: {np.shape(gt_ids)} and {np.shape(pred_ids)}")
    gt_flat, pred_flat = np.ravel(gt_ids), np.ravel(pred_ids)
    cols = len(pred_seg_ids) + 2
    size = (len(gt_seg_ids) + 2) * cols
    if gt_flat.size == 0:
        return np.zeros((size // cols, cols), dtype=np.int64)
    starts = np.flatnonzero((gt_flat[1:] != gt_flat[:-1]) | (pred_flat[1:] != pred_flat[:-1])) + 1
    starts = np.concatenate([[0], starts])
    lengths = np.diff(np.append(starts, gt_flat.size))
    pair = (segment_index_map(gt_flat[starts], gt_seg_ids) * cols
            + segment_index_map(pred_flat[starts], pred_seg_ids))
    # float weights are exact: a count stays below 2**53
    counts = np.bincount(pair, weights=lengths, minlength=size)
    return counts.astype(np.int64).reshape(-1, cols)


def _check_prediction(overlap: np.ndarray, pred_ids: np.ndarray, pred_segments: Sequence[Segment],
                      categories: Mapping[int, Category], image_id, source: str | None) -> None:
    """The official sanity checks, as clear errors: PNG ids <-> JSON segments, known categories."""
    item = f"image {image_id}"
    if overlap[:, -1].any():
        listed = {s.id for s in pred_segments}
        extra = sorted(set(np.unique(pred_ids).tolist()) - listed - {VOID})
        raise FormatError(source, f"segment ids {extra} are in the prediction PNG but not in "
                                  "its JSON segments_info", item=item)
    for s in pred_segments:
        if s.category_id not in categories:
            raise FormatError(source, f"segment {s.id} has unknown category_id {s.category_id}",
                              item=item, field="category_id")
    missing = [s.id for s, area in zip(pred_segments, overlap[:, 1:-1].sum(0)) if area == 0]
    if missing:
        raise FormatError(source, f"segment ids {missing} are in the JSON segments_info but not "
                                  "in the prediction PNG", item=item)


def pq_stats_image(gt_ids: np.ndarray, gt_segments: Sequence[Segment], pred_ids: np.ndarray,
                   pred_segments: Sequence[Segment],
                   categories: Mapping[int, Category] | Sequence[Category], *,
                   image_id: int | str | None = None, source: str | None = None) -> PQStat:
    """Count one image.

    gt_ids, pred_ids: ``(H, W)`` int segment ids (0 = VOID); gt_segments: the GT JSON segments
    (``area`` and ``iscrowd`` used); pred_segments: the prediction JSON segments (``area`` ignored,
    recomputed from ``pred_ids``). ``image_id`` and ``source`` (the prediction file) name the
    culprit in errors.
    """
    categories = _categories_by_id(categories)
    item = f"image {image_id}"
    for s in gt_segments:
        if s.category_id not in categories:
            raise FormatError(None, f"ground-truth segment {s.id} has unknown category_id "
                                    f"{s.category_id}", item=item, field="category_id")
    gt_seg_ids = _check_ids(gt_segments, "ground-truth", None, image_id)
    pred_seg_ids = _check_ids(pred_segments, "predicted", source, image_id)
    overlap = _overlaps(gt_ids, gt_seg_ids, pred_ids, pred_seg_ids)
    _check_prediction(overlap, pred_ids, pred_segments, categories, image_id, source)

    gt_cat = np.array([s.category_id for s in gt_segments], dtype=np.int64)
    gt_crowd = np.array([bool(s.iscrowd) for s in gt_segments], dtype=bool)
    gt_area = np.array([s.area for s in gt_segments], dtype=np.float64)  # JSON may hold floats
    pred_cat = np.array([s.category_id for s in pred_segments], dtype=np.int64)
    inter = overlap[1:-1, 1:-1]  # (G, P)
    pred_area = overlap[:, 1:-1].sum(0)
    pred_void = overlap[0, 1:-1]
    candidate = (inter > 0) & ~gt_crowd[:, None] & (gt_cat[:, None] == pred_cat[None, :])
    union = pred_area[None, :] + gt_area[:, None] - inter - pred_void[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    matched = candidate & (iou > 0.5)

    stat = PQStat()
    g_idx, p_idx = np.nonzero(matched)
    # add TP IoUs in the official order (sorted gt id, then pred id) for the same float sum
    for g, p in sorted(zip(g_idx, p_idx), key=lambda gp: (gt_seg_ids[gp[0]], pred_seg_ids[gp[1]])):
        stat.per_class[int(gt_cat[g])].tp += 1
        stat.per_class[int(gt_cat[g])].iou += float(iou[g, p])
    crowd_of: dict[int, int] = {}  # category -> row of its last crowd segment
    for g in range(len(gt_segments)):
        if gt_crowd[g]:
            crowd_of[int(gt_cat[g])] = g
        elif not matched[g].any():
            stat.per_class[int(gt_cat[g])].fn += 1
    for p in np.flatnonzero(~matched.any(0)):
        cat = int(pred_cat[p])
        ignored = pred_void[p] + (inter[crowd_of[cat], p] if cat in crowd_of else 0)
        if ignored / pred_area[p] <= 0.5:
            stat.per_class[cat].fp += 1
    return stat


def _class_scores(s: ClassStat) -> dict[str, float]:
    denom = s.tp + 0.5 * s.fp + 0.5 * s.fn
    return {"pq": s.iou / denom, "sq": s.iou / s.tp if s.tp else 0.0, "rq": s.tp / denom}


def _mean_scores(members: list[dict[str, float]]) -> dict[str, float | int]:
    """Means of pq/sq/rq, summed left to right as the official loop (not Python 3.12's fsum-like
    ``sum``); NaN when empty."""
    totals = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    for m in members:
        for key in totals:
            totals[key] += m[key]
    n = len(members)
    return {**{k: (v / n if n else float("nan")) for k, v in totals.items()}, "n": n}


def pq_average(stat: PQStat, categories: Mapping[int, Category] | Sequence[Category]) -> dict:
    """``{"All"|"Things"|"Stuff": {"pq", "sq", "rq", "n"}, "per_class": {cat_id: {...}}}``.

    Means over the categories with TP + FP + FN > 0 (``n`` of them; NaN means when ``n == 0``).
    ``per_class`` lists every category, with zeros for skipped ones as the official code, plus
    its ``name`` and ``tp``/``fp``/``fn`` counts.
    """
    categories = _categories_by_id(categories)
    per_class: dict[int, dict] = {}
    groups: dict[str, list[dict[str, float]]] = {"All": [], "Things": [], "Stuff": []}
    for cat_id, cat in categories.items():
        s = stat.per_class.get(cat_id, ClassStat())
        scores = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
        if s.tp + s.fp + s.fn > 0:
            scores = _class_scores(s)
            groups["All"].append(scores)
            groups["Things" if cat.isthing else "Stuff"].append(scores)
        per_class[cat_id] = {"name": cat.name, **scores, "tp": s.tp, "fp": s.fp, "fn": s.fn}
    result: dict = {name: _mean_scores(members) for name, members in groups.items()}
    result["per_class"] = per_class
    return result
