"""The optional instance-mask head of the detection submodule (paper App. A.2: Mask R-CNN's mask head),
its targets, its loss, and the pasting of its masks into the image for the dynamic potential (Eq. 2).

Per detection: RoIAlign a 14 x 14 patch from the FPN level of the box's size, a stack of 3x3 conv +
GroupNorm + ReLU, a stride-2 transposed conv + ReLU to 28 x 28, and a 1x1 conv to one mask per thing
class; the box's own class channel is its mask. The paper trains the head with a Lovasz hinge loss;
this one uses Mask R-CNN's binary cross-entropy. In the unified model the pasted mask probabilities
also enter the potential, so the panoptic loss trains the head too.

CPU sizing: training feeds the head every kept detection (up to ``max_detections`` per image), so
its cost is (boxes x M^2 x channels). ``mask_size`` (M, 28 by default) and a ``channels`` narrower
than the FPN (then the FPN maps are projected before RoIAlign) are the knobs that keep it cheap.
"""
from __future__ import annotations

from itertools import accumulate

import torch
import torch.nn.functional as F
from torch import nn

from groundkit.models.panoptic.semantic_head import LEVELS
from groundkit.ops.roi_align import roi_align
from groundkit.vision.neck import ConvGNReLU

MASK_SIZE = 28  # Mask R-CNN's: a 14 x 14 RoIAlign patch, doubled by the transposed conv


def multilevel_roi_align(features: dict[str, torch.Tensor], boxes: torch.Tensor | list[torch.Tensor],
                         output_size: int = 7, sampling_ratio: int = 2) -> torch.Tensor:
    """RoIAlign each box on the FPN level of its size (``k = 4 + log2(sqrt(area) / 224)``, clamped
    to P2..P5, as in FPN) of features ``{"p2": (B, C, H/4, W/4), ...}``.

    boxes: as :func:`~groundkit.ops.roi_align.roi_align`: ``(K, 5)`` rows ``[image, x1, y1, x2, y2]``
    or B tensors ``(K_i, 4)`` xyxy; ``sampling_ratio`` too (``<= 0``: adaptive).
    Returns ``(K, C, output_size, output_size)`` in the order of the boxes.
    """
    rois = as_rois(boxes) if isinstance(boxes, (list, tuple)) else boxes
    wh = rois[:, 3:5] - rois[:, 1:3]
    level = (4 + torch.log2((wh[:, 0] * wh[:, 1]).clamp(min=1e-6).sqrt() / 224)).floor().clamp(2, 5)
    out = features["p2"].new_zeros((len(rois), features["p2"].shape[1], output_size, output_size))
    for k in range(2, 6):
        sel = torch.nonzero(level == k).flatten()
        if len(sel):
            out[sel] = roi_align(features[f"p{k}"], rois[sel], output_size, 1.0 / 2 ** k,
                                 sampling_ratio)
    return out


def as_rois(boxes: list[torch.Tensor]) -> torch.Tensor:
    """B tensors ``(K_i, 4)`` -> ``(K, 5)`` rows ``[image, x1, y1, x2, y2]``."""
    return torch.cat([F.pad(b, (1, 0), value=i) for i, b in enumerate(boxes)])


