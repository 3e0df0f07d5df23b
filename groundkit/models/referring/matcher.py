"""A second-stage proposal matcher in the mould of MAttNet: which of a few boxes an expression names.

Yu et al., "MAttNet: Modular Attention Network for Referring Expression Comprehension" (CVPR 2018),
the matcher VL-NMS's paper feeds its proposals to. Three modules score each proposal against the
expression, each with its own attention over the expression's words, and the expression weighs
them:

- subject: the proposal's region feature (its RoI feature, and with ``region_colours`` its own
  pixels: the attributes a frozen detector may not encode, e.g. colour);
- location: its 5-d box code and the offsets to up to ``neighbours`` proposals of the same class
  (MAttNet's "location difference" to same-category objects: "the left one");
- relation: the region features and offsets of up to ``neighbours`` nearby proposals of any class,
  the best-matching one counting ("the ball next to the box").

``score = sum_m w_m cos(visual_m, phrase_m)``; ``w = softmax(FC(mean of the words))``. Trained with a
softmax cross-entropy over the proposals of the expression's image (the referent is the target), on
ground-truth boxes, as two-stage methods are; MAttNet's attribute head and its hinge losses over
sampled negative pairs are left out: with 3-10 objects an image, every other object is a negative.

Inputs (``B`` expressions, each with its own set of ``N`` proposals, padded): ``regions (B, N, V)``
(:class:`~groundkit.models.referring.vlnms.RegionHead` of the RoI features), ``boxes (B, N, 4)``
xyxy, ``labels (B, N)`` class of each (only equality is used), ``mask (B, N)`` True on real
proposals, ``image_sizes (B, 2)`` ``(height, width)``, ``words (B, L, D)``, ``word_mask (B, L)``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from groundkit.models.referring.vlnms import spatial_code

__all__ = ["MAttNetScorer", "box_offsets", "nearest_neighbours", "MODULES"]

MODULES = ("subject", "location", "relation")


def box_offsets(boxes: Tensor, others: Tensor) -> Tensor:
    """MAttNet's offset of each ``others`` box from its ``boxes`` box, in units of that box's size:
    ``((x1' - cx) / w, (y1' - cy) / h, (x2' - cx) / w, (y2' - cy) / h, area' / area)``.

    boxes: ``(..., 4)`` xyxy; others: ``(..., k, 4)`` -> ``(..., k, 5)``.
    """
    w = (boxes[..., 2] - boxes[..., 0]).clamp(min=1e-6)[..., None]
    h = (boxes[..., 3] - boxes[..., 1]).clamp(min=1e-6)[..., None]
    cx = ((boxes[..., 0] + boxes[..., 2]) / 2)[..., None]
    cy = ((boxes[..., 1] + boxes[..., 3]) / 2)[..., None]
    area = (others[..., 2] - others[..., 0]) * (others[..., 3] - others[..., 1])
    return torch.stack([(others[..., 0] - cx) / w, (others[..., 1] - cy) / h,
                        (others[..., 2] - cx) / w, (others[..., 3] - cy) / h, area / (w * h)], dim=-1)


def nearest_neighbours(boxes: Tensor, mask: Tensor, k: int, same: Tensor | None = None
                       ) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest other proposals of each proposal, by the distance of the box centres.

    boxes: ``(B, N, 4)``; mask: ``(B, N)`` real proposals; same: ``(B, N, N)`` bool, the pairs
    allowed (e.g. the same class; None: all). Returns ``index (B, N, k)`` long and ``valid
    (B, N, k)`` bool (False where fewer than ``k`` neighbours exist: index 0 there).
    """
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2
    dist = torch.cdist(centres, centres)                                       # (B, N, N)
    n = boxes.shape[1]
    allowed = mask[:, None, :] & mask[:, :, None] & ~torch.eye(n, dtype=torch.bool, device=boxes.device)
    if same is not None:
        allowed = allowed & same
    dist = dist.masked_fill(~allowed, float("inf"))
    k_eff = min(k, n)
    if k_eff:
        values, index = dist.topk(k_eff, dim=-1, largest=False)
    else:  # k = 0 or no proposal at all
        values, index = dist[..., :0], dist[..., :0].long()
    valid = torch.isfinite(values)
    index = index.masked_fill(~valid, 0)
    if k_eff < k:  # fewer proposals than k: pad with invalid neighbours
        pad = (0, k - k_eff)
        index, valid = F.pad(index, pad), F.pad(valid, pad, value=False)
    return index, valid


def _gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x (B, N, ...)`` at ``index (B, N, k)`` -> ``(B, N, k, ...)``."""
    b = torch.arange(len(x), device=x.device)[:, None, None]
    return x[b, index]


class MAttNetScorer(nn.Module):
    """The three modules, their word attentions and weights: ``forward(...) -> {"logits": (B, N)``
    (``-inf`` on padding), ``"module_scores": (B, N, 3)``, ``"weights": (B, 3)``,
    ``"attention": (B, 3, L)``}``. ``logits = score / temperature`` (cosines are in [-1, 1])."""

    def __init__(self, region_dim: int, text_dim: int, dim: int = 256, neighbours: int = 5,
                 temperature: float = 0.1) -> None:
        super().__init__()
        self.neighbours = neighbours
        self.temperature = temperature
        self.word_attention = nn.Linear(text_dim, len(MODULES))
        self.phrase = nn.ModuleList(nn.Linear(text_dim, dim) for _ in MODULES)
        self.module_weights = nn.Linear(text_dim, len(MODULES))
        self.subject = nn.Sequential(nn.Linear(region_dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))
        self.location = nn.Sequential(nn.Linear(5 + 5 * neighbours, dim), nn.ReLU(inplace=True),
                                      nn.Linear(dim, dim))
        self.relation_region = nn.Linear(region_dim, dim)
        self.relation_offset = nn.Linear(5, dim)
        self.relation = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(dim, dim))

    def phrases(self, words: Tensor, word_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per module a phrase embedding ``(B, 3, dim)``, the module weights ``(B, 3)`` and the
        word attention ``(B, 3, L)`` (0 on padding words)."""
        scores = self.word_attention(words).transpose(1, 2)                      # (B, 3, L)
        scores = scores.masked_fill(~word_mask[:, None, :], torch.finfo(scores.dtype).min)
        attention = scores.softmax(dim=-1) * word_mask[:, None, :]
        pooled = attention @ words                                               # (B, 3, D)
        phrase = torch.stack([proj(pooled[:, m]) for m, proj in enumerate(self.phrase)], dim=1)
        mean = (words * word_mask[..., None]).sum(1) / word_mask.sum(1, keepdim=True).clamp(min=1)
        return phrase, self.module_weights(mean).softmax(dim=-1), attention

    def forward(self, regions: Tensor, boxes: Tensor, labels: Tensor, mask: Tensor,
                image_sizes: Tensor, words: Tensor, word_mask: Tensor) -> dict[str, Tensor]:
        phrase, weights, attention = self.phrases(words, word_mask)
        k = self.neighbours
        # location: own box + offsets to same-class neighbours (zeros where there are fewer)
        same = labels[:, :, None] == labels[:, None, :]
        index, valid = nearest_neighbours(boxes, mask, k, same)
        offsets = box_offsets(boxes, _gather_rows(boxes, index)) * valid[..., None]
        location = self.location(torch.cat([spatial_code(boxes, image_sizes),
                                            offsets.flatten(-2)], dim=-1))
        # relation: the best match among the nearest neighbours of any class
        index, valid = nearest_neighbours(boxes, mask, k)
        context = self.relation(self.relation_region(_gather_rows(regions, index))
                                + self.relation_offset(box_offsets(boxes, _gather_rows(boxes, index))))
        relation = F.cosine_similarity(context, phrase[:, None, None, 2], dim=-1)   # (B, N, k)
        relation = relation.masked_fill(~valid, -1.0).max(dim=-1).values if k else relation.sum(-1)
        relation = relation.masked_fill(~valid.any(dim=-1), 0.0)  # alone: no relation evidence
        module_scores = torch.stack([
            F.cosine_similarity(self.subject(regions), phrase[:, None, 0], dim=-1),
            F.cosine_similarity(location, phrase[:, None, 1], dim=-1),
            relation], dim=-1)                                                   # (B, N, 3)
        score = (module_scores * weights[:, None, :]).sum(-1)
        logits = (score / self.temperature).masked_fill(~mask, float("-inf"))
        return {"logits": logits, "module_scores": module_scores, "weights": weights,
                "attention": attention}
