"""Losses shared by the grounding and segmentation models."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 2e-3) -> torch.Tensor:
    """Dice loss of the official PPMN code, one value per map.

    ``1 - 2 sum(p t) / (sum(p^2) + sum(t^2) + eps)`` with ``p = sigmoid(logits)``.
    logits, targets: ``(N, ...)`` -> ``(N,)``. Targets may be soft (area-downsampled masks).
    """
    p = logits.sigmoid().flatten(1)
    t = targets.flatten(1).to(p.dtype)
    return 1 - 2 * (p * t).sum(1) / ((p * p).sum(1) + (t * t).sum(1) + eps)


def bce_dice_loss(logits: torch.Tensor, targets: torch.Tensor, bce_weight: float = 1.0,
                  dice_weight: float = 1.0, eps: float = 2e-3) -> dict[str, torch.Tensor]:
    """PPMN's per-round loss: mean BCE-with-logits over all pixels of all maps + mean Dice.

    logits, targets: ``(N, H, W)`` for N valid queries. Returns ``{"bce", "dice"}`` weighted.
    """
    if logits.numel() == 0:  # a batch with no grounded phrase still backpropagates zero
        zero = logits.sum() * 0.0
        return {"bce": zero, "dice": zero}
    bce = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
    dice = dice_loss(logits, targets, eps).mean()
    return {"bce": bce_weight * bce, "dice": dice_weight * dice}
