"""The guided filter (He, Sun and Tang, "Guided Image Filtering", ECCV 2010 / TPAMI 2013): an
edge-aware smoothing of a map ``p`` that follows the edges of a guide image ``I``.

In every ``(2r + 1)^2`` window the output is a linear function of the guide, ``q = a^T I + b``,
fitted to ``p`` by ridge regression (``eps`` the ridge); each pixel's ``a`` and ``b`` are the
means over the windows that contain it. Where the guide is flat the map is smoothed; across the
guide's edges it is not, so a coarse mask probability map upsampled to the image snaps to the
object's boundary in the picture (Wu et al., "Fast End-to-End Trainable Guided Filter", CVPR 2018,
refine segmentation this way). Pure torch, batched, differentiable.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """``x (B, C, H, W)`` -> its mean over the ``(2r + 1)^2`` window around each pixel, the window
    clipped to the image (the mean over the pixels that exist), ``(B, C, H, W)``. Sums by
    differences of cumulative sums, so the cost does not grow with the radius."""
    return _window_sum(_window_sum(x, radius, -1), radius, -2) / _window_count(x, radius)


def _window_sum(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Sum over ``[i - r, i + r]`` along ``dim`` (-1 or -2), zeros beyond the tensor."""
    pad = (radius + 1, radius) if dim == -1 else (0, 0, radius + 1, radius)
    total = F.pad(x, pad).cumsum(dim)                     # a zero first, so a sum is a difference
    n, width = x.shape[dim], 2 * radius + 1
    return total.narrow(dim, width, n) - total.narrow(dim, 0, n)


def _window_count(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Pixels in each clipped window, ``(H, W)``."""
    h, w = x.shape[-2:]
    rows, cols = (torch.arange(n, device=x.device, dtype=x.dtype) for n in (h, w))
    along = [(i + radius).clamp(max=n - 1) - (i - radius).clamp(min=0) + 1
             for i, n in ((rows, h), (cols, w))]
    return along[0][:, None] * along[1][None, :]


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """Filter ``src (B, H, W)`` guided by ``guide (B, C, H, W)`` (C channels, e.g. RGB in [0, 1]).

    ``radius`` is the window's half-side in pixels; ``eps`` the regularisation in the guide's
    squared units: a patch whose guide varies much less than ``eps`` is smoothed, an edge much
    stronger is kept. A guide of batch 1 serves every map of ``src`` (several masks of one
    image): its statistics, the bulk of the cost, are then computed once. Returns ``(B, H, W)``,
    the same dtype as ``src``.
    """
    if guide.dim() != 4 or src.dim() != 3 or guide.shape[0] not in (1, src.shape[0]) \
            or guide.shape[-2:] != src.shape[-2:]:
        raise ValueError(f"guided_filter: guide (B or 1, C, H, W) and src (B, H, W) of one size, "
                         f"got {tuple(guide.shape)} and {tuple(src.shape)}")
    if radius < 1 or eps <= 0:
        raise ValueError(f"guided_filter: radius >= 1 and eps > 0, got {radius} and {eps}")
    dtype = src.dtype
    # float64: where the colour channels vary together (grey noise, white shapes) the 3 x 3
    # covariance is nearly singular, held up by eps alone, and in float32 its adjugate lost the
    # solution: a 10 x 14 pixel hole opened in a white circle's mask (docs/referring.md). Centred,
    # so that the running sums of the box filter stay small.
    work = torch.float64
    guide, p = guide.to(work), src.to(work)[:, None]
    guide = guide - guide.mean((-2, -1), keepdim=True)
    offset = p.mean((-2, -1), keepdim=True)
    p = p - offset
    c = guide.shape[1]
    mean_i, mean_p = box_mean(guide, radius), box_mean(p, radius)
    cov_ip = box_mean(guide * p, radius) - mean_i * mean_p                      # (B, C, H, W)
    outer = (guide[:, :, None] * guide[:, None]).flatten(1, 2)                 # (B, C*C, H, W)
    cov_i = box_mean(outer, radius).unflatten(1, (c, c)) - mean_i[:, :, None] * mean_i[:, None]
    cov_i = cov_i + eps * torch.eye(c, device=guide.device, dtype=work)[None, :, :, None, None]
    a = solve_per_pixel(cov_i, cov_ip)                                       # (B, C, H, W)
    b = mean_p - (a * mean_i).sum(1, keepdim=True)
    q = (box_mean(a, radius) * guide).sum(1) + box_mean(b, radius)[:, 0] + offset[:, 0]
    return q.to(dtype)


def solve_per_pixel(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``x`` with ``matrix @ x = rhs`` at every pixel: ``matrix (B, C, C, H, W)`` symmetric
    positive definite, ``rhs (B, C, H, W)`` -> ``(B, C, H, W)``. Three channels (RGB) by the
    adjugate, element-wise: 0.24 ms for 128 x 128 pixels against 1.35 ms for torch.linalg.solve's
    batched 3 x 3 calls (one CPU thread)."""
    if matrix.shape[1] != 3:
        return torch.linalg.solve(matrix.permute(0, 3, 4, 1, 2),
                                  rhs.permute(0, 2, 3, 1)[..., None])[..., 0].permute(0, 3, 1, 2)
    (a, b, c), (_, d, e), (_, _, f) = (matrix[:, i].unbind(1) for i in range(3))
    adj = torch.stack([d * f - e * e, c * e - b * f, b * e - c * d,          # the adjugate's rows
                       c * e - b * f, a * f - c * c, b * c - a * e,
                       b * e - c * d, b * c - a * e, a * d - b * b], dim=1).unflatten(1, (3, 3))
    det = a * adj[:, 0, 0] + b * adj[:, 1, 0] + c * adj[:, 2, 0]
    return (adj * rhs[:, None]).sum(2) / det[:, None]
