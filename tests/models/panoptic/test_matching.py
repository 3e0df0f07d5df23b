import torch

from groundkit.models.panoptic.matching import IGNORE, match_detections, panoptic_loss, panoptic_target
from groundkit.ops.boxes import box_iou


def literal_matching(det_boxes, det_classes, gt_boxes, gt_classes, t=0.5):
    """The rule as the paper states it, one pair at a time."""
    d, g = len(det_boxes), len(gt_boxes)
    best = []
    for i in range(d):
        choice, choice_iou = -1, -1.0
        for j in range(g):
            same_class = det_classes[i] == gt_classes[j]
            iou = box_iou(det_boxes[i:i + 1], gt_boxes[j:j + 1]).item() if same_class else 0.0
            if iou >= t and iou > choice_iou:
                choice, choice_iou = j, iou
        best.append((choice, choice_iou))
    keep, det_to_gt = [True] * d, [-1] * d
    for j in range(g):
        mine = [i for i in range(d) if best[i][0] == j]
        for i in mine:
            keep[i] = False
        if mine:
            top = max(mine, key=lambda i: (best[i][1], -i))
            keep[top], det_to_gt[top] = True, j
    return torch.tensor(keep), torch.tensor(det_to_gt, dtype=torch.long)


def test_hand_made_duplicates_unmatched_and_class_mismatch():
    gt_boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]])
    gt_classes = torch.tensor([0, 1, 0])
    det_boxes = torch.tensor([
        [0.0, 0, 10, 10],    # 0: exact match of segment 0
        [0.0, 0, 10, 9],     # 1: duplicate of segment 0 with lower IoU -> dropped
        [20.0, 20, 40, 40],  # 2: right box, wrong class -> no match, kept (false positive)
        [20.0, 20, 40, 40],  # 3: matches segment 1
        [20.0, 20, 40, 40],  # 4: same IoU as 3: duplicate, lower index wins -> dropped
        [70.0, 70, 80, 80],  # 5: matches nothing, kept
        [50.0, 50, 60, 56],  # 6: IoU 0.6 with segment 2 -> matched
    ])
    det_classes = torch.tensor([0, 0, 0, 1, 1, 0, 0])
    keep, det_to_gt = match_detections(det_boxes, det_classes, gt_boxes, gt_classes)
    assert keep.tolist() == [True, False, True, True, False, True, True]
    assert det_to_gt.tolist() == [0, -1, -1, 1, -1, -1, 2]
    # below the threshold nothing matches
    keep, det_to_gt = match_detections(det_boxes[6:], det_classes[6:], gt_boxes, gt_classes,
                                       iou_threshold=0.7)
    assert keep.tolist() == [True] and det_to_gt.tolist() == [-1]


def test_random_cases_against_literal_loop():
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        g, d = int(torch.randint(0, 5, (1,), generator=gen)), int(torch.randint(0, 9, (1,), generator=gen))
        gt_xy = torch.rand(g, 2, generator=gen) * 30
        gt_boxes = torch.cat([gt_xy, gt_xy + 5 + torch.rand(g, 2, generator=gen) * 20], 1)
        src = torch.randint(0, max(g, 1), (d,), generator=gen)
        jitter = torch.randn(d, 4, generator=gen) * 3
        det_boxes = (gt_boxes[src] if g else torch.zeros(d, 4)) + jitter
        det_boxes[:, 2:] = torch.maximum(det_boxes[:, 2:], det_boxes[:, :2] + 1)
        gt_classes = torch.randint(0, 2, (g,), generator=gen)
        det_classes = torch.randint(0, 2, (d,), generator=gen)
        got = match_detections(det_boxes, det_classes, gt_boxes, gt_classes)
        want = literal_matching(det_boxes, det_classes, gt_boxes, gt_classes)
        assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()


def test_panoptic_target_stuff_things_ignore():
    num_things = 2
    semantic = torch.tensor([[0, 0, 2, 3], [1, 1, 255, 3], [0, 1, 2, 2]])
    masks = torch.zeros(3, 3, 4, dtype=torch.bool)
    masks[0, 0, :2] = True        # segment 0 (class 0), matched by kept detection 1
    masks[1, 1, :2] = True        # segment 1 (class 1), unmatched -> ignore
    masks[2, 2, 0] = True         # segment 2, matched by detection 0
    # pixel (2, 1) has a thing label but no segment (crowd) -> ignore
    det_to_gt = torch.tensor([2, 0, -1])
    target = panoptic_target(semantic, masks, det_to_gt, num_things)
    ign = IGNORE
    assert target.tolist() == [[1, 1, 3, 4], [ign, ign, ign, 4], [0, ign, 3, 3]]


def test_loss_matches_cross_entropy_and_handles_all_ignored():
    logits = torch.randn(3, 2, 2, requires_grad=True)
    target = torch.tensor([[0, 2], [IGNORE, 1]])
    loss = panoptic_loss(logits, target)
    flat = logits.permute(1, 2, 0).reshape(4, 3)
    manual = -(flat.log_softmax(1)[[0, 1, 3], [0, 2, 1]]).mean()
    torch.testing.assert_close(loss, manual)
    empty = panoptic_loss(logits, torch.full((2, 2), IGNORE))
    assert empty.item() == 0.0
    empty.backward()
    assert logits.grad is not None
