"""PPMN's evaluation protocol (IoU at 1/4 of the resized input) against a slow, literal restatement
of the official PPMN evaluation with torch (train_net.py: bilinear F.interpolate of the ground truth
to the resized input, padding to a multiple of 32, F.interpolate by 0.25, ``> 0``; predictions
thresholded ``> 0.5`` on that grid), and its wiring into ``groundkit score png`` / ``evaluate``."""
import ast
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from groundkit.metrics.png_protocol import (
    bilinear_resize,
    ppmn_grid,
    ppmn_mask_ious,
    protocol_note,
    resized_size,
)

METRICS = Path(__file__).resolve().parents[2] / "groundkit" / "metrics"


def official_grid(masks: np.ndarray, input_size, threshold: float) -> torch.Tensor:
    """The official lines, one mask at a time: resize to the input, pad to 32 (ImageList), x0.25."""
    h, w = input_size
    out = []
    for m in masks:
        gt = F.interpolate(torch.from_numpy(m.astype(np.float32))[None, None], (h, w),
                           mode="bilinear")[0, 0]
        hp, wp = -(-h // 32) * 32, -(-w // 32) * 32
        padded = gt.new_zeros(hp, wp)
        padded[:h, :w] = gt
        out.append(F.interpolate(padded[None, None], scale_factor=0.25, mode="bilinear")[0, 0]
                   > threshold)
    return torch.stack(out)


def official_ious(preds: np.ndarray, gts: np.ndarray, input_size) -> list[float]:
    p, t = official_grid(preds, input_size, 0.5), official_grid(gts, input_size, 0.0)
    ious = []
    for a, b in zip(p, t):
        inter, union = (a & b).sum().item(), (a | b).sum().item()
        ious.append(inter / union if union else float("nan"))
    return ious


def random_masks(rng, n, h, w):
    """Blobs of every size, down to a few pixels (the ones the protocol can lose or dilate)."""
    yy, xx = np.mgrid[:h, :w]
    masks = np.zeros((n, h, w), bool)
    for i in range(n):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.5, max(h, w) / 3)
        masks[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return masks


@pytest.mark.parametrize("in_size, out_size", [((37, 50), (73, 99)), ((120, 90), (64, 48)),
                                               ((33, 33), (800, 800)), ((64, 96), (16, 24))])
def test_bilinear_resize_is_torchs(in_size, out_size):
    x = np.random.default_rng(0).random((3, *in_size)).astype(np.float32)
    want = F.interpolate(torch.from_numpy(x)[None], out_size, mode="bilinear").numpy()[0]
    assert np.allclose(bilinear_resize(x, out_size), want, atol=1e-5)  # float32 rounding


@pytest.mark.parametrize("shape, resize", [((48, 64), (800, 1333)), ((61, 47), (800, 1333)),
                                           ((128, 128), (128, 128)), ((90, 200), (100, 150))])
def test_grid_and_ious_equal_the_official_procedure(shape, resize):
    rng = np.random.default_rng(sum(shape))
    gts, preds = random_masks(rng, 12, *shape), random_masks(rng, 12, *shape)
    preds[0] = gts[0]                                     # a perfect prediction
    preds[1] = False                                      # an empty one
    gts[2] = False                                        # both empty below: NaN as the official
    preds[2] = False
    size = resized_size(*shape, *resize)
    assert np.array_equal(ppmn_grid(gts, size, 0.0), official_grid(gts, size, 0.0).numpy())
    assert np.array_equal(ppmn_grid(preds, size, 0.5), official_grid(preds, size, 0.5).numpy())
    got, want = ppmn_mask_ious(preds, gts, size), official_ious(preds, gts, size)
    assert np.allclose(got, want, equal_nan=True) and np.isnan(got[2])
    # the ground truth is dilated (> 0), the prediction is not (> 0.5): the exact mask at the
    # original resolution is not a perfect score on the grid
    assert 0 < got[0] < 1.0


def test_the_ground_truth_is_dilated_and_the_grid_is_a_quarter_of_the_padded_input():
    gt = np.zeros((1, 100, 100), bool)
    gt[0, 50, 50] = True                                  # one pixel
    grid = ppmn_grid(gt, resized_size(100, 100, 800, 1333), 0.0)
    assert grid.shape == (1, 200, 200)                    # 800 / 4
    assert grid.sum() >= 1                                # "> 0": any touched cell counts


def test_resized_size_is_the_data_transforms():
    from groundkit.data.transforms import ResizeConfig, target_size

    for h, w in [(480, 640), (427, 640), (640, 359), (128, 128), (1000, 3000)]:
        assert resized_size(h, w, 800, 1333) == target_size(h, w, ResizeConfig(800, 1333))


def test_the_note_names_the_protocol():
    assert "original" in protocol_note("original")
    assert "PPMN" in protocol_note("ppmn", (128, 128)) and "128" in protocol_note("ppmn", (128, 128))
    with pytest.raises(ValueError):
        protocol_note("coco")


def test_the_metrics_package_imports_no_torch():
    for path in METRICS.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not any(n == "torch" or n.startswith("torch.") for n in names), path.name
