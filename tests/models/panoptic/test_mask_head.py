import math

import pytest
import torch
import torch.nn.functional as F

from groundkit.models.panoptic.mask_head import (
    MaskHead,
    mask_loss,
    mask_targets,
    multilevel_roi_align,
    paste_masks,
)
from groundkit.ops.roi_align import roi_align


def fpn(channels: int = 16, size: tuple[int, int] = (64, 96)) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {f"p{k}": torch.randn(1, channels, size[0] >> k, size[1] >> k) for k in range(2, 6)}


def bilinear(image: torch.Tensor, x: float, y: float) -> float:
    """Literal bilinear sample of ``image (h, w)`` at pixel-index coordinates, border clamped."""
    h, w = image.shape
    x, y = min(max(x, 0.0), w - 1.0), min(max(y, 0.0), h - 1.0)
    x0, y0 = int(math.floor(x)), int(math.floor(y))
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return float(top * (1 - fy) + bottom * fy)


def test_multilevel_roi_align_picks_levels():
    torch.manual_seed(0)
    feats = {f"p{k}": torch.randn(1, 4, 512 >> k, 512 >> k) for k in range(2, 6)}
    boxes = torch.tensor([[0.0, 0, 50, 50], [0, 0, 224, 224], [0, 0, 500, 500]])  # levels 2, 4, 5
    out = multilevel_roi_align(feats, [boxes], 3)
    for box, k, got in zip(boxes, (2, 4, 5), out):
        want = roi_align(feats[f"p{k}"], [box[None]], 3, 1 / 2 ** k, sampling_ratio=2)[0]
        torch.testing.assert_close(got, want)


def test_multilevel_roi_align_batches_images():
    torch.manual_seed(0)
    feats = {f"p{k}": torch.randn(2, 4, 256 >> k, 256 >> k) for k in range(2, 6)}
    boxes = [torch.tensor([[0.0, 0, 50, 50], [10, 20, 250, 200]]), torch.tensor([[5.0, 5, 100, 90]])]
    out = multilevel_roi_align(feats, boxes, 5, sampling_ratio=0)
    for i, image_boxes in enumerate(boxes):
        one = {k: v[i:i + 1] for k, v in feats.items()}
        want = multilevel_roi_align(one, [image_boxes], 5, sampling_ratio=0)
        torch.testing.assert_close(out[:2] if i == 0 else out[2:], want)


@pytest.mark.parametrize("num_convs", [0, 2])
def test_mask_head_gives_each_box_its_own_class_channel(num_convs):
    torch.manual_seed(0)
    head = MaskHead(16, num_things=3, channels=8, num_convs=num_convs)
    torch.nn.init.normal_(head.predictor.weight)  # the 0.001 init makes every class look alike
    feats = fpn()
    box = torch.tensor([[10.0, 8, 50, 40]])
    per_class = torch.cat([head(feats, [box], torch.tensor([c])) for c in range(3)])
    assert per_class.shape == (3, 28, 28)
    # all classes of the same box: the predictor's three channels
    x = head.convs(head.project(multilevel_roi_align(feats, [box], 14, sampling_ratio=0)))
    torch.testing.assert_close(per_class, head.predictor(F.relu(head.upsample(x)))[0])
    boxes = torch.tensor([[10.0, 8, 50, 40], [0, 0, 96, 64]])
    assert head(feats, [boxes], torch.tensor([2, 0])).shape == (2, 28, 28)
    assert head(feats, [boxes[:0]], torch.tensor([], dtype=torch.long)).shape == (0, 28, 28)


def test_narrow_head_projects_before_roi_align_and_sizes_its_masks():
    """A 1x1 conv commutes with RoIAlign: projecting the FPN maps is projecting every patch."""
    torch.manual_seed(0)
    head = MaskHead(16, num_things=3, channels=4, num_convs=0, mask_size=14)
    feats, boxes = fpn(), [torch.tensor([[10.0, 8, 50, 40], [3, 2, 90, 60]])]
    patches = head.project(multilevel_roi_align(feats, boxes, 7, sampling_ratio=0))
    logits = head.predictor(F.relu(head.upsample(patches)))
    torch.testing.assert_close(head(feats, boxes, torch.tensor([0, 2])), logits[[0, 1], [0, 2]])
    assert MaskHead(16, 3, channels=16).project is None  # as wide as the FPN: Mask R-CNN verbatim
    with pytest.raises(ValueError, match="even"):
        MaskHead(16, 3, mask_size=15)


def test_mask_head_starts_at_probability_one_half():
    head = MaskHead(16, num_things=3, channels=8, num_convs=1)
    probs = head(fpn(), [torch.tensor([[10.0, 8, 50, 40]])], torch.tensor([1])).sigmoid()
    torch.testing.assert_close(probs, torch.full_like(probs, 0.5), atol=0.01, rtol=0)


def test_paste_masks_matches_a_literal_loop():
    torch.manual_seed(0)
    masks = torch.rand(4, 28, 28, dtype=torch.float64)
    boxes = torch.tensor([[5.3, 7.9, 31.2, 22.4],     # inside
                          [30.0, -6.0, 70.0, 20.0],   # beyond the grid
                          [13.0, 13.0, 14.5, 14.5],   # smaller than a cell
                          [0.0, 0.0, 52.0, 40.0]], dtype=torch.float64)  # the whole grid
    grid, stride = (10, 13), 4
    got = paste_masks(masks, boxes, grid, stride)
    want = torch.zeros(4, *grid, dtype=torch.float64)
    for d, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        for i in range(grid[0]):
            for j in range(grid[1]):
                cx, cy = (j + 0.5) * stride, (i + 0.5) * stride
                if x1 <= cx <= x2 and y1 <= cy <= y2:
                    want[d, i, j] = bilinear(masks[d], (cx - x1) / (x2 - x1) * 28 - 0.5,
                                             (cy - y1) / (y2 - y1) * 28 - 0.5)
    torch.testing.assert_close(got, want)
    assert (got[2] > 0).sum() == 1  # the tiny box covers the centre (14, 14) only
    assert paste_masks(masks[:0], boxes[:0], grid, stride).shape == (0, *grid)


