"""RoIAlign in pure torch: the numbers of ``torchvision.ops.roi_align`` / detectron2 ``ROIAlignV2``.

Each output bin averages ``grid_h x grid_w`` bilinear samples taken at the centres of a regular
sub-grid of the bin. Boundary rules of the reference kernel: a sample with ``y < -1``, ``y > H``,
``x < -1`` or ``x > W`` contributes 0; otherwise its coordinates are clamped to ``[0, H - 1]`` x
``[0, W - 1]`` before interpolation (the border pixel is repeated for one pixel outside the map).

Bilinear interpolation and these rules are separable in x and y, so the weights are computed per
axis and the four neighbours are gathered from a channels-last copy of the features in one indexing
operation for all boxes of all images. Peak memory is one ``(K, h*grid_h, w*grid_w, C)`` tensor per
distinct sample grid (torchvision's kernel loops instead and needs none).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from groundkit.errors import InputError

__all__ = ["roi_align", "RoIAlign"]


def roi_align(features: Tensor, boxes: Tensor | list[Tensor], output_size: int | tuple[int, int],
              spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = True) -> Tensor:
    """Pool a fixed-size feature map for every box.

    Args:
        features: ``(B, C, H, W)`` float feature maps.
        boxes: ``(K, 5)`` rows ``[batch_index, x1, y1, x2, y2]``, or a list of ``B`` tensors
            ``(K_i, 4)`` xyxy, one per image. Coordinates are in input-image pixels.
        output_size: ``(h, w)`` bins per box, or one int for both.
        spatial_scale: feature-map pixels per input pixel (``1 / stride``).
        sampling_ratio: samples per bin along each axis; ``<= 0`` means adaptive,
            ``ceil(box_size / bins)`` along each axis for each box.
        aligned: subtract half a pixel from the scaled box so that sample positions are pixel
            centres (detectron2 ``ROIAlignV2``); ``False`` is the legacy ``ROIAlign``, which also
            stretches boxes smaller than one feature pixel to one pixel.

    Returns:
        ``(K, C, h, w)`` pooled features, same dtype and device as ``features``. Differentiable with
        respect to ``features``.
    """
    if features.dim() != 4:
        raise InputError(f"roi_align: features: expected shape (B, C, H, W), "
                         f"got {tuple(features.shape)}")
    rois = _as_rois(boxes, features.shape[0]).to(features.device)
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    num_boxes, channels = rois.shape[0], features.shape[1]
    if num_boxes == 0:
        return features.new_zeros((0, channels, out_h, out_w))

    # Box geometry in feature pixels; float64 features keep float64 coordinates.
    coord_dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
    rois = rois.to(coord_dtype)
    offset = 0.5 if aligned else 0.0
    start = rois[:, 1:3] * spatial_scale - offset   # (K, 2) [x, y]
    size = rois[:, 3:5] * spatial_scale - offset - start
    if not aligned:
        size = size.clamp(min=1.0)
    bins = torch.tensor([out_w, out_h], dtype=coord_dtype, device=rois.device)
    bin_size = size / bins
    if sampling_ratio > 0:
        grid = torch.full_like(size, sampling_ratio, dtype=torch.long)
    else:
        # An empty or inverted box (x2 <= x1) gets no samples and pools to zeros, as in the
        # reference (only when aligned: legacy mode has stretched it to one pixel above).
        grid = torch.ceil(bin_size).clamp(min=0).long()

    # Channels-last rows, one per (image, y, x): the neighbours of all samples are one gather.
    values = features.permute(0, 2, 3, 1).reshape(-1, channels)
    out = features.new_zeros((num_boxes, out_h, out_w, channels))
    # One pass per distinct sample grid (a single pass when sampling_ratio > 0).
    for grid_w, grid_h in torch.unique(grid, dim=0).tolist():
        if grid_w == 0 or grid_h == 0:
            continue
        sel = torch.where((grid[:, 0] == grid_w) & (grid[:, 1] == grid_h))[0]
        out[sel] = _pool_same_grid(values, features.shape[2:], rois[sel, 0].long(), start[sel],
                                   bin_size[sel], (out_h, out_w), (grid_h, grid_w))
    return out.permute(0, 3, 1, 2).contiguous()


def _pool_same_grid(values: Tensor, map_size: tuple[int, int], batch: Tensor, start: Tensor,
                    bin_size: Tensor, bins: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """Average pooling of bilinear samples for boxes sharing one sample grid.

    ``values: (B*H*W, C)``, ``batch: (K,)``, ``start, bin_size: (K, 2)`` [x, y] in feature pixels
    -> ``(K, h, w, C)``.
    """
    height, width = map_size
    (out_h, out_w), (grid_h, grid_w) = bins, grid
    y_idx, y_wt = _axis_taps(start[:, 1], bin_size[:, 1], out_h, grid_h, height)  # (K, h*gh, 2)
    x_idx, x_wt = _axis_taps(start[:, 0], bin_size[:, 0], out_w, grid_w, width)   # (K, w*gw, 2)
    row = (batch[:, None, None] * height + y_idx) * width                        # (K, h*gh, 2)

    def neighbour(a: int, b: int) -> Tensor:
        """The (y tap a, x tap b) neighbour of every sample, weighted: (K, h*gh, w*gw, C)."""
        index = row[:, :, None, a] + x_idx[:, None, :, b]
        weight = (y_wt[:, :, None, a] * x_wt[:, None, :, b]).to(values.dtype)
        return values[index] * weight[..., None]

    samples = neighbour(0, 0) + neighbour(0, 1) + neighbour(1, 0) + neighbour(1, 1)
    k, channels = samples.shape[0], samples.shape[-1]
    samples = samples.view(k, out_h, grid_h, out_w, grid_w, channels)
    return samples.mean(dim=(2, 4))


def _axis_taps(start: Tensor, bin_size: Tensor, bins: int, grid: int,
               length: int) -> tuple[Tensor, Tensor]:
    """Interpolation taps along one axis for ``grid`` samples per bin in each of ``bins`` bins.

    ``start, bin_size: (K,)`` -> pixel indices ``(K, bins*grid, 2)`` int64 (low, high neighbour)
    and their weights ``(K, bins*grid, 2)``, zero for samples outside ``[-1, length]``.
    """
    # Sample i of bin p sits at start + p * bin + (i + 0.5) * bin / grid.
    # Same operation order as the reference kernel, so boundary tests agree to the last bit.
    steps = torch.arange(bins * grid, device=start.device)
    bin_index = torch.div(steps, grid, rounding_mode="floor").to(start.dtype)
    sub_index = (steps % grid).to(start.dtype)
    pos = (start[:, None] + bin_index * bin_size[:, None]
           + (sub_index + 0.5) * bin_size[:, None] / grid)
    inside = (pos >= -1.0) & (pos <= length)
    pos = pos.clamp(min=0)
    low = pos.floor()
    frac = pos - low
    # Past the last pixel centre both taps are the last pixel: the sample is its value alone.
    low = low.long().clamp(max=length - 1)
    high = (low + 1).clamp(max=length - 1)
    weight = torch.stack([1 - frac, frac], dim=-1) * inside[..., None]
    return torch.stack([low, high], dim=-1), weight


def _as_rois(boxes: Tensor | list[Tensor], num_images: int) -> Tensor:
    """``(K, 5)`` or a list of ``(K_i, 4)`` -> ``(K, 5)`` ``[batch_index, x1, y1, x2, y2]``."""
    if isinstance(boxes, (list, tuple)):
        if len(boxes) != num_images:
            raise InputError(f"roi_align: boxes: got a list of {len(boxes)} tensors for "
                             f"{num_images} images")
        for i, b in enumerate(boxes):
            if b.dim() != 2 or b.shape[1] != 4:
                raise InputError(f"roi_align: boxes[{i}]: expected shape (K, 4), "
                                 f"got {tuple(b.shape)}")
        if not boxes:
            return torch.zeros((0, 5))
        index = torch.cat([torch.full((len(b), 1), i, dtype=b.dtype, device=b.device)
                           for i, b in enumerate(boxes)])
        return torch.cat([index, torch.cat(list(boxes))], dim=1)
    if boxes.dim() != 2 or boxes.shape[1] != 5:
        raise InputError(f"roi_align: boxes: expected shape (K, 5) [batch_index, x1, y1, x2, y2] "
                         f"or a list of (K_i, 4), got {tuple(boxes.shape)}")
    batch = boxes[:, 0]
    # An out-of-range index would silently read another image's rows of the flattened features.
    if len(boxes) and not ((batch >= 0) & (batch < num_images) & (batch == batch.round())).all():
        raise InputError(f"roi_align: boxes[:, 0]: batch indices must be integers in "
                         f"[0, {num_images}), got {batch.unique().tolist()[:10]}")
    return boxes


class RoIAlign(nn.Module):
    """:func:`roi_align` with fixed settings, as a module: ``forward(features, boxes)``."""

    def __init__(self, output_size: int | tuple[int, int], spatial_scale: float,
                 sampling_ratio: int = -1, aligned: bool = True) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, features: Tensor, boxes: Tensor | list[Tensor]) -> Tensor:
        """``features: (B, C, H, W)``, ``boxes: (K, 5)`` or ``B x (K_i, 4)`` -> ``(K, C, h, w)``."""
        return roi_align(features, boxes, self.output_size, self.spatial_scale,
                         self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")
