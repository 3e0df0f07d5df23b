"""Proposal selection of two-stage referring: per-class NMS then top k, against a literal reference."""
import pytest
import torch

from groundkit.errors import InputError
from groundkit.models.referring.proposals import (
    baseline_proposals,
    painting_order,
    select_proposals,
)


def literal_selection(boxes, classes, criterion, k, thresh):
    """Greedy per-class NMS and top k written out with Python loops and scalar IoU."""
    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
        return iw * ih / union if union > 0 else 0.0

    boxes, classes, criterion = boxes.tolist(), classes.tolist(), criterion.tolist()
    order = sorted(range(len(boxes)), key=lambda i: -criterion[i])
    kept = []
    for i in order:
        if all(classes[j] != classes[i] or iou(boxes[i], boxes[j]) <= thresh for j in kept):
            kept.append(i)
    return kept[:k]


def random_candidates(n, seed=0, num_classes=3):
    """Boxes in a few clusters (so NMS has work to do), several classes, distinct scores."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(4, 2, generator=gen) * 200
    xy = centres[torch.randint(0, 4, (n,), generator=gen)] + torch.randn(n, 2, generator=gen) * 8
    wh = 20 + torch.rand(n, 2, generator=gen) * 30
    scores = torch.rand(n, num_classes, generator=gen)
    confidence, classes = scores.max(dim=1)
    return {"boxes": torch.cat([xy - wh / 2, xy + wh / 2], dim=1), "scores": scores,
            "confidence": confidence, "classes": classes,
            "roi_features": torch.randn(n, 2, 3, 3, generator=gen), "note": "not per candidate"}


@pytest.mark.parametrize("k", [1, 2, 3, 5, 1000])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_baseline_is_per_class_nms_then_top_k_by_confidence(k, seed):
    cands = random_candidates(60, seed)
    expected = literal_selection(cands["boxes"], cands["classes"], cands["confidence"], k, 0.3)
    got = baseline_proposals(cands, k)
    assert got["index"].tolist() == expected
    assert len(expected) == k if k < 1000 else 5 < len(expected) < 60  # NMS removed some
    for key in ("boxes", "scores", "confidence", "classes", "roi_features"):
        assert torch.equal(got[key], cands[key][got["index"]]), key
    assert torch.equal(got["criterion"], cands["confidence"][got["index"]])
    assert got["note"] == "not per candidate"


@pytest.mark.parametrize("thresh", [0.0, 0.3, 0.7])
def test_a_criterion_replaces_the_confidence(thresh):
    cands = random_candidates(40, seed=3)
    criterion = torch.rand(40, generator=torch.Generator().manual_seed(4)) * cands["confidence"]
    got = select_proposals(cands, criterion, k=5, nms_thresh=thresh)
    assert got["index"].tolist() == literal_selection(cands["boxes"], cands["classes"], criterion,
                                                      5, thresh)
    assert (got["criterion"][:-1] >= got["criterion"][1:]).all()
    assert got["index"].tolist() != baseline_proposals(cands, 5, thresh)["index"].tolist()


def test_fewer_candidates_than_k_and_none():
    cands = random_candidates(2, seed=5)
    assert sorted(baseline_proposals(cands, 5, nms_thresh=1.0)["index"].tolist()) == [0, 1]
    empty = {key: value[:0] if torch.is_tensor(value) else value
             for key, value in random_candidates(3).items()}
    got = baseline_proposals(empty, 3)
    assert got["boxes"].shape == (0, 4) and got["roi_features"].shape == (0, 2, 3, 3)
    assert got["index"].shape == got["criterion"].shape == (0,)


def test_bad_arguments_are_clear_errors():
    cands = random_candidates(4)
    with pytest.raises(InputError, match="criterion"):
        select_proposals(cands, torch.ones(3), k=2)
    with pytest.raises(InputError, match="positive integer"):
        baseline_proposals(cands, k=0)


def test_painting_order_puts_the_chosen_first_and_leaves_out_its_duplicates():
    boxes = torch.tensor([[0.0, 0, 10, 10],     # 0: a duplicate of 2 (IoU 0.81)
                          [20.0, 20, 30, 30],   # 1: another object
                          [1.0, 1, 10, 10],     # 2: the chosen one
                          [5.0, 0, 15, 10],     # 3: overlaps 2 by IoU 0.33: another object
                          [1.0, 1, 10, 10]])    # 4: the same box again
    assert painting_order(boxes, 2).tolist() == [2, 1, 3]
    assert painting_order(boxes, 1).tolist() == [1, 0, 2, 3, 4]  # nothing overlaps box 1
    assert painting_order(boxes, 2, duplicate_iou=0.9).tolist() == [2, 0, 1, 3]
    assert painting_order(torch.zeros(0, 4), 0).tolist() == []
