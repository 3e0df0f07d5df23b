"""PQ against the slow, literal re-implementation of the official pq_compute (literal.py)."""
from collections import defaultdict

import numpy as np
import pytest

from groundkit.errors import FormatError
from groundkit.metrics.panoptic_quality import PQStat, pq_average, pq_stats_image
from groundkit.structures import Category, Segment

CATEGORIES = [Category(1, "person", True), Category(2, "car", True), Category(3, "dog", True),
              Category(4, "kite", True), Category(5, "boat", True),  # 4: predicted only; 5: never
              Category(10, "sky", False), Category(11, "grass", False)]


# --- random synthetic images ---------------------------------------------------------------------

def random_image(rng, h=18, w=22):
    """GT with two stuff bands, thing boxes (some crowd), VOID noise; a perturbed prediction."""
    ids = iter(rng.permutation(np.arange(1, 3000))[:40].tolist())
    gt = np.zeros((h, w), np.int64)
    cats, crowd = {}, {}
    cut = int(rng.integers(4, h - 4))
    for rows, cat in ((slice(0, cut), 10), (slice(cut, h), 11)):
        sid = next(ids)
        gt[rows], cats[sid], crowd[sid] = sid, cat, False
    for _ in range(int(rng.integers(2, 7))):
        y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
        sid = next(ids)
        gt[y:y + rng.integers(2, 8), x:x + rng.integers(2, 8)] = sid
        cats[sid], crowd[sid] = int(rng.choice([1, 2, 3, 1])), bool(rng.random() < 0.25)
    gt[rng.random((h, w)) < 0.08] = 0
    # JSON areas are the pixel counts, sometimes off by one (the official trusts the JSON)
    gt_segments = [Segment(sid, cats[sid], int((gt == sid).sum()) + int(rng.random() < 0.2),
                           iscrowd=crowd[sid]) for sid in cats]

    pred = np.zeros_like(gt)
    pred_cat = {}
    for sid, cat in cats.items():
        if rng.random() < 0.85:
            pid = next(ids)
            pred[gt == sid] = pid
            pred_cat[pid] = cat if rng.random() < 0.85 else int(rng.choice([1, 2, 3, 4, 10, 11]))
    pids = list(pred_cat)
    noise = rng.random((h, w)) < 0.15
    pred[noise] = rng.choice(pids + [0], size=int(noise.sum()))
    y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
    pred[y:y + 4, x:x + 4] = np.roll(pred[y:y + 4, x:x + 4], 2, axis=1)
    if rng.random() < 0.5:  # an extra segment of a category absent from the GT
        pid = next(ids)
        pred[:3, :5], pred_cat[pid] = pid, 4
    present = set(np.unique(pred).tolist())
    pred_segments = [Segment(pid, cat) for pid, cat in pred_cat.items() if pid in present]
    return gt, gt_segments, pred, pred_segments


def test_random_images_match_literal(literal):
    rng = np.random.default_rng(0)
    ours, expected_stats = PQStat(), defaultdict(lambda: [0, 0, 0, 0.0])
    for _ in range(40):
        case = random_image(rng)
        ours += pq_stats_image(*case, CATEGORIES)
        literal.literal_image(*case, expected_stats)
    for cat, s in ours.per_class.items():
        assert [s.tp, s.fp, s.fn] == expected_stats[cat][:3]
        assert s.iou == pytest.approx(expected_stats[cat][3], abs=1e-12)
    result = pq_average(ours, CATEGORIES)
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        expected = literal.literal_average(expected_stats, CATEGORIES, isthing)
        assert result[name]["n"] == expected["n"]
        for key in ("pq", "sq", "rq"):
            assert result[name][key] == pytest.approx(expected[key], abs=1e-12)
    assert result["All"]["n"] == 6  # boat (5) never appears: skipped
    assert result["per_class"][5] == {"name": "boat", "pq": 0.0, "sq": 0.0, "rq": 0.0,
                                      "tp": 0, "fp": 0, "fn": 0}
    assert result["per_class"][4]["fp"] > 0 and result["per_class"][4]["pq"] == 0.0


# --- exact rules ---------------------------------------------------------------------------------

def one_row(gt_row, pred_row):
    return np.array([gt_row], np.int64), np.array([pred_row], np.int64)


