"""Box ops against slow literal references (per-pair loops, a plain greedy NMS loop)."""
from __future__ import annotations

import pytest
import torch

from groundkit.errors import InputError
from groundkit.ops import boxes as boxes_module
from groundkit.ops.boxes import (
    batched_nms,
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xywh_to_xyxy,
    box_xyxy_to_cxcywh,
    box_xyxy_to_xywh,
    clip_boxes,
    generalized_box_iou,
    masks_to_boxes,
    nms,
    remove_small_boxes,
)


def random_boxes(n: int, generator: torch.Generator, size: float = 50.0) -> torch.Tensor:
    """``(n, 4)`` valid xyxy boxes, on a coarse grid so that exact ties and equal IoUs occur."""
    xy = torch.randint(0, int(size), (n, 2), generator=generator).float()
    wh = torch.randint(1, int(size) // 2, (n, 2), generator=generator).float()
    return torch.cat([xy, xy + wh], dim=1)


def literal_iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def literal_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float,
                classes: list[int] | None = None) -> list[int]:
    """Visit by decreasing score, ties by index; keep unless a kept box overlaps > threshold."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    kept: list[int] = []
    for i in order:
        if all(classes is not None and classes[i] != classes[k]
               or literal_iou(boxes[i].tolist(), boxes[k].tolist()) <= threshold for k in kept):
            kept.append(i)
    return kept


def test_format_round_trips():
    boxes = random_boxes(20, torch.Generator().manual_seed(0))
    torch.testing.assert_close(box_xywh_to_xyxy(box_xyxy_to_xywh(boxes)), boxes)
    torch.testing.assert_close(box_cxcywh_to_xyxy(box_xyxy_to_cxcywh(boxes)), boxes)
    assert box_xywh_to_xyxy(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist() == [1, 2, 4, 6]
    assert box_cxcywh_to_xyxy(torch.tensor([[5.0, 5.0, 2.0, 4.0]])).tolist() == [[4, 3, 6, 7]]
    assert box_area(torch.tensor([[1.0, 2.0, 4.0, 6.0]])).tolist() == [12.0]


def test_box_iou_matches_literal_loop():
    g = torch.Generator().manual_seed(1)
    a, b = random_boxes(12, g), random_boxes(9, g)
    b[0] = a[0]  # identical pair -> IoU 1
    b[1] = torch.tensor([3.0, 3.0, 3.0, 8.0])  # zero width
    expected = torch.tensor([[literal_iou(x.tolist(), y.tolist()) for y in b] for x in a])
    got = box_iou(a, b)
    assert got.shape == (12, 9)
    torch.testing.assert_close(got, expected)
    assert got[0, 0] == 1.0
    torch.testing.assert_close(box_iou(a.long(), b.long()), expected)  # integer pixel boxes


def test_box_iou_of_zero_area_boxes_is_zero_not_nan():
    point = torch.tensor([[2.0, 2.0, 2.0, 2.0]])
    iou = box_iou(point, point)
    assert iou.item() == 0.0
    assert box_iou(torch.zeros((0, 4)), point).shape == (0, 1)


def test_generalized_box_iou():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0], [4.0, 0.0, 6.0, 2.0],
                      [1.0, 1.0, 1.0, 1.0]])
    # disjoint: IoU 0, enclosing 6x2=12, union 8 -> -4/12; the point inside: IoU 0, penalty 0.
    expected = torch.tensor([[1.0, 1 / 7 - (9 - 7) / 9, -4 / 12, 0.0]])
    torch.testing.assert_close(generalized_box_iou(a, b), expected)
    point = torch.tensor([[1.0, 1.0, 1.0, 1.0]], requires_grad=True)
    giou = generalized_box_iou(point, point)
    assert giou.item() == 0.0
    giou.sum().backward()  # a loss on degenerate boxes must not poison training with NaN
    assert torch.isfinite(point.grad).all()


def test_clip_and_remove_small():
    boxes = torch.tensor([[-5.0, -1.0, 30.0, 8.0], [2.0, 3.0, 4.0, 4.5]])
    assert clip_boxes(boxes, (6, 20)).tolist() == [[0, 0, 20, 6], [2, 3, 4, 4.5]]
    assert remove_small_boxes(boxes, 1.6).tolist() == [0]
    assert remove_small_boxes(boxes, 1.5).tolist() == [0, 1]  # height exactly 1.5 stays
    assert remove_small_boxes(boxes, 1.0).tolist() == [0, 1]


def test_masks_to_boxes_covers_pixels_with_x2_last_plus_one():
    masks = torch.zeros((3, 7, 9), dtype=torch.bool)
    masks[0, 5, 3] = True            # one pixel
    masks[1, 1:4, 2] = True          # a column and a separate pixel
    masks[1, 6, 8] = True
    boxes = masks_to_boxes(masks)    # masks[2] stays empty
    assert boxes.dtype == torch.float32
    assert boxes.tolist() == [[3, 5, 4, 6], [2, 1, 9, 7], [0, 0, 0, 0]]
    assert masks_to_boxes(torch.zeros((0, 4, 4), dtype=torch.bool)).shape == (0, 4)
    with pytest.raises(InputError, match="masks"):
        masks_to_boxes(torch.zeros((4, 4), dtype=torch.bool))


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7])
def test_nms_matches_literal_greedy_loop(threshold):
    g = torch.Generator().manual_seed(2)
    boxes = random_boxes(60, g, size=30)
    boxes[10] = boxes[11] = boxes[12]                            # identical boxes
    scores = torch.randint(0, 8, (60,), generator=g).float()     # many tied scores
    kept = nms(boxes, scores, threshold)
    assert kept.dtype == torch.int64
    assert kept.tolist() == literal_nms(boxes, scores, threshold)


def test_nms_block_boundaries_do_not_change_the_result(monkeypatch):
    # The overlap matrix is built in row blocks; small blocks must give the same answer.
    monkeypatch.setattr(boxes_module, "_NMS_BLOCK", 7)
    g = torch.Generator().manual_seed(4)
    boxes = random_boxes(50, g, size=20)
    scores = torch.randint(0, 6, (50,), generator=g).float()
    classes = torch.randint(0, 2, (50,), generator=g)
    assert nms(boxes, scores, 0.3).tolist() == literal_nms(boxes, scores, 0.3)
    assert batched_nms(boxes, scores, classes, 0.3).tolist() == literal_nms(
        boxes, scores, 0.3, classes.tolist())


def test_nms_iou_exactly_at_threshold_is_kept():
    # IoU of these two is exactly 0.5 (inter 2, union 4): suppression needs IoU > threshold.
    boxes = torch.tensor([[0.0, 0.0, 3.0, 1.0], [1.0, 0.0, 4.0, 1.0], [0.0, 0.0, 3.0, 1.0]])
    scores = torch.tensor([0.9, 0.8, 0.9])
    assert box_iou(boxes[:1], boxes[1:2]).item() == 0.5
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]       # the tied duplicate 2 goes
    assert nms(boxes, scores, 0.49).tolist() == [0]


def test_nms_empty_and_bad_shapes():
    assert nms(torch.zeros((0, 4)), torch.zeros(0), 0.5).tolist() == []
    assert batched_nms(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.long),
                       0.5).tolist() == []
    with pytest.raises(InputError, match="scores"):
        nms(torch.zeros((3, 4)), torch.zeros(2), 0.5)
    with pytest.raises(InputError, match="boxes"):
        nms(torch.zeros((3, 5)), torch.zeros(3), 0.5)


def test_batched_nms_matches_per_class_literal_loop():
    g = torch.Generator().manual_seed(3)
    boxes = random_boxes(80, g, size=30)
    boxes[5] = boxes[6]                                           # same box, maybe other class
    scores = torch.randint(0, 10, (80,), generator=g).float()
    classes = torch.randint(0, 4, (80,), generator=g)
    kept = batched_nms(boxes, scores, classes, 0.4)
    assert kept.tolist() == literal_nms(boxes, scores, 0.4, classes.tolist())
    # Identical boxes of different classes never suppress each other.
    two = torch.tensor([[0.0, 0.0, 5.0, 5.0]] * 2)
    assert batched_nms(two, torch.tensor([1.0, 0.5]), torch.tensor([0, 1]), 0.1).tolist() == [0, 1]