class MaskHead(nn.Module):
    """Class-specific ``M x M`` mask logits of boxes (``M = mask_size``, 28 as Mask R-CNN).

    ``forward(features, boxes, classes)``: FPN dict ``{"p2": (B, C, H/4, W/4), ...}``, boxes in input
    pixels as :func:`multilevel_roi_align` (for one image: ``[boxes (D, 4)]``), ``classes (K,)``
    thing labels -> ``(K, M, M)`` logits of each box's own class.
    """

    def __init__(self, in_channels: int, num_things: int, channels: int = 256, num_convs: int = 4,
                 mask_size: int = MASK_SIZE) -> None:
        super().__init__()
        if mask_size < 2 or mask_size % 2:
            raise ValueError(f"mask_size must be an even number >= 2, got {mask_size}")
        self.mask_size = mask_size
        # A head narrower than the FPN first projects the FPN maps (once per image): a 1x1 conv
        # commutes with RoIAlign, a per-channel weighted average, so this is a 1x1 conv on every
        # patch, and RoIAlign, which costs per channel and per box, gathers fewer channels.
        self.project = nn.Conv2d(in_channels, channels, 1) if channels < in_channels else None
        width = min(in_channels, channels)
        self.convs = nn.Sequential(*[ConvGNReLU(width if i == 0 else channels, channels)
                                     for i in range(num_convs)])
        self.upsample = nn.ConvTranspose2d(channels if num_convs else width, channels, 2, stride=2)
        self.predictor = nn.Conv2d(channels, num_things, 1)
        # Mask R-CNN's init: near-zero logits, so every mask starts at probability 0.5.
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, features: dict[str, torch.Tensor], boxes: torch.Tensor | list[torch.Tensor],
                classes: torch.Tensor) -> torch.Tensor:
        if self.project is not None:
            features = {k: self.project(features[k]) for k in LEVELS}
        # Adaptive sampling, as detectron2's mask head: a box on its FPN level is 7-28 feature pixels
        # wide, so a 14-bin patch needs 1-2 samples per bin, not a fixed 2 x 2.
        patches = multilevel_roi_align(features, boxes, self.mask_size // 2, sampling_ratio=0)
        x = F.relu(self.upsample(self.convs(patches)))                 # (K, channels, M, M)
        # The predictor's 1x1 conv for each box's own class only: a (1 x C) @ (C x M^2) product per box.
        weight, bias = self.predictor.weight[classes, None, :, 0, 0], self.predictor.bias[classes]
        m = self.mask_size
        return (weight @ x.flatten(2)).view(len(x), m, m) + bias[:, None, None]

    def training_outputs(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                         classes: list[torch.Tensor], det_to_gt: list[torch.Tensor],
                         gt_boxes: list[torch.Tensor], gt_classes: list[torch.Tensor],
                         gt_masks: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One pass over the detections and the ground-truth boxes of a batch of B images.

        Per image: ``boxes (D_i, 4)``, ``classes (D_i,)``, ``det_to_gt (D_i,)`` (the segment each
        detection matched, -1: none, from ``match_detections``), ``gt_boxes (G_i, 4)``,
        ``gt_classes (G_i,)``, ``gt_masks (G_i, H, W)`` bool. Returns each image's mask probabilities
        ``(D_i, M, M)`` (for the potential) and the mask loss of the positives: the matched
        detections, and every ground-truth box, so that the head learns before the detector finds
        anything.
        """
        d = sum(len(b) for b in boxes)
        rois = torch.cat([as_rois(boxes), as_rois([g.to(boxes[0].dtype) for g in gt_boxes])])
        logits = self(features, rois, torch.cat([*classes, *gt_classes]))
        # Rows D.. are the ground-truth boxes, in the order of the concatenated segments.
        first = [0, *accumulate(len(g) for g in gt_boxes)]
        segment = torch.cat([t + f for t, f in zip(det_to_gt, first)])
        matched = torch.nonzero(torch.cat(det_to_gt) >= 0).flatten()
        gt_rows = torch.arange(len(rois) - d, device=rois.device)
        positives = torch.cat([matched, d + gt_rows])
        targets = mask_targets(torch.cat(gt_masks), rois[positives, 1:],
                               torch.cat([segment[matched], gt_rows]), self.mask_size)
        probs = logits[:d].sigmoid().split([len(b) for b in boxes])
        return list(probs), mask_loss(logits[positives], targets)


def mask_targets(gt_masks: torch.Tensor, boxes: torch.Tensor, owners: torch.Tensor | None = None,
                 size: int = MASK_SIZE) -> torch.Tensor:
    """Mask R-CNN targets: each box's ground-truth mask cropped to the box and resized.

    gt_masks: ``(G, H, W)`` bool; boxes: ``(D, 4)`` xyxy pixels of the same image; owners: ``(D,)``
    int64, the segment each box is the target of (default: box ``i`` <-> segment ``i``).
    Returns ``(D, size, size)`` float 0/1: RoIAlign of the mask as a 1-channel image, >= 0.5.
    """
    if owners is None:
        owners = torch.arange(len(boxes), device=boxes.device)
    # The G masks are G one-channel images and the owner is each roi's image index: no per-box copy.
    rois = torch.cat([owners[:, None].to(boxes.dtype), boxes.detach()], dim=1)
    soft = roi_align(gt_masks[:, None].to(boxes.dtype), rois, size, 1.0, sampling_ratio=0)
    return (soft[:, 0] >= 0.5).to(boxes.dtype)


def mask_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of ``logits (P, M, M)`` (each box's own class) against
    :func:`mask_targets` ``(P, M, M)``; 0 (with the graph) when there is no positive box."""
    if len(logits) == 0:
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits, targets)


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, grid: tuple[int, int], stride: float
                ) -> torch.Tensor:
    """Paste box-relative masks on a stride-``stride`` grid of the image.

    masks: ``(D, m, m)`` probabilities over each box; boxes: ``(D, 4)`` xyxy image pixels; grid:
    ``(h, w)`` cells, cell ``(i, j)`` centred at pixel ``((j + 0.5) * stride, (i + 0.5) * stride)``.
    Returns ``(D, h, w)``: the bilinear sample of each mask at every cell centre inside its box
    (the mask's border values repeat over its outer half-pixel), zero at the centres outside.
    Differentiable in ``masks``.
    """
    h, w = grid
    d = len(masks)
    if d == 0:
        return masks.new_zeros((0, h, w))
    boxes = boxes.detach().to(masks.dtype)
    ys = (torch.arange(h, device=masks.device, dtype=masks.dtype) + 0.5) * stride
    xs = (torch.arange(w, device=masks.device, dtype=masks.dtype) + 0.5) * stride
    # grid_sample (align_corners=False) puts -1 / +1 at the outer edges of the mask, i.e. the box.
    size = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-6)
    gx = 2 * (xs[None] - boxes[:, 0:1]) / size[:, 0:1] - 1                  # (D, w)
    gy = 2 * (ys[None] - boxes[:, 1:2]) / size[:, 1:2] - 1                  # (D, h)
    sample_at = torch.stack([gx[:, None, :].expand(d, h, w), gy[:, :, None].expand(d, h, w)], -1)
    pasted = F.grid_sample(masks[:, None], sample_at, mode="bilinear", padding_mode="border",
                           align_corners=False)[:, 0]
    inside = (gx.abs() <= 1)[:, None, :] & (gy.abs() <= 1)[:, :, None]
    return pasted * inside
