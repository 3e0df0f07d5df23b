import math

import pytest
import torch

from groundkit.models.panoptic.detector import (
    FCOS,
    assign_targets,
    cell_centres,
    centerness,
    ltrb_iou_loss,
    sigmoid_focal_loss,
)
from groundkit.ops.boxes import generalized_box_iou


def test_cell_centres_row_major():
    pts = cell_centres((2, 3), 8)
    assert pts.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]


def test_assignment_on_hand_made_boxes():
    boxes = torch.tensor([[0.0, 0, 40, 40], [10.0, 10, 30, 30], [100.0, 100, 300, 300]])
    classes = torch.tensor([3, 1, 2])
    points = torch.tensor([[20.0, 20], [5.0, 5], [60.0, 60], [200.0, 200], [200.0, 200]])
    strides = torch.tensor([8.0, 8, 8, 8, 32])
    limits = torch.tensor([[-1.0, 64], [-1, 64], [-1, 64], [-1, 64], [64, float("inf")]])
    labels, reg = assign_targets(points, strides, limits, boxes, classes, num_classes=5, center_radius=0)
    # (20, 20) lies in boxes 0 and 1 -> the smaller one (1); (5, 5) only in box 0; (60, 60) in none;
    # (200, 200) is inside box 2 but its reach 100 exceeds the stride-8 level's 64 -> background there,
    # positive on the stride-32 level.
    assert labels.tolist() == [1, 3, 5, 5, 2]
    assert reg[0].tolist() == [10, 10, 10, 10]
    assert reg[1].tolist() == [5, 5, 35, 35]
    assert reg[2].tolist() == [0, 0, 0, 0]
    assert reg[4].tolist() == [100, 100, 100, 100]


def test_center_sampling_shrinks_the_positive_region():
    boxes = torch.tensor([[0.0, 0, 80, 80]])
    points = torch.tensor([[40.0, 40], [10.0, 40], [40.0, 29]])
    strides = torch.full((3,), 8.0)
    limits = torch.tensor([[-1.0, float("inf")]] * 3)
    labels, _ = assign_targets(points, strides, limits, boxes, torch.tensor([0]), 1, center_radius=1.5)
    # centre region: 40 +- 12 -> (28, 52): (10, 40) is outside it, (40, 29) inside
    assert labels.tolist() == [0, 1, 0]
    labels, _ = assign_targets(points, strides, limits, boxes, torch.tensor([0]), 1, center_radius=0)
    assert labels.tolist() == [0, 0, 0]


def test_no_boxes_all_background():
    labels, reg = assign_targets(torch.rand(4, 2), torch.ones(4), torch.ones(4, 2), torch.zeros(0, 4),
                                 torch.zeros(0, dtype=torch.long), 7)
    assert labels.tolist() == [7] * 4 and reg.abs().sum() == 0


def test_centerness_values():
    got = centerness(torch.tensor([[1.0, 1, 1, 1], [1.0, 2, 3, 2], [1.0, 1, 4, 4]]))
    torch.testing.assert_close(got, torch.tensor([1.0, math.sqrt(1 / 3), math.sqrt(1 / 16)]))


def test_ltrb_losses_against_box_ops():
    torch.manual_seed(0)
    pred, target = torch.rand(6, 4) * 100 + 20, torch.rand(6, 4) * 100 + 20

    def as_box(d):
        return torch.cat([-d[:, :2], d[:, 2:]], dim=1)

    giou = generalized_box_iou(as_box(pred), as_box(target)).diagonal()
    torch.testing.assert_close(ltrb_iou_loss(pred, target, "giou"), 1 - giou, rtol=1e-3, atol=1e-4)
    iou = ltrb_iou_loss(pred, target, "iou")
    assert (iou > 0).all() and ltrb_iou_loss(pred, pred, "iou").abs().max() < 1e-6


def test_focal_loss_literal():
    logits, targets = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 0.0])
    p = logits.sigmoid()
    want = (0.25 * (1 - p[0]) ** 2 * -p[0].log() + 0.75 * p[1] ** 2 * -(1 - p[1]).log()
            + 0.75 * p[2] ** 2 * -(1 - p[2]).log())
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets), want)


def _features(b=2, c=16, h=64, w=96):
    return {f"p{i}": torch.randn(b, c, h >> i, w >> i) for i in range(2, 6)}


def test_forward_losses_and_detect():
    torch.manual_seed(0)
    det = FCOS(16, num_classes=3, num_levels=4, num_convs=1, size_limits=(32, 64, 128))
    out = det(_features())
    n = 8 * 12 + 4 * 6 + 2 * 3 + 1 * 2
    assert out.cls.shape == (2, n, 3) and out.ltrb.shape == (2, n, 4) and out.ctr.shape == (2, n)
    boxes = [torch.tensor([[4.0, 4, 40, 30], [50, 10, 90, 60]]), torch.zeros(0, 4)]
    classes = [torch.tensor([0, 2]), torch.zeros(0, dtype=torch.long)]
    losses = det.losses(out, boxes, classes)
    assert set(losses) == {"loss_cls", "loss_box", "loss_ctr"}
    sum(losses.values()).backward()
    assert det.head.cls_logits.weight.grad.abs().sum() > 0 and det.head.scales.grad is not None
    det.pre_nms_thresh, det.pre_nms_top_n = 0.0, 50  # an untrained head scores ~0.01 everywhere
    out = det(_features())
    dets = det.detect(out, [(64, 96), (60, 90)], score_thresh=0.0)
    for d, (h, w) in zip(dets, [(64, 96), (60, 90)]):
        assert d["boxes"].shape[1] == 4 and len(d["boxes"]) == len(d["scores"]) == len(d["classes"]) <= 100
        assert len(d["boxes"]) > 0
        assert (d["boxes"][:, 2] <= w).all() and (d["boxes"][:, 3] <= h).all()
        assert d["classes"].dtype == torch.long and d["scores"].requires_grad
    dets[0]["scores"].sum().backward()  # the panoptic loss reaches the class branch through scores
    assert det.head.cls_logits.weight.grad is not None


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="num_levels"):
        FCOS(8, 2, num_levels=3, size_limits=(64,))
    with pytest.raises(ValueError, match="box_loss"):
        FCOS(8, 2, box_loss="l1")
