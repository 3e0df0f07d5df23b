"""PNG Average Recall against the slow, literal re-implementation of the official procedure."""
import numpy as np
import pytest

from groundkit.metrics.png_ar import (
    THRESHOLDS,
    average_recall,
    mask_iou,
    mask_ious,
    png_average_recall,
    recall_curve,
)

CASES = {
    "random": np.random.default_rng(0).random(200),
    "edges": np.array([0.0, 1.0, 0.5, 1e-5, THRESHOLDS[1], THRESHOLDS[30000], THRESHOLDS[99999],
                       THRESHOLDS[77777], np.nextafter(THRESHOLDS[77777], 0), 0.3, 0.99999,
                       np.nextafter(0.5, 1), np.nan]),
    "multiples": THRESHOLDS[np.random.default_rng(1).integers(0, 100000, 60)],
}


@pytest.mark.parametrize("name", CASES)
def test_ar_equals_official_loop(name, literal):
    ious = CASES[name]
    recalls = literal.official_recalls(ious)
    ar = average_recall(ious)
    assert ar == literal.official_ar(recalls)  # same widths, same summation order: bit-identical
    assert abs(ar - literal.notes_ar(recalls)) < 1e-12
    assert np.array_equal(recall_curve(ious), recalls)


def test_closed_form_single_values():
    # an IoU of 0 still adds 1e-5; an IoU of 1 reaches all 99,999 left end points
    assert average_recall(np.array([0.0])) == pytest.approx(1e-5, abs=1e-15)
    assert average_recall(np.array([1.0])) == pytest.approx(0.99999, abs=1e-12)
    assert average_recall(np.array([np.nan])) == 0.0  # NaN never reaches a threshold


def test_splits_and_strict_accuracy():
    ious = np.array([0.5, np.nextafter(0.5, 1), 0.9, 0.1])
    is_thing = np.array([True, False, True, True])
    nseg = np.array([1, 3, 2, 1])
    out = png_average_recall(ious, is_thing, nseg)
    assert out["overall"]["acc@0.5"] == 0.5  # 0.5 itself is not > 0.5
    assert {k: v["n"] for k, v in out.items()} == {
        "overall": 4, "things": 3, "stuff": 1, "singulars": 2, "plurals": 2}
    assert out["plurals"]["ar"] == average_recall(ious[[1, 2]])
    assert out["stuff"]["ar"] == average_recall(ious[[1]])


def test_empty_split_is_nan():
    out = png_average_recall(np.array([0.7]), np.array([True]), np.array([1]))
    stuff = out["stuff"]
    assert stuff["n"] == 0 and np.isnan(stuff["ar"]) and np.isnan(stuff["acc@0.5"])
    assert out["things"]["ar"] == average_recall(np.array([0.7]))


def test_length_mismatch():
    with pytest.raises(ValueError, match="lengths differ"):
        png_average_recall(np.zeros(3), np.zeros(2, bool), np.ones(3))


def test_mask_iou_and_batched():
    rng = np.random.default_rng(2)
    preds, gts = rng.random((2, 5, 7, 9)) > 0.5
    gts[0] = preds[0] = False  # empty union -> 0
    batched = mask_ious(preds, gts)
    loop = [0.0] + [(p & g).sum() / (p | g).sum() for p, g in zip(preds[1:], gts[1:])]
    assert np.allclose(batched, loop, rtol=0, atol=0)
    assert [mask_iou(p, g) for p, g in zip(preds, gts)] == list(batched)
    with pytest.raises(ValueError, match="shapes differ"):
        mask_iou(preds[0], gts[0, :3])
