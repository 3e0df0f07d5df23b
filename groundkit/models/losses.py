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


def discriminative_loss(embeddings: torch.Tensor, weights: torch.Tensor, delta_var: float = 0.5,
                        delta_dist: float = 1.5, reg_weight: float = 1e-3) -> dict[str, torch.Tensor]:
    """Instance-embedding loss of De Brabandere et al. (2017) for one image, with soft memberships.

    Pulls each pixel's embedding to within ``delta_var`` of its segment's mean and pushes segment
    means ``2 * delta_dist`` apart. embeddings: ``(D, h, w)``; weights: ``(K, h, w)`` the covered
    fraction of each cell by each of K segments (area-downsampled masks; all-zero rows are ignored).
    Returns ``{"var", "dist", "reg"}`` scalars.
    """
    e = embeddings.flatten(1).t()                                         # (N, D)
    w = weights.flatten(1).to(e.dtype)                                    # (K, N)
    w = w[w.sum(1) > 0]
    if w.shape[0] == 0:
        zero = e.sum() * 0.0
        return {"var": zero, "dist": zero, "reg": zero}
    mass = w.sum(1)                                                       # (K,)
    means = (w @ e) / mass[:, None]                                       # (K, D)
    spread = (torch.cdist(means, e) - delta_var).clamp(min=0) ** 2        # (K, N)
    var = ((w * spread).sum(1) / mass).mean()
    k = means.shape[0]
    if k > 1:
        gaps = (2 * delta_dist - torch.cdist(means, means)).clamp(min=0) ** 2
        dist = gaps.masked_fill(torch.eye(k, dtype=torch.bool, device=e.device), 0).sum() / (k * (k - 1))
    else:
        dist = e.sum() * 0.0
    return {"var": var, "dist": dist, "reg": reg_weight * means.norm(dim=1).mean()}