def test_iou_exactly_half_is_not_a_match_unless_void_is_discounted():
    # GT {a, b}; prediction {a, b, c, d}: IoU 2 / 4 = 0.5 -> FN + FP
    gt, pred = one_row([7, 7, 9, 9], [3, 3, 3, 3])
    segs = [Segment(7, 1, 2), Segment(9, 10, 2)]
    stat = pq_stats_image(gt, segs, pred, [Segment(3, 1)], CATEGORIES)
    assert (stat.per_class[1].tp, stat.per_class[1].fn, stat.per_class[1].fp) == (0, 1, 1)
    # the same prediction whose extra pixels are VOID: union 4 - 2 = 2, IoU 1
    gt, pred = one_row([7, 7, 0, 0], [3, 3, 3, 3])
    stat = pq_stats_image(gt, segs[:1], pred, [Segment(3, 1)], CATEGORIES)
    assert (stat.per_class[1].tp, stat.per_class[1].iou) == (1, 1.0)


def test_gt_area_comes_from_json():
    gt, pred = one_row([7, 7, 7, 0], [3, 3, 3, 0])
    # 3 / (3 + 6 - 3) = 0.5 with the JSON area 6: no match; 3 / (3 + 5 - 3) = 0.6 with area 5
    stat = pq_stats_image(gt, [Segment(7, 1, area=6)], pred, [Segment(3, 1)], CATEGORIES)
    assert (stat.per_class[1].tp, stat.per_class[1].fn, stat.per_class[1].fp) == (0, 1, 1)
    stat = pq_stats_image(gt, [Segment(7, 1, area=5)], pred, [Segment(3, 1)], CATEGORIES)
    assert (stat.per_class[1].tp, stat.per_class[1].iou) == (1, 0.6)


def test_false_positive_on_void_and_crowd_is_ignored_and_last_crowd_wins():
    # prediction 3 lies on crowd 8 (2 px) + VOID (1 px) + person 7 (2 px): 3/5 > 0.5 -> ignored
    gt, pred = one_row([8, 8, 0, 7, 7, 7, 7, 7, 5, 5], [3, 3, 3, 3, 3, 0, 0, 0, 0, 0])
    crowd, person = Segment(8, 1, 2, iscrowd=True), Segment(7, 1, 5)
    stat = pq_stats_image(gt, [crowd, person], pred, [Segment(3, 1)], CATEGORIES)
    assert (stat.per_class[1].fp, stat.per_class[1].fn) == (0, 1)
    # a later crowd segment of the same category replaces crowd 8: now 1/5 ignored -> FP
    stat = pq_stats_image(gt, [crowd, person, Segment(5, 1, 2, iscrowd=True)], pred,
                          [Segment(3, 1)], CATEGORIES)
    assert stat.per_class[1].fp == 1


def test_crowd_is_never_matched_nor_a_false_negative():
    gt, pred = one_row([8, 8, 8, 8], [3, 3, 3, 3])
    stat = pq_stats_image(gt, [Segment(8, 1, 4, iscrowd=True)], pred, [Segment(3, 1)], CATEGORIES)
    assert (stat.per_class[1].tp, stat.per_class[1].fn, stat.per_class[1].fp) == (0, 0, 0)


def test_no_class_counted_gives_nan_means():
    result = pq_average(PQStat(), CATEGORIES)
    assert result["All"]["n"] == 0 and np.isnan(result["All"]["pq"])


# --- errors name the image and the id ------------------------------------------------------------

@pytest.mark.parametrize("pred_row, pred_segments, message", [
    ([3, 3, 4, 0], [Segment(3, 1)], r"segment ids \[4\] are in the prediction PNG but not"),
    ([3, 3, 3, 0], [Segment(3, 1), Segment(6, 1)], r"segment ids \[6\] are in the JSON"),
    ([3, 3, 3, 0], [Segment(3, 99)], "segment 3 has unknown category_id 99"),
    ([3, 3, 3, 0], [Segment(3, 1), Segment(3, 2)], "predicted segment id 3 is listed twice"),
    ([0, 0, 0, 0], [Segment(0, 1)], r"predicted segment id 0 is VOID"),
])
def test_prediction_errors(pred_row, pred_segments, message):
    gt, pred = one_row([7, 7, 7, 0], pred_row)
    with pytest.raises(FormatError, match=message) as info:
        pq_stats_image(gt, [Segment(7, 1, 3)], pred, pred_segments, CATEGORIES, image_id=42,
                       source="pred.json")
    assert "image 42" in str(info.value) and "pred.json" in str(info.value)


def test_unknown_ground_truth_category():
    gt, pred = one_row([7, 0], [0, 0])
    with pytest.raises(FormatError, match="ground-truth segment 7 has unknown category_id 77"):
        pq_stats_image(gt, [Segment(7, 77, 1)], pred, [], CATEGORIES, image_id=1)
