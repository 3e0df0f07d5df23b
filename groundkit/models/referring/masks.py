"""A SOLOv2-style point mask head (Wang et al. 2020): one dynamic 1x1 kernel, hence one mask, per grid point.

PBREC's localisation stage needs a one-to-one map from grid points to proposals (no NMS): the FCOS
box of a point (``FCOS.point_boxes``) and the mask of the same point, both trained on the instance
FCOS assigns to that point (``FCOS.targets`` returns the matched index).

Two branches, as SOLOv2:

- mask features F: the semantic-FPN neck at stride 4 over ``p2..p5``, then the normalised ``(x, y)``
  coordinates concatenated and a 1x1 conv back to ``mask_dim`` channels;
- kernels: the kernel level (the grid level itself, or another one bilinearly resampled to the grid,
  as the paper reads SOLO's P4 on the P5 grid) with coordinates concatenated, ``kernel_convs``
  3x3 conv + GN + ReLU, then a 1x1 conv to ``mask_dim``: one kernel per grid point.

The mask of point n is ``kernel_n . F`` per pixel (a dynamic 1x1 conv), trained with Dice on the
points FCOS assigns to an instance.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from groundkit.models.losses import dice_loss
from groundkit.vision.neck import ConvGNReLU, SemanticFPNNeck
from groundkit.vision.position import coordinate_channels


class PointMaskHead(nn.Module):
    """Per-point dynamic mask kernels and the shared stride-4 mask features.

    Args:
        fpn_channels: width of the pyramid levels ``p2..p5`` (even: the neck adds a sine code to P5).
        mask_dim: E, the width of the mask features and of each kernel.
        kernel_convs: 3x3 conv + GN + ReLU layers of the kernel branch.
        grid_stride: g, the stride of the point grid (its level ``p{log2 g}`` sets the grid size).
    """

    def __init__(self, fpn_channels: int, mask_dim: int = 64, kernel_convs: int = 2,
                 grid_stride: int = 8) -> None:
        super().__init__()
        if grid_stride not in (4, 8, 16, 32):
            raise ValueError(f"PointMaskHead: grid_stride must be 4, 8, 16 or 32, got {grid_stride}")
        self.grid_stride = grid_stride
        self.grid_level = f"p{int(math.log2(grid_stride))}"
        # Mask-feature branch. The neck ends in GN + ReLU (SOLOv2's last mask-feature conv does).
        self.neck = SemanticFPNNeck(fpn_channels, mask_dim, head_norm=True, stride=4)
        self.mask_proj = nn.Conv2d(mask_dim + 2, mask_dim, 1)
        # Kernel branch.
        c = fpn_channels
        self.kernel_tower = nn.Sequential(*[ConvGNReLU(c + 2 if i == 0 else c, c)
                                            for i in range(kernel_convs)])
        self.kernel_pred = nn.Conv2d(c + 2 if kernel_convs == 0 else c, mask_dim, 1)
        nn.init.normal_(self.kernel_pred.weight, std=0.01)  # SOLOv2's init of the kernel conv
        nn.init.zeros_(self.kernel_pred.bias)

    def forward(self, features: dict[str, Tensor], grid: str) -> tuple[Tensor, Tensor]:
        """features: ``{"p2": (B, C, S/4, S/4), ..., "p5": (B, C, S/32, S/32)}``; grid: the level the
        kernels are read from (resampled to the size of the grid level when it is another one).

        Returns kernels ``(B, N, E)``, N = h_g * w_g points of the grid level row-major (as
        ``cell_centres``), and mask features ``(B, E, S/4, S/4)``.
        """
        x = features[grid]
        size = features[self.grid_level].shape[-2:]
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = torch.cat([x, coordinate_channels(x)], dim=1)
        kernels = self.kernel_pred(self.kernel_tower(x)).flatten(2).transpose(1, 2)
        f = self.neck(features)
        mask_features = self.mask_proj(torch.cat([f, coordinate_channels(f)], dim=1))
        return kernels, mask_features

    @staticmethod
    def mask_logits(kernels: Tensor, mask_features: Tensor) -> Tensor:
        """kernels ``(B, K, E)``, mask_features ``(B, E, H, W)`` -> mask logits ``(B, K, H, W)``."""
        return torch.einsum("bke,behw->bkhw", kernels, mask_features)

    def losses(self, kernels: Tensor, mask_features: Tensor, matched: Tensor,
               gt_masks: list[Tensor]) -> dict[str, Tensor]:
        """Dice loss of the masks of the points assigned to an instance.

        kernels: ``(B, N, E)``; mask_features: ``(B, E, H, W)``; matched: ``(B, N)`` long, the index
        in ``gt_masks[i]`` of the instance assigned to each point, -1 for background (the third
        output of ``FCOS.targets``, so a point's box and mask train on the same instance);
        gt_masks: per image ``(G_i, H, W)`` float in [0, 1] (covered fraction of each stride-4 cell).
        Returns ``{"loss_mask"}``: the mean over positive points of ``dice_loss``; zero (with a graph
        to both branches) when no point is positive. Background points contribute nothing.
        """
        size = mask_features.shape[-2:]
        for b, masks in enumerate(gt_masks):
            if masks.shape[-2:] != size:
                raise ValueError(f"PointMaskHead.losses: image {b}: gt masks are {tuple(masks.shape[-2:])}, "
                                 f"the mask features {tuple(size)}")
        image, point = torch.nonzero(matched >= 0, as_tuple=True)  # (P,) each, image-major
        if len(image) == 0:
            return {"loss_mask": kernels.sum() * 0.0 + mask_features.sum() * 0.0}
        # Only the positive points' masks are computed (K_i x H x W per image, not N x H x W), in
        # one batched product over the kernels packed to the front of each image's row: a few
        # kernels per batch, not a few per image (a GPU step is bound by its launches).
        positive = matched >= 0
        slot = (positive.cumsum(1) - 1)[image, point]         # rank of each positive in its image
        packed = kernels.new_zeros(len(kernels), int(positive.sum(1).max()), kernels.shape[-1])
        packed = packed.index_put((image, slot), kernels[image, point])
        logits = torch.bmm(packed, mask_features.flatten(2))[image, slot].view(-1, *size)
        first = torch.tensor([0] + [len(m) for m in gt_masks], device=matched.device).cumsum(0)
        targets = torch.cat(list(gt_masks))[first[image] + matched[image, point]]
        return {"loss_mask": dice_loss(logits, targets).mean()}
