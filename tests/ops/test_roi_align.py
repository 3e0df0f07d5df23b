"""roi_align against a slow literal transcription of the reference RoIAlign kernel."""
from __future__ import annotations

import math

import pytest
import torch

from groundkit.errors import InputError
from groundkit.ops.roi_align import RoIAlign, roi_align


def literal_bilinear(plane: list[list[float]], y: float, x: float) -> float:
    """One sample with the reference kernel's boundary rules."""
    height, width = len(plane), len(plane[0])
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (hy * hx * plane[y_low][x_low] + hy * lx * plane[y_low][x_high]
            + ly * hx * plane[y_high][x_low] + ly * lx * plane[y_high][x_high])


def literal_roi_align(features: torch.Tensor, rois: torch.Tensor, out_h: int, out_w: int,
                      scale: float, sampling_ratio: int, aligned: bool) -> torch.Tensor:
    """Loops over boxes, channels, bins and samples, as the reference CPU kernel does."""
    out = torch.zeros((len(rois), features.shape[1], out_h, out_w), dtype=torch.float64)
    offset = 0.5 if aligned else 0.0
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        start_x, start_y = x1 * scale - offset, y1 * scale - offset
        roi_w, roi_h = x2 * scale - offset - start_x, y2 * scale - offset - start_y
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / out_h, roi_w / out_w
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / out_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / out_w)
        count = max(grid_h * grid_w, 1)
        for c in range(features.shape[1]):
            plane = features[int(b), c].tolist()
            for ph in range(out_h):
                for pw in range(out_w):
                    total = 0.0
                    for iy in range(grid_h):
                        y = start_y + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                        for ix in range(grid_w):
                            x = start_x + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                            total += literal_bilinear(plane, y, x)
                    out[k, c, ph, pw] = total / count
    return out


def random_rois(n: int, num_images: int, image_size: tuple[int, int],
                generator: torch.Generator) -> torch.Tensor:
    """``(n, 5)`` boxes in image pixels, many partly or wholly outside the image, some tiny."""
    height, width = image_size
    lo = torch.tensor([width, height]) * -0.4
    span = torch.tensor([width, height]) * 1.6
    p1 = lo + torch.rand((n, 2), generator=generator) * span
    wh = torch.rand((n, 2), generator=generator) * span * 0.6
    wh[: n // 6] *= 0.02  # boxes smaller than one feature pixel
    batch = torch.randint(0, num_images, (n, 1), generator=generator).float()
    return torch.cat([batch, p1, p1 + wh], dim=1)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [2, -1])
def test_roi_align_matches_literal_kernel(aligned, sampling_ratio):
    g = torch.Generator().manual_seed(10 + sampling_ratio + 3 * aligned)
    features = torch.randn((2, 3, 9, 11), generator=g)
    rois = random_rois(24, 2, (36, 44), g)                     # stride 4 image coordinates
    rois[0, 1:] = torch.tensor([30.0, 20.0, 10.0, 5.0])        # inverted box
    got = roi_align(features, rois, (3, 4), 0.25, sampling_ratio, aligned)
    expected = literal_roi_align(features, rois, 3, 4, 0.25, sampling_ratio, aligned)
    assert got.shape == (24, 3, 3, 4) and got.dtype == torch.float32
    assert (got.double() - expected).abs().max().item() <= 1e-5


def test_list_of_boxes_equals_batch_index_rows():
    g = torch.Generator().manual_seed(4)
    features = torch.randn((2, 2, 6, 7), generator=g)
    per_image = [torch.tensor([[0.5, 1.0, 5.0, 4.0]]), torch.tensor([[1.0, 0.0, 6.5, 6.0],
                                                                     [2.0, 2.0, 3.0, 3.0]])]
    rows = torch.tensor([[0, 0.5, 1.0, 5.0, 4.0], [1, 1.0, 0.0, 6.5, 6.0], [1, 2.0, 2.0, 3.0, 3.0]])
    module = RoIAlign((2, 2), spatial_scale=1.0, sampling_ratio=-1)
    torch.testing.assert_close(module(features, per_image), module(features, rows))
    assert "spatial_scale=1.0" in repr(module)


def test_whole_map_box_at_pixel_centres_pools_exactly():
    # aligned=True, a box covering the map with one bin per pixel samples each pixel centre.
    features = torch.arange(20.0).reshape(1, 1, 4, 5)
    out = roi_align(features, [torch.tensor([[0.0, 0.0, 5.0, 4.0]])], (4, 5), 1.0, 1, True)
    torch.testing.assert_close(out[0], features[0])


def test_empty_boxes_and_bad_input():
    features = torch.zeros((1, 3, 4, 4))
    assert roi_align(features, torch.zeros((0, 5)), 2).shape == (0, 3, 2, 2)
    with pytest.raises(InputError, match=r"boxes: expected shape \(K, 5\)"):
        roi_align(features, torch.zeros((2, 4)), 2)
    with pytest.raises(InputError, match="list of 2 tensors for 1 images"):
        roi_align(features, [torch.zeros((1, 4))] * 2, 2)
    with pytest.raises(InputError, match=r"batch indices must be integers in \[0, 1\)"):
        roi_align(features, torch.tensor([[1.0, 0.0, 0.0, 2.0, 2.0]]), 2)
    with pytest.raises(InputError, match="features"):
        roi_align(features[0], torch.zeros((1, 5)), 2)


@pytest.mark.parametrize("sampling_ratio", [2, -1])
def test_roi_align_gradcheck(sampling_ratio):
    g = torch.Generator().manual_seed(5)
    features = torch.randn((2, 2, 5, 6), generator=g, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, -1.3, 0.7, 4.1, 3.9], [1, 2.2, 1.1, 7.3, 6.2],
                         [1, 0.4, 0.3, 1.1, 1.2]], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda f: roi_align(f, rois, (2, 3), 1.0, sampling_ratio, True), (features,))
