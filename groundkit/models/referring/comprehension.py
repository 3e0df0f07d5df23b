"""PBREC's point-based comprehension stage: soft point targets, the vision-language encoder, the
center-ness / mass-ness heads and the IoU vote (Zhang et al., AAAI 2023, Eqs. 1-7).

Points are the cell centres of the grid level (stride g), row-major; ``N = h * w``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from groundkit.models.panoptic.detector import centerness
from groundkit.vision.position import PositionEmbeddingSine

# --- soft targets (Eqs. 1-4) ----------------------------------------------------------------------


def center_targets(boxes: torch.Tensor, points: torch.Tensor, stride: int,
                   hard: bool = False) -> torch.Tensor:
    """Expression-aware center-ness of every point (Eqs. 1-2).

    boxes: ``(B, 4)`` xyxy referent boxes; points: ``(N, 2)`` cell centres ``(x, y)`` -> ``(B, N)``.
    Positive points lie in the ``3g``-wide square centred on the box centre (and inside the box,
    where Eq. 2 is defined); their value is ``sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b))`` of the
    distances from the point to the box sides, 1 with ``hard``; every other point is 0.
    Distances are not rescaled by the grid (the official code divides by the grid maximum and so
    loses the target when the centre cell is on row or column 0: not copied).
    """
    x, y = points[None, :, 0], points[None, :, 1]                          # (1, N)
    ltrb = torch.stack([x - boxes[:, 0:1], y - boxes[:, 1:2],
                        boxes[:, 2:3] - x, boxes[:, 3:4] - y], dim=-1)      # (B, N, 4)
    cx, cy = (boxes[:, 0:1] + boxes[:, 2:3]) / 2, (boxes[:, 1:2] + boxes[:, 3:4]) / 2
    half = 1.5 * stride
    central = ((x - cx).abs() <= half) & ((y - cy).abs() <= half) & (ltrb.amin(-1) > 0)
    value = torch.ones_like(x.expand_as(central), dtype=boxes.dtype) if hard else \
        centerness(ltrb.clamp(min=1e-6).reshape(-1, 4)).reshape(central.shape)
    return torch.where(central, value, torch.zeros_like(value))


def mass_targets(masks: torch.Tensor, points: torch.Tensor, stride: int,
                 hard: bool = False) -> torch.Tensor:
    """Expression-aware mass-ness of every point (Eqs. 3-4).

    masks: ``(B, S, S)`` bool referent masks (every polygon of the instance, the whole mask);
    points: ``(N, 2)`` -> ``(B, N)``. Positive points lie within ``2g`` of the mask's centroid;
    their value is the fraction of their ``g x g`` cell the mask covers (> 0 with ``hard``: 1);
    every other point is 0.
    """
    b, s, _ = masks.shape
    m = masks.float()
    coverage = F.avg_pool2d(m[:, None], stride, stride)[:, 0].flatten(1)   # (B, N), row-major
    ys, xs = torch.arange(s, device=masks.device) + 0.5, torch.arange(s, device=masks.device) + 0.5
    count = m.flatten(1).sum(1).clamp(min=1)
    cx = (m.sum(1) * xs).sum(1) / count                                     # (B,)
    cy = (m.sum(2) * ys).sum(1) / count
    near = ((points[None, :, 0] - cx[:, None]) ** 2 + (points[None, :, 1] - cy[:, None]) ** 2
            <= (2 * stride) ** 2) & (m.flatten(1).sum(1, keepdim=True) > 0)
    value = (coverage > 0).to(m.dtype) if hard else coverage
    return torch.where(near, value, torch.zeros_like(value))


# --- the vision-language encoder and heads (Eq. 5) --------------------------------------------------


class VisionLanguageEncoder(nn.Module):
    """Grid tokens (projected, + 2-D sine positions) and text tokens (projected), concatenated and
    encoded by a post-norm transformer; returns the visual tokens' states.

    forward(grid ``(B, C, h, w)``, text ``(B, L, D)``, text_mask ``(B, L)`` True on real tokens)
    -> ``(B, h*w, d)``.
    """

    def __init__(self, visual_dim: int, text_dim: int, dim: int = 256, layers: int = 6,
                 heads: int = 8, ffn_dim: int = 1024, dropout: float = 0.1) -> None:
        super().__init__()
        self.visual_proj = nn.Conv2d(visual_dim, dim, 1)
        self.text_proj = nn.Linear(text_dim, dim)
        self.position = PositionEmbeddingSine(dim // 2, normalize=True)
        layer = nn.TransformerEncoderLayer(dim, heads, ffn_dim, dropout, activation="gelu",
                                           batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, grid: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
                ) -> torch.Tensor:
        visual = self.visual_proj(grid)
        n = visual.shape[-2] * visual.shape[-1]
        visual = (visual + self.position(visual)).flatten(2).transpose(1, 2)   # (B, N, d)
        tokens = torch.cat([visual, self.text_proj(text)], dim=1)
        padding = torch.cat([text_mask.new_zeros(len(text), n), ~text_mask], dim=1)
        return self.encoder(tokens, src_key_padding_mask=padding)[:, :n]


def mlp(dim: int, out: int, layers: int = 3) -> nn.Sequential:
    """``layers`` linear layers with ReLU between them (DETR's box MLP)."""
    blocks: list[nn.Module] = []
    for _ in range(layers - 1):
        blocks += [nn.Linear(dim, dim), nn.ReLU(inplace=True)]
    return nn.Sequential(*blocks, nn.Linear(dim, out))


def comprehension_loss(center_logits: torch.Tensor, mass_logits: torch.Tensor,
                       center: torch.Tensor, mass: torch.Tensor, lambda_center: float,
                       lambda_mass: float) -> dict[str, torch.Tensor]:
    """Eq. 6: BCE of both maps, each a mean over the ``n`` points of every image."""
    out = {"loss_center": F.binary_cross_entropy_with_logits(center_logits, center),
           "loss_mass": F.binary_cross_entropy_with_logits(mass_logits, mass)}
    out["loss_comprehension"] = lambda_center * out["loss_center"] + lambda_mass * out["loss_mass"]
    return out


# --- inference: the IoU vote (Eq. 7) ---------------------------------------------------------------


def pairwise_box_iou(boxes: torch.Tensor) -> torch.Tensor:
    """``(B, K, 4)`` xyxy -> ``(B, K, K)`` IoU of every pair within each image."""
    lt = torch.maximum(boxes[:, :, None, :2], boxes[:, None, :, :2])
    rb = torch.minimum(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0).prod(-1)
    union = area[:, :, None] + area[:, None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def pairwise_mask_iou(masks: torch.Tensor) -> torch.Tensor:
    """``(B, K, h, w)`` bool -> ``(B, K, K)`` IoU of every pair within each image (one matmul)."""
    flat = masks.flatten(2).float()
    inter = flat @ flat.transpose(1, 2)
    area = flat.sum(-1)
    union = area[:, :, None] + area[:, None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def iou_vote(scores: torch.Tensor, ious_of: callable, k: int, keep: int = 0
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 7: among the top-``k`` points by ``scores (B, N)``, the one whose proposal has the
    largest sum of IoUs with the others' (``k = 1``: the top point).

    ``ious_of(index (B, k)) -> (B, k, k)`` pairwise IoUs of those points' proposals.
    Returns the chosen point ``(B,)`` and the top ``max(k, keep)`` points ``(B, K)`` best first
    (K capped at N), the vote's k first: ``keep`` asks for more ranked points than the vote uses.
    """
    k = min(k, scores.shape[1])
    top = scores.topk(min(max(k, keep), scores.shape[1]), dim=1).indices
    if k == 1:
        return top[:, 0], top
    overlap = ious_of(top[:, :k]).sum(-1)                # (B, k); ties go to the better-ranked point
    best = overlap.argmax(dim=1)
    return top.gather(1, best[:, None])[:, 0], top
