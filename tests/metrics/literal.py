"""Slow, literal re-implementations of the official evaluation procedures, for tests only.

Loaded by path (tests run in importlib mode). Each function follows the official code step by
step, on plain Python loops and dicts, so that the fast implementations can be checked against it.
"""
import numpy as np

# --- PNG Average Recall (PNG baseline utils/meters.py average_accuracy) ------------------------

def official_recalls(ious):
    """Literal: one recall per threshold of np.arange(0, 1, 1e-5), ``iou >= t`` inclusive."""
    ious = np.asarray(ious, dtype=np.float64)
    return [np.sum(ious >= t) / len(ious) for t in np.arange(0, 1, 0.00001)]


def official_ar(recalls):
    """Literal: left Riemann sum with the float widths of the threshold array, left to right."""
    t = np.arange(0, 1, 0.00001)
    ar = 0
    for i in range(len(t) - 1):
        ar += np.abs(t[i + 1] - t[i]) * recalls[i]
    return ar


def notes_ar(recalls):
    """The metrics notes' formula: 1e-5 times the recall at the first 99,999 thresholds."""
    ar = 0.0
    for r in recalls[:-1]:
        ar += 1e-5 * r
    return ar


# --- COCO panoptic API pq_compute ---------------------------------------------------------------

def literal_image(gt, gt_segments, pred, pred_segments, stats):
    """The official per-image procedure, step by step, on Python dicts and per-pixel counting."""
    gt_segms = {s.id: {"category_id": s.category_id, "area": s.area, "iscrowd": int(s.iscrowd)}
                for s in gt_segments}
    pred_segms = {s.id: {"category_id": s.category_id} for s in pred_segments}
    for label in pred.ravel().tolist():
        if label != 0:
            pred_segms[label]["area"] = pred_segms[label].get("area", 0) + 1
    gt_pred_map = {}
    for g, p in zip(gt.ravel().tolist(), pred.ravel().tolist()):
        gt_pred_map[(g, p)] = gt_pred_map.get((g, p), 0) + 1
    gt_matched, pred_matched = set(), set()
    for (g, p), inter in sorted(gt_pred_map.items()):
        if g not in gt_segms or p not in pred_segms or gt_segms[g]["iscrowd"] == 1:
            continue
        if gt_segms[g]["category_id"] != pred_segms[p]["category_id"]:
            continue
        union = pred_segms[p]["area"] + gt_segms[g]["area"] - inter - gt_pred_map.get((0, p), 0)
        iou = inter / union
        if iou > 0.5:
            stats[gt_segms[g]["category_id"]][0] += 1
            stats[gt_segms[g]["category_id"]][3] += iou
            gt_matched.add(g)
            pred_matched.add(p)
    crowd = {}
    for g, info in gt_segms.items():
        if g in gt_matched:
            continue
        if info["iscrowd"] == 1:
            crowd[info["category_id"]] = g
            continue
        stats[info["category_id"]][2] += 1
    for p, info in pred_segms.items():
        if p in pred_matched:
            continue
        inter = gt_pred_map.get((0, p), 0)
        if info["category_id"] in crowd:
            inter += gt_pred_map.get((crowd[info["category_id"]], p), 0)
        if inter / info["area"] > 0.5:
            continue
        stats[info["category_id"]][1] += 1


def literal_average(stats, categories, isthing):
    """Literal: the official pq_average over the categories filtered by isthing (None: all)."""
    pq = sq = rq = n = 0
    for c in categories:
        if isthing is not None and c.isthing != isthing:
            continue
        tp, fp, fn, iou = stats[c.id]
        if tp + fp + fn == 0:
            continue
        n += 1
        pq += iou / (tp + 0.5 * fp + 0.5 * fn)
        sq += iou / tp if tp != 0 else 0
        rq += tp / (tp + 0.5 * fp + 0.5 * fn)
    return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}