def test_paste_masks_is_differentiable_in_the_masks():
    masks = torch.rand(2, 6, 6, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor([[3.0, 2.0, 20.0, 17.0], [10.0, 0.0, 31.0, 9.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda m: paste_masks(m, boxes, (5, 8), 4), (masks,))


def test_mask_targets_match_a_literal_crop():
    torch.manual_seed(0)
    gt = torch.rand(2, 100, 120) > 0.5
    # Box 0 on the pixel grid, 28 bins of 2 x 3 pixels: each bin is the mean of its pixels.
    big = torch.tensor([10.0, 4.0, 10.0 + 56, 4.0 + 84])
    # Box 1 under 28 px: one sample per bin, at the bin centre (RoIAlign's half-pixel shift).
    small = torch.tensor([20.3, 30.7, 41.9, 45.2])
    got = mask_targets(gt, torch.stack([big, small]), torch.tensor([1, 0]))
    assert got.shape == (2, 28, 28) and got.dtype == torch.float32
    crop = gt[1, 4:88, 10:66].float()
    want_big = F.avg_pool2d(crop[None, None], kernel_size=(3, 2))[0, 0] >= 0.5
    assert torch.equal(got[0], want_big.float())
    x1, y1, x2, y2 = small.tolist()
    bw, bh = (x2 - x1) / 28, (y2 - y1) / 28
    want_small = torch.tensor([[bilinear(gt[0].float(), x1 - 0.5 + (j + 0.5) * bw, y1 - 0.5 + (i + 0.5) * bh)
                                for j in range(28)] for i in range(28)]) >= 0.5
    assert torch.equal(got[1], want_small.float())
    # default owners: box i <-> segment i
    assert torch.equal(mask_targets(gt, torch.stack([small, big])),
                       mask_targets(gt, torch.stack([small, big]), torch.tensor([0, 1])))


def test_mask_loss_is_bce_and_zero_without_positives():
    logits, targets = torch.randn(3, 28, 28), (torch.rand(3, 28, 28) > 0.5).float()
    torch.testing.assert_close(mask_loss(logits, targets),
                               F.binary_cross_entropy(logits.sigmoid(), targets))
    empty = torch.zeros(0, 28, 28, requires_grad=True)
    loss = mask_loss(empty, empty.detach())
    loss.backward()
    assert loss.item() == 0.0


@pytest.mark.parametrize("size", [28, 14])
def test_training_outputs_positives_are_matched_detections_then_ground_truth(size):
    """Two images; the loss is over the matched detections, then every ground-truth box."""
    torch.manual_seed(0)
    head = MaskHead(16, num_things=3, channels=8, num_convs=1, mask_size=size)
    feats = {k: torch.cat([v, v.flip(-1)]) for k, v in fpn().items()}
    gt_masks = [torch.zeros(2, 64, 96, dtype=torch.bool), torch.zeros(1, 64, 96, dtype=torch.bool)]
    gt_masks[0][0, 8:24, 8:40] = True
    gt_masks[0][1, 30:60, 50:90] = True
    gt_masks[1][0, 10:50, 10:50] = True
    gt_boxes = [torch.tensor([[8.0, 8, 40, 24], [50, 30, 90, 60]]), torch.tensor([[10.0, 10, 50, 50]])]
    gt_classes = [torch.tensor([0, 2]), torch.tensor([1])]
    boxes = [torch.tensor([[0.0, 0, 20, 20], [48, 28, 88, 62], [9, 7, 41, 25]]),
             torch.tensor([[12.0, 8, 52, 47]])]
    classes, det_to_gt = [torch.tensor([1, 2, 0]), torch.tensor([1])], [torch.tensor([-1, 1, 0]),
                                                                       torch.tensor([0])]
    probs, loss = head.training_outputs(feats, boxes, classes, det_to_gt, gt_boxes, gt_classes,
                                        gt_masks)
    assert [p.shape for p in probs] == [(3, size, size), (1, size, size)]
    torch.testing.assert_close(probs[1], head(feats, [boxes[0][:0], boxes[1]], classes[1]).sigmoid())
    # the same loss, image by image, literally
    logits, targets = [], []
    for i in range(2):
        rows = [(boxes[i][k], classes[i][k], det_to_gt[i][k]) for k in range(len(boxes[i]))
                if det_to_gt[i][k] >= 0]
        rows += [(gt_boxes[i][g], gt_classes[i][g], g) for g in range(len(gt_boxes[i]))]
        for box, label, segment in rows:
            one = {k: v[i:i + 1] for k, v in feats.items()}
            logits.append(head(one, [box[None]], label[None]))
            targets.append(mask_targets(gt_masks[i][segment][None], box[None], size=size))
    assert len(logits) == 2 + 3 + 1
    torch.testing.assert_close(loss, mask_loss(torch.cat(logits), torch.cat(targets)))
    assert targets[2].all()  # a ground-truth box over its own rectangle: all foreground
