"""REC / RES metrics against literal loops and edge cases."""
import numpy as np
import pytest

from groundkit.metrics.referring import (
    box_iou,
    box_iou_pairwise,
    mask_intersection_union,
    rec_accuracy,
    res_scores,
)


def literal_box_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def random_boxes(rng, n):
    xy = rng.integers(0, 50, (n, 2)).astype(float)
    return np.concatenate([xy, xy + rng.integers(1, 30, (n, 2))], axis=1)


def test_box_iou_matches_literal():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 30), random_boxes(rng, 20)
    pairwise = box_iou_pairwise(a, b)
    assert pairwise.shape == (30, 20)
    assert np.array_equal(pairwise, [[literal_box_iou(x, y) for y in b] for x in a])
    assert np.array_equal(box_iou(a[:20], b), np.diag(pairwise[:20]))


def test_rec_accuracy_is_inclusive_at_half_without_plus_one():
    gt = np.array([[0, 0, 10, 10]] * 3, dtype=float)
    # IoU exactly 0.5 (x-half overlap of a 10x10 and a 5x10 inside it), 1.0 and 0
    pred = np.array([[0, 0, 5, 10], [0, 0, 10, 10], [20, 20, 30, 30]], dtype=float)
    assert list(box_iou(pred, gt)) == [0.5, 1.0, 0.0]
    assert rec_accuracy(pred, gt) == {"acc@0.5": 2 / 3, "n": 3}
    assert np.isnan(rec_accuracy(np.zeros((0, 4)), np.zeros((0, 4)))["acc@0.5"])
    assert box_iou([[3, 3, 3, 3]], [[3, 3, 3, 3]])[0] == 0.0  # empty union
    with pytest.raises(ValueError, match="box counts differ"):
        box_iou(pred, gt[:2])


def test_res_scores_match_literal():
    rng = np.random.default_rng(1)
    preds, gts = rng.random((2, 25, 6, 7)) < rng.random((2, 25, 1, 1))
    preds[0] = gts[0] = False  # empty union: IoU 0 in mIoU, nothing in oIoU
    counts = np.array([mask_intersection_union(p, g) for p, g in zip(preds, gts)])
    out = res_scores(counts[:, 0], counts[:, 1])
    ious = [i / u if u else 0.0 for i, u in counts]
    assert out["oiou"] == pytest.approx(counts[:, 0].sum() / counts[:, 1].sum(), abs=1e-15)
    assert out["miou"] == pytest.approx(sum(ious) / len(ious), abs=1e-15)
    for x in (0.5, 0.6, 0.7, 0.8, 0.9):
        assert out[f"pr@{x}"] == sum(iou >= x for iou in ious) / len(ious)
    assert out["n"] == 25


def test_res_precision_is_inclusive():
    out = res_scores(np.array([7, 1, 0]), np.array([10, 2, 0]))  # IoUs 0.7, 0.5, empty
    assert out["pr@0.7"] == 1 / 3 and out["pr@0.5"] == 2 / 3 and out["pr@0.8"] == 0.0
    assert out["oiou"] == 8 / 12 and out["miou"] == pytest.approx(1.2 / 3)
    assert np.isnan(res_scores(np.zeros(0), np.zeros(0))["miou"])
