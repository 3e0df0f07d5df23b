import math

import pytest
import torch

from groundkit.models.panoptic.detector import (
    FCOS,
    assign_targets,
    cell_centres,
    centerness,
    ltrb_iou_loss,
    match_points,
    sigmoid_focal_loss,
)
from groundkit.ops.boxes import clip_boxes, generalized_box_iou


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


def test_first_level_picks_the_pyramid_levels():
    feats = _features()  # 64 x 96: P3 8 x 12, P4 4 x 6, P5 2 x 3
    p5 = FCOS(16, num_classes=3, num_levels=1, num_convs=1, size_limits=(), first_level=5)
    assert p5.strides == (32,) and len(p5.extra) == 0
    out = p5(feats)
    assert out.cls.shape == (2, 2 * 3, 3) and out.points.shape == (2 * 3, 2)
    assert out.strides.tolist() == [32] * 6 and out.points[:3].tolist() == [[16, 16], [48, 16], [80, 16]]
    p3 = FCOS(16, num_classes=3, num_levels=1, num_convs=1, size_limits=(), first_level=3)
    assert p3.strides == (8,) and p3(feats).ltrb.shape == (2, 8 * 12, 4)
    # From P4, two levels past P5 come from the extra convs: P4, P5, P6, P7.
    p4 = FCOS(16, num_classes=3, num_levels=4, num_convs=1, size_limits=(64, 128, 256), first_level=4)
    assert p4.strides == (16, 32, 64, 128) and len(p4.extra) == 2
    assert p4(feats).ctr.shape == (2, 4 * 6 + 2 * 3 + 1 * 2 + 1 * 1)
    with pytest.raises(ValueError, match="num_levels"):
        FCOS(8, 2, num_levels=4, size_limits=(1, 2, 3), first_level=5)  # P5..P8 does not exist
    with pytest.raises(ValueError, match="first_level"):
        FCOS(8, 2, first_level=2)


def test_point_boxes_are_detect_boxes_before_nms():
    torch.manual_seed(0)
    det = FCOS(16, num_classes=3, num_levels=1, num_convs=1, size_limits=(), first_level=3)
    det.pre_nms_thresh, det.nms_thresh = 0.0, 1.0  # keep every candidate: detections = point proposals
    out = det(_features())
    boxes, scores = det.point_boxes(out)
    n = 8 * 12
    assert boxes.shape == (2, n, 4) and scores.shape == (2, n)
    torch.testing.assert_close(boxes[..., :2] + out.ltrb[..., :2], out.points.expand(2, -1, -1))
    assert scores.requires_grad and ((scores > 0) & (scores < 1)).all()
    sizes = [(64, 96), (60, 90)]
    for i, d in enumerate(det.detect(out, sizes, score_thresh=0.0)):
        clipped = clip_boxes(boxes[i].detach(), sizes[i])  # (N, 4)
        same = (d["boxes"][:, None] == clipped[None]).all(dim=2)  # (D, N)
        assert len(d["boxes"]) > 0 and same.any(dim=1).all()  # every detection is a point's box
        point = same.float().argmax(dim=1)
        best = out.cls[i, point].argmax(dim=1) == d["classes"]
        # detect scores each class, point_boxes the best class: equal there, never lower elsewhere.
        torch.testing.assert_close(d["scores"][best], scores[i, point[best]])
        assert best.any() and (d["scores"] <= scores[i, point] + 1e-6).all()


def test_match_points_gives_the_box_behind_each_label():
    boxes = torch.tensor([[0.0, 0, 40, 40], [10.0, 10, 30, 30], [100.0, 100, 300, 300]])
    points = torch.tensor([[20.0, 20], [5.0, 5], [60.0, 60], [200.0, 200], [200.0, 200]])
    strides = torch.tensor([8.0, 8, 8, 8, 32])
    limits = torch.tensor([[-1.0, 64], [-1, 64], [-1, 64], [-1, 64], [64, float("inf")]])
    matched, reg = match_points(points, strides, limits, boxes, center_radius=0)
    assert matched.tolist() == [1, 0, -1, -1, 2]
    labels, reg2 = assign_targets(points, strides, limits, boxes, torch.tensor([3, 1, 2]), 5, 0)
    assert labels.tolist() == [1, 3, 5, 5, 2] and torch.equal(reg, reg2)
    empty, _ = match_points(points, strides, limits, torch.zeros(0, 4))
    assert empty.tolist() == [-1] * 5


def _literal_match(points, strides, limits, boxes, center_radius):
    """The FCOS rule point by point, box by box: the slow reference of match_points."""
    matched = []
    for (x, y), stride, (lo, hi) in zip(points.tolist(), strides.tolist(), limits.tolist()):
        best, best_area = -1, math.inf
        for g, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
            ltrb = (x - x0, y - y0, x1 - x, y1 - y)
            inside = min(ltrb) > 0
            if center_radius > 0:
                cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, stride * center_radius
                inside &= max(cx - r, x0) < x < min(cx + r, x1) and max(cy - r, y0) < y < min(cy + r, y1)
            area = (x1 - x0) * (y1 - y0)
            if inside and lo < max(ltrb) <= hi and area < best_area:  # the first of equal areas
                best, best_area = g, area
        matched.append(best)
    return matched


@pytest.mark.parametrize("center_radius", [0.0, 1.5])
def test_batched_targets_equal_the_literal_rule_per_image(center_radius):
    """FCOS.targets pads the images' boxes and assigns the batch at once: every image's labels,
    matched indices and ltrb are those of the per-point rule on that image alone (images with
    no boxes, equal areas and nested boxes included)."""
    torch.manual_seed(0)
    det = FCOS(16, num_classes=4, num_levels=2, num_convs=1, size_limits=(32,), first_level=3,
               center_radius=center_radius)
    out = det(_features(4, h=64, w=64))
    gt_boxes, gt_classes = [], []
    for g in (5, 0, 1, 7):
        xy = torch.randint(0, 56, (g, 2)).float()
        wh = torch.randint(4, 40, (g, 2)).float()
        boxes = torch.cat([xy, xy + wh], dim=1)
        if g >= 5:
            boxes[1] = boxes[0] + torch.tensor([2.0, 2, 2, 2])  # the same area, shifted
            boxes[2] = torch.tensor([0.0, 0, 64, 64])           # around everything
        gt_boxes.append(boxes)
        gt_classes.append(torch.randint(0, 4, (g,)))
    labels, reg, matched = det.targets(out, gt_boxes, gt_classes)
    limits = torch.tensor(det.limits)[out.level]
    for b, (boxes, classes) in enumerate(zip(gt_boxes, gt_classes)):
        expected = _literal_match(out.points, out.strides, limits, boxes, center_radius)
        assert matched[b].tolist() == expected
        assert labels[b].tolist() == [int(classes[m]) if m >= 0 else 4 for m in expected]
        for n, m in enumerate(expected):
            (x, y), box = out.points[n].tolist(), boxes[m].tolist() if m >= 0 else None
            want = [x - box[0], y - box[1], box[2] - x, box[3] - y] if box else [0.0] * 4
            assert reg[b, n].tolist() == pytest.approx(want)
    assert (matched[0] >= 0).sum() > 0 and (matched[1] == -1).all()
    empty = det.targets(out, [torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.long)] * 2)
    assert (empty[2] == -1).all() and (empty[0] == 4).all() and empty[1].abs().sum() == 0
