import pytest
import torch

from groundkit.models.losses import dice_loss
from groundkit.models.panoptic.detector import FCOS
from groundkit.models.referring.masks import PointMaskHead


def _features(size: int, channels: int = 16, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {f"p{i}": torch.randn(batch, channels, size >> i, size >> i, generator=gen) for i in range(2, 6)}


def _rectangles(size: int, rects: list[tuple[int, int, int, int]]) -> torch.Tensor:
    """(G, size, size) float masks of the xyxy rectangles, in mask pixels."""
    masks = torch.zeros(len(rects), size, size)
    for m, (x0, y0, x1, y1) in zip(masks, rects):
        m[y0:y1, x0:x1] = 1
    return masks


@pytest.mark.parametrize("size, stride, grid, points", [(64, 8, "p3", 8 * 8), (128, 32, "p5", 4 * 4),
                                                       (128, 32, "p4", 4 * 4)])
def test_shapes(size, stride, grid, points):
    torch.manual_seed(0)
    head = PointMaskHead(16, mask_dim=8, kernel_convs=2, grid_stride=stride)
    kernels, feats = head(_features(size), grid)  # "p4" on the P5 grid: resampled, as the paper
    assert kernels.shape == (2, points, 8) and feats.shape == (2, 8, size // 4, size // 4)
    assert head.mask_logits(kernels, feats).shape == (2, points, size // 4, size // 4)
    assert head.mask_logits(kernels[:, :3], feats).shape == (2, 3, size // 4, size // 4)


def test_mask_logits_is_a_dynamic_1x1_conv():
    kernels, feats = torch.randn(2, 5, 4), torch.randn(2, 4, 6, 7)
    want = torch.stack([torch.nn.functional.conv2d(feats[b:b + 1], kernels[b, :, :, None, None])[0]
                        for b in range(2)])
    torch.testing.assert_close(PointMaskHead.mask_logits(kernels, feats), want)


def test_gradient_reaches_both_branches():
    torch.manual_seed(0)
    head = PointMaskHead(16, mask_dim=8, kernel_convs=2, grid_stride=8)
    kernels, feats = head(_features(64), "p3")
    matched = torch.full((2, 64), -1)
    matched[0, [9, 10]] = torch.tensor([0, 1])
    matched[1, 20] = 0
    gt = [_rectangles(16, [(0, 0, 8, 8), (4, 4, 12, 16)]), _rectangles(16, [(2, 2, 10, 6)])]
    loss = head.losses(kernels, feats, matched, gt)["loss_mask"]
    assert loss.ndim == 0 and 0 < loss < 1
    loss.backward()
    kernel_branch = [head.kernel_tower[0][0].weight, head.kernel_tower[1][0].weight, head.kernel_pred.weight]
    mask_branch = [head.neck.branches["p2"][0][0].weight, head.neck.branches["p5"][0][0].weight,
                   head.mask_proj.weight]
    for p in kernel_branch + mask_branch:
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_loss_is_the_dice_of_the_matched_instance_and_low_for_a_reproducing_kernel():
    # Mask features whose channel 0 is +-10 on/off the target: kernel e0 reproduces it, -e0 inverts it.
    target = _rectangles(8, [(1, 2, 5, 7), (0, 0, 8, 1)])
    feats = torch.randn(1, 3, 8, 8) * 0.1
    feats[0, 0] = 10 * (2 * target[0] - 1)
    kernels = torch.zeros(1, 4, 3)
    kernels[0, 0, 0], kernels[0, 1, 0] = 1.0, -1.0
    kernels[0, 2] = torch.randn(3)
    head = PointMaskHead(16, mask_dim=3)
    good = head.losses(kernels, feats, torch.tensor([[0, -1, -1, -1]]), [target])["loss_mask"]
    bad = head.losses(kernels, feats, torch.tensor([[-1, 0, -1, -1]]), [target])["loss_mask"]
    rand = head.losses(kernels, feats, torch.tensor([[-1, -1, 0, -1]]), [target])["loss_mask"]
    assert good < 0.01 and bad > 0.99 and good < rand < bad
    # Several positives: the mean over points of the Dice against each point's own instance.
    matched = torch.tensor([[1, -1, 0, 0]])
    logits = head.mask_logits(kernels, feats)[0, [0, 2, 3]]
    want = dice_loss(logits, target[[1, 0, 0]]).mean()
    torch.testing.assert_close(head.losses(kernels, feats, matched, [target])["loss_mask"], want)


def test_background_points_contribute_nothing():
    torch.manual_seed(0)
    kernels = torch.randn(2, 6, 4, requires_grad=True)
    feats = torch.randn(2, 4, 8, 8)
    matched = torch.tensor([[0, -1, 1, -1, -1, -1], [-1, -1, -1, -1, -1, 0]])
    gt = [_rectangles(8, [(0, 0, 4, 4), (2, 2, 8, 8)]), _rectangles(8, [(1, 1, 3, 7)])]
    head = PointMaskHead(16, mask_dim=4)
    loss = head.losses(kernels, feats, matched, gt)["loss_mask"]
    loss.backward()
    background = matched < 0
    assert (kernels.grad[background] == 0).all() and (kernels.grad[~background].abs().sum(1) > 0).all()
    changed = kernels.detach().clone()
    changed[background] = torch.randn(int(background.sum()), 4) * 100
    assert torch.equal(head.losses(changed, feats, matched, gt)["loss_mask"], loss.detach())


def test_no_positive_point_gives_zero_with_a_graph():
    torch.manual_seed(0)
    head = PointMaskHead(16, mask_dim=8, kernel_convs=1, grid_stride=8)
    kernels, feats = head(_features(64), "p3")
    gt = [torch.zeros(0, 16, 16), _rectangles(16, [(0, 0, 4, 4)])]
    loss = head.losses(kernels, feats, torch.full((2, 64), -1), gt)["loss_mask"]
    assert loss.item() == 0 and loss.requires_grad
    loss.backward()
    assert head.kernel_pred.weight.grad is not None and head.mask_proj.weight.grad is not None


def test_mismatched_mask_size_is_an_error():
    head = PointMaskHead(16, mask_dim=4)
    with pytest.raises(ValueError, match="mask features"):
        head.losses(torch.randn(1, 2, 4), torch.randn(1, 4, 8, 8), torch.tensor([[0, -1]]),
                    [torch.zeros(1, 16, 16)])


def _fcos_batch(size: int = 64):
    """Boxes in input pixels and their masks at stride 4 (the box itself, for a simple target)."""
    rects = [[(4, 4, 40, 36), (36, 12, 60, 60)], [(8, 20, 56, 48)]]
    boxes = [torch.tensor(r, dtype=torch.float32) for r in rects]
    classes = [torch.tensor([2, 0]), torch.tensor([1])]
    masks = [_rectangles(size // 4, [tuple(v // 4 for v in box) for box in r]) for r in rects]
    return boxes, classes, masks


def test_matched_index_agrees_with_fcos_labels():
    torch.manual_seed(0)
    feats = _features(64)
    det = FCOS(16, num_classes=3, num_levels=1, num_convs=1, size_limits=(), first_level=3)
    out = det(feats)
    boxes, classes, _ = _fcos_batch()
    labels, reg, matched = det.targets(out, boxes, classes)
    assert labels.shape == matched.shape == (2, 64) and matched.dtype == torch.long
    pos = matched >= 0
    assert torch.equal(pos, labels < 3) and pos[0].sum() > 0 and pos[1].sum() > 0
    for b in range(2):
        m = matched[b, pos[b]]
        assert torch.equal(labels[b, pos[b]], classes[b][m])
        pts, box = out.points[pos[b]], boxes[b][m]
        torch.testing.assert_close(reg[b, pos[b]], torch.cat([pts - box[:, :2], box[:, 2:] - pts], 1))
    assert set(matched[0, pos[0]].tolist()) == {0, 1}  # both instances of image 0 own points


def test_mask_loss_decreases_when_training_on_fcos_assignment():
    torch.manual_seed(0)
    feats = _features(64, seed=1)
    det = FCOS(16, num_classes=3, num_levels=1, num_convs=1, size_limits=(), first_level=3)
    boxes, classes, masks = _fcos_batch()
    _, _, matched = det.targets(det(feats), boxes, classes)
    head = PointMaskHead(16, mask_dim=8, kernel_convs=1, grid_stride=8)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    history = []
    for _ in range(20):
        kernels, mask_features = head(feats, "p3")
        loss = head.losses(kernels, mask_features, matched, masks)["loss_mask"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.25 * history[0], history  # about 0.46 -> 0.01 here


def test_batched_mask_loss_equals_the_per_image_loss_and_its_gradients():
    """losses() packs the positive points of all images into one product: its value and its
    gradients are those of computing each image's positive masks on their own (an image with no
    positive point, and images with different numbers of objects, included)."""
    torch.manual_seed(0)
    b, n, e, h, w = 3, 16, 8, 8, 8
    kernels = torch.randn(b, n, e, requires_grad=True)
    features = torch.randn(b, e, h, w, requires_grad=True)
    matched = torch.full((b, n), -1)
    matched[0, [1, 5, 6]] = torch.tensor([0, 1, 0])
    matched[2, [0, 2, 3, 9, 15]] = torch.tensor([2, 1, 0, 0, 1])
    gt_masks = [torch.rand(2, h, w), torch.rand(1, h, w), torch.rand(3, h, w)]
    head = PointMaskHead(16, mask_dim=e, kernel_convs=1, grid_stride=8)
    loss = head.losses(kernels, features, matched, gt_masks)["loss_mask"]
    per_point = []
    for i in range(b):
        for p in range(n):
            m = int(matched[i, p])
            if m >= 0:
                logits = (kernels[i, p, :, None, None] * features[i]).sum(0)  # the literal 1x1 conv
                per_point.append(dice_loss(logits[None], gt_masks[i][m][None]))
    expected = torch.cat(per_point).mean()
    torch.testing.assert_close(loss, expected)
    grads = torch.autograd.grad(loss, (kernels, features))
    expected_grads = torch.autograd.grad(expected, (kernels, features))
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)
    assert grads[0][1].abs().sum() == 0 and grads[0][0, 0].abs().sum() == 0  # no positives there
