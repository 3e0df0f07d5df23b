"""PBREC's comprehension stage against slow literal readings of the paper's Eqs. 1-4 and 7."""
import math

import numpy as np
import pytest
import torch

from groundkit.models.panoptic.detector import cell_centres
from groundkit.models.referring.comprehension import (
    VisionLanguageEncoder,
    center_targets,
    comprehension_loss,
    iou_vote,
    mass_targets,
    pairwise_box_iou,
    pairwise_mask_iou,
)


def literal_center(box, size, g, hard=False):
    """Eqs. 1-2 point by point: positives in the 3g square around the box centre."""
    xl, yt, xr, yb = box
    cx, cy = (xl + xr) / 2, (yt + yb) / 2
    out = []
    for i in range(size // g):
        for j in range(size // g):
            x, y = j * g + g // 2, i * g + g // 2
            left, right, top, bottom = x - xl, xr - x, y - yt, yb - y       # Eq. 1's l, r, t, b
            if abs(x - cx) <= 1.5 * g and abs(y - cy) <= 1.5 * g and min(left, right, top, bottom) > 0:
                out.append(1.0 if hard else math.sqrt(min(left, right) / max(left, right)
                                                      * min(top, bottom) / max(top, bottom)))
            else:
                out.append(0.0)
    return out


def literal_mass(mask, g, hard=False):
    """Eqs. 3-4 point by point: positives within 2g of the centroid, value = cell coverage."""
    ys, xs = np.nonzero(mask)
    xm, ym = (xs + 0.5).mean(), (ys + 0.5).mean()
    out = []
    for i in range(mask.shape[0] // g):
        for j in range(mask.shape[1] // g):
            x, y = j * g + g // 2, i * g + g // 2
            cover = mask[i * g:(i + 1) * g, j * g:(j + 1) * g].mean()
            near = (x - xm) ** 2 + (y - ym) ** 2 <= (2 * g) ** 2
            out.append((float(cover > 0) if hard else cover) if near else 0.0)
    return out


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("box", [(3.0, 5.0, 40.0, 29.0), (0.0, 0.0, 20.0, 12.0),
                                 (50.0, 40.0, 64.0, 64.0), (30.5, 30.5, 33.5, 33.5)])
def test_center_targets_follow_eqs_1_2(box, hard):
    points = cell_centres((8, 8), 8)
    got = center_targets(torch.tensor([box]), points, 8, hard)[0]
    assert torch.allclose(got, torch.tensor(literal_center(box, 64, 8, hard)), atol=1e-6)


def test_center_target_exists_when_the_centre_cell_is_on_row_or_column_0():
    # the official code divides by the grid maximum and loses this target: not copied
    got = center_targets(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), cell_centres((8, 8), 8), 8)
    assert got[0, 0] > 0.5


@pytest.mark.parametrize("hard", [False, True])
def test_mass_targets_follow_eqs_3_4_on_the_whole_mask(hard):
    rng = np.random.default_rng(0)
    mask = np.zeros((64, 64), bool)
    mask[10:30, 12:40] = True
    mask[34:40, 50:60] = True          # a second part: the whole mask counts, not one polygon
    mask &= rng.random((64, 64)) > 0.2
    got = mass_targets(torch.from_numpy(mask)[None], cell_centres((8, 8), 8), 8, hard)[0]
    assert torch.allclose(got, torch.tensor(literal_mass(mask, 8, hard), dtype=torch.float32),
                          atol=1e-6)


def test_an_empty_mask_has_no_positive_point():
    got = mass_targets(torch.zeros(1, 32, 32, dtype=torch.bool), cell_centres((4, 4), 8), 8)
    assert not got.any()


def test_pairwise_ious_against_a_loop():
    boxes = torch.tensor([[[0.0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30], [0, 0, 0, 0]]])
    got = pairwise_box_iou(boxes)[0]
    assert got[0, 1] == pytest.approx(25 / 175) and got[0, 2] == 0 and got[0, 0] == 1
    assert got[3, 3] == 0  # an empty box overlaps nothing, itself included
    masks = torch.rand(2, 5, 6, 7) > 0.5
    want = torch.zeros(2, 5, 5)
    for b in range(2):
        for i in range(5):
            for j in range(5):
                union = (masks[b, i] | masks[b, j]).sum()
                want[b, i, j] = (masks[b, i] & masks[b, j]).sum() / union if union else 0
    assert torch.allclose(pairwise_mask_iou(masks), want)


def test_the_vote_keeps_the_proposal_that_overlaps_the_others_most():
    # the top-scored box is an outlier; three lower-scored boxes agree with each other, and the
    # fourth-ranked one lies between the other two (IoU 0.82 with each; they share 0.68)
    boxes = torch.tensor([[[50.0, 50, 60, 60], [0, 0, 10, 10], [1, 1, 11, 11], [0, 1, 10, 11],
                           [30, 30, 31, 31]]])
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.1]])
    chosen, top = iou_vote(scores, lambda i: pairwise_box_iou(boxes[0][i]), k=4)
    assert top.tolist() == [[0, 1, 2, 3]] and chosen.item() == 3
    assert iou_vote(scores, lambda i: pairwise_box_iou(boxes[0][i]), k=1)[0].item() == 0


def test_encoder_ignores_text_padding_and_returns_the_visual_tokens():
    torch.manual_seed(0)
    encoder = VisionLanguageEncoder(8, 6, dim=16, layers=2, heads=2, ffn_dim=32, dropout=0.0).eval()
    grid, text = torch.randn(1, 8, 4, 4), torch.randn(1, 3, 6)
    padded = torch.cat([text, torch.randn(1, 2, 6)], dim=1)
    mask = torch.tensor([[True, True, True, False, False]])
    short = encoder(grid, text, torch.ones(1, 3, dtype=torch.bool))
    long = encoder(grid, padded, mask)
    assert short.shape == (1, 16, 16) and torch.allclose(short, long, atol=1e-5)


def test_loss_is_eq_6_and_the_task_switches_work():
    logits, targets = torch.randn(2, 16), torch.rand(2, 16)
    both = comprehension_loss(logits, logits, targets, targets, 1.0, 1.0)
    boxes_only = comprehension_loss(logits, logits, targets, targets, 1.0, 0.0)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    assert torch.allclose(both["loss_comprehension"], 2 * bce)
    assert torch.allclose(boxes_only["loss_comprehension"], bce)
