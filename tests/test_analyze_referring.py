"""benchmarks/analyze_referring.py: the two oIoU bounds of its table 5, against literal loops."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F


@pytest.fixture(scope="module")
def analysis(benchmark_script):
    return benchmark_script("analyze_referring")


def test_best_point_mask_is_the_best_of_the_points_resized_one_by_one(analysis):
    torch.manual_seed(0)
    logits = torch.randn(7, 8, 8) * 3                     # 7 points, a 32 px square input
    size, orig = (28, 32), (21, 24)                        # letterboxed content, original image
    gt = torch.zeros(orig, dtype=torch.bool)
    gt[4:15, 6:20] = True
    best = (-1.0, 0, 0)
    for n in range(len(logits)):                           # as PBRECModel.refer resizes one mask
        probs = logits[n, :7, :8].sigmoid()[None, None]
        mask = F.interpolate(probs, size=orig, mode="bilinear", align_corners=False)[0, 0] > 0.5
        inter, union = int((mask & gt).sum()), int((mask | gt).sum())
        if inter / max(union, 1) > best[0]:
            best = (inter / max(union, 1), inter, union)
    assert analysis.best_point_mask(logits, size, orig, 0.5, gt) == best[1:]


def test_stride4_limit_of_cell_aligned_and_thin_masks(analysis):
    gt = torch.zeros(32, 32, dtype=torch.bool)
    gt[8:20, 4:16] = True                                  # whole 4 x 4 cells, 3 x 3 of them
    inter, union = analysis.stride4_mask_limit(gt, (32, 32), 32, 0.5)
    # the bilinear resize rounds the corners: at a corner pixel 0.625^2 < 0.5; all else is kept
    assert (inter, union) == (144 - 4, 144)
    thin = torch.zeros(32, 32, dtype=torch.bool)
    thin[10, 4:28] = True                                  # one pixel high: a quarter of its cells
    inter, union = analysis.stride4_mask_limit(thin, (32, 32), 32, 0.5)
    assert inter == 0 and union == 24


def test_groups_are_the_types_then_the_thirds_by_referent_size(analysis):
    class Split:
        types = ["relation", "attributes", "relation", "extreme", "", "attributes"]

    sides = [10, 40, 20, 30, 50, 60]                       # square referents, in pixels
    boxes = np.array([[5, 5, 5 + s, 5 + s] for s in sides], dtype=float)
    groups = analysis.groups_of(Split(), boxes)
    low, high = np.quantile(sides, [1 / 3, 2 / 3])         # 26.7 and 43.3
    assert list(groups) == ["all", "attributes", "relation", "extreme",
                            f"small<={low:.0f}px", f"medium<={high:.0f}px", "large"]
    assert groups["all"].tolist() == list(range(6))
    assert groups["relation"].tolist() == [0, 2] and groups["extreme"].tolist() == [3]
    assert groups["small<=27px"].tolist() == [0, 2]
    assert groups["medium<=43px"].tolist() == [1, 3]
    assert groups["large"].tolist() == [4, 5]
