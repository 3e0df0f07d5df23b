"""VL-NMS's relatedness module: how related each detector candidate is to one expression.

Ding et al., "VL-NMS: Breaking Proposal Bottlenecks in Two-Stage Visual-Language Matching"
(TOMM 2023; Ref-NMS, AAAI 2021). A relatedness ``r`` in (0, 1) per candidate times the detector's
confidence ``c`` replaces ``c`` as the criterion of NMS (:func:`vlnms_proposals`), so the few
proposals the second stage sees are those the expression mentions. Targets and losses (Eqs. 4-7)
are in :mod:`groundkit.models.referring.vlnms_losses`.

Batches. Candidates belong to an image, and an image usually has several expressions, so the
modules take the image side once and the expression side per expression:

- image side, ``I`` images padded to ``N`` candidates (:func:`pad_rows`): ``roi_features
  (I, N, C, h, w)``, ``candidate_mask (I, N)`` True on real candidates (and, for the Trans variant,
  ``boxes (I, N, 4)`` xyxy and ``image_sizes (I, 2)`` ``(height, width)`` of the image those boxes
  are in);
- expression side, ``B`` expressions: ``words (B, L, D)`` and ``word_mask (B, L)`` True on real
  tokens (:class:`~groundkit.text.encoder.TextEncoder`'s features, [CLS] and [SEP] included), and
  ``image_index (B,)`` the image row of each expression (None: ``I == B``, row ``b``).

The region features are computed once per image, then gathered per expression. Outputs are
``(B, N, ...)``; logits are ``-inf`` on padding candidates (``sigmoid -> 0``), so padding can never
win a ranking. Padding candidates and padding words change nothing for the real ones.

The region feature ``v``: the RoI feature flattened, then one FC + ReLU (:class:`RegionHead`,
detectron2's FPN box head; the paper's "RoI pooling and a convolutional head network"). Flattened,
not average-pooled: relatedness is trained to be high only for boxes that fit a mentioned object
(IoU >= 0.5), and the mean of a 7 x 7 RoI feature hardly tells a fitting box from a shifted one.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from groundkit.errors import InputError
from groundkit.models.referring.comprehension import mlp
from groundkit.models.referring.proposals import select_proposals

__all__ = ["RegionHead", "RelatednessFC", "RelatednessTrans", "spatial_code", "box_deltas",
           "apply_box_deltas", "vlnms_proposals", "pad_rows"]

DELTA_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # Fast R-CNN's target normalisation (stds 0.1, 0.1, 0.2, 0.2)
DELTA_CLAMP = math.log(1000.0 / 16)    # largest dw, dh: a box grows at most 62.5x per side


# --- inputs --------------------------------------------------------------------------------------

def pad_rows(tensors: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Stack ``B`` tensors ``(N_b, ...)`` into ``(B, N_max, ...)`` zero-padded, with ``mask
    (B, N_max)`` True on real rows. ``N_max`` may be 0 (every tensor empty)."""
    if not tensors:
        raise InputError("pad_rows: needs at least one tensor")
    n = max(len(t) for t in tensors)
    first = tensors[0]
    out = first.new_zeros((len(tensors), n, *first.shape[1:]))
    mask = torch.zeros(len(tensors), n, dtype=torch.bool, device=first.device)
    for b, t in enumerate(tensors):
        out[b, :len(t)] = t
        mask[b, :len(t)] = True
    return out, mask


def spatial_code(boxes: Tensor, image_sizes: Tensor) -> Tensor:
    """The paper's 5-d location of a box: ``(x1/W, y1/H, x2/W, y2/H, area/(W H))``.

    boxes: ``(I, N, 4)`` xyxy; image_sizes: ``(I, 2)`` ``(height, width)`` -> ``(I, N, 5)``.
    """
    size = image_sizes.to(boxes.dtype)
    h, w = size[:, None, 0], size[:, None, 1]                                   # (I, 1)
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([x1 / w, y1 / h, x2 / w, y2 / h, (x2 - x1) * (y2 - y1) / (w * h)], dim=-1)


def _gather(x: Tensor, image_index: Tensor | None) -> Tensor:
    """Rows of the image side for each expression: ``(I, ...)`` -> ``(B, ...)``."""
    return x if image_index is None else x[image_index]


def _check(roi_features: Tensor, candidate_mask: Tensor, words: Tensor, word_mask: Tensor,
           image_index: Tensor | None) -> None:
    if roi_features.dim() != 5 or candidate_mask.shape != roi_features.shape[:2]:
        raise InputError(f"relatedness: roi_features (I, N, C, h, w) and candidate_mask (I, N) "
                         f"expected, got {tuple(roi_features.shape)} and {tuple(candidate_mask.shape)}")
    if words.dim() != 3 or word_mask.shape != words.shape[:2]:
        raise InputError(f"relatedness: words (B, L, D) and word_mask (B, L) expected, "
                         f"got {tuple(words.shape)} and {tuple(word_mask.shape)}")
    if image_index is None and len(roi_features) != len(words):
        raise InputError(f"relatedness: {len(words)} expressions but {len(roi_features)} image rows: "
                         "give image_index (B,), the image row of each expression")
    if image_index is not None and image_index.shape != (len(words),):
        raise InputError(f"relatedness: image_index: expected shape ({len(words)},), one image row "
                         f"per expression, got {tuple(image_index.shape)}")


# --- the region feature ------------------------------------------------------------------------

class RegionHead(nn.Module):
    """RoI feature ``(..., C, h, w)`` -> region feature ``v (..., dim)``: flatten, FC, ReLU."""

    def __init__(self, in_channels: int, roi_size: int, dim: int = 1024) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels * roi_size * roi_size, dim)

    def forward(self, roi_features: Tensor) -> Tensor:
        return F.relu(self.fc(roi_features.flatten(-3)))


def _two_layer(dim_in: int, hidden: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim_out))


# --- VL-NMS FC (Eqs. 1-2) ------------------------------------------------------------------------

class RelatednessFC(nn.Module):
    """VL-NMS_FC: each candidate attends over the expression's words, then one FC scores the
    product of its region feature with the attended text.

    ``v_a = MLP_a(v)``, ``a_j = FC_s([w_j; v_a * w_j])``, ``alpha = softmax_j(a)`` over the real
    tokens, ``q = sum_j alpha_j w_j`` (Eq. 1); ``m = L2Norm(MLP_b(v) * q)``, ``logit = FC_r(m)``,
    ``r = sigmoid(logit)`` (Eq. 2). ``MLP_a``, ``MLP_b``: two layers, ``v`` -> the word width D.

    Eq. 1 as printed, ``a_ij = FC_s([v_a_i; w_j])``, is a sum ``u . v_a_i + u' . w_j + b`` whose
    proposal term is constant over the words and cancels in the softmax: every proposal would get
    the same attention (so it is in the official Ref-NMS code) and ``MLP_a`` no gradient. Here the
    proposal enters through the product ``v_a_i * w_j`` — what ``MLP_a`` mapping ``v`` into the
    words' width ``R^q`` calls for — so the attention is the proposal's own: ``a_ij = (u' +
    u'' * v_a_i) . w_j``, the word term kept and the cancelling terms (``u . v_a_i``, the bias)
    left out.

    forward(roi_features ``(I, N, C, h, w)``, candidate_mask ``(I, N)``, words ``(B, L, D)``,
    word_mask ``(B, L)``, image_index ``(B,)`` or None) -> ``{"logits": (B, N)`` (-inf on padding),
    ``"attention": (B, N, L)`` the ``alpha`` (0 on padding words)``}``.
    """

    def __init__(self, in_channels: int, roi_size: int, text_dim: int, visual_dim: int = 1024) -> None:
        super().__init__()
        self.region = RegionHead(in_channels, roi_size, visual_dim)
        self.mlp_a = _two_layer(visual_dim, visual_dim, text_dim)
        self.mlp_b = _two_layer(visual_dim, visual_dim, text_dim)
        self.fc_s = nn.Linear(2 * text_dim, 1, bias=False)   # over [w_j; v_a * w_j]
        self.fc_r = nn.Linear(text_dim, 1)

    def forward(self, roi_features: Tensor, candidate_mask: Tensor, words: Tensor, word_mask: Tensor,
                image_index: Tensor | None = None) -> dict[str, Tensor]:
        _check(roi_features, candidate_mask, words, word_mask, image_index)
        v = self.region(roi_features)                                       # (I, N, V)
        v_a = _gather(self.mlp_a(v), image_index)                           # (B, N, D)
        v_b = _gather(self.mlp_b(v), image_index)
        mask = _gather(candidate_mask, image_index)
        u_word, u_pair = self.fc_s.weight[0].chunk(2)
        scores = (words @ u_word)[:, None, :] + torch.einsum("bnd,bld->bnl", v_a * u_pair, words)
        scores = scores.masked_fill(~word_mask[:, None, :], torch.finfo(scores.dtype).min)
        # An expression without a real token attends to nothing (q = 0) instead of its padding.
        attention = scores.softmax(dim=-1) * word_mask[:, None, :]
        q = attention @ words                                               # (B, N, D)
        m = F.normalize(v_b * q, dim=-1)
        logits = self.fc_r(m)[..., 0].masked_fill(~mask, float("-inf"))
        return {"logits": logits, "attention": attention}


# --- VL-NMS Trans (Eq. 3) ----------------------------------------------------------------------

class RelatednessTrans(nn.Module):
    """VL-NMS_Trans: visual and text tokens through a small post-norm transformer; per visual
    token a relatedness logit and Fast R-CNN deltas refining its candidate box (Eq. 3).

    Visual token: ``Linear(RegionHead(roi)) + Linear(spatial_code(box))``; text tokens: the
    expression's word-piece features projected (the text encoder's output already sums BERT's
    token, position and segment embeddings and holds [CLS] and [SEP]). ``[visual; text]`` goes
    through ``layers`` post-norm encoder layers (one stream: the paper's co-attention layers are
    not reproduced); ``logit = FC(h_i)`` and ``deltas = MLP_t(h_i)`` (two ReLU layers and a linear
    one) on each visual token's state ``h_i``. Every candidate attends to every other, so the cost
    grows as ``(N + L)^2``: feed hundreds of candidates, not thousands.

    forward(roi_features ``(I, N, C, h, w)``, candidate_mask ``(I, N)``, boxes ``(I, N, 4)`` xyxy,
    image_sizes ``(I, 2)`` ``(height, width)``, words ``(B, L, D)``, word_mask ``(B, L)``,
    image_index ``(B,)`` or None) -> ``{"logits": (B, N)`` (-inf on padding), ``"deltas": (B, N, 4)``
    (0 on padding; :func:`apply_box_deltas` on ``boxes``)``}``.
    """

    def __init__(self, in_channels: int, roi_size: int, text_dim: int, dim: int = 256,
                 layers: int = 2, heads: int = 8, ffn_dim: int = 1024, dropout: float = 0.1,
                 visual_dim: int = 1024) -> None:
        super().__init__()
        self.region = RegionHead(in_channels, roi_size, visual_dim)
        self.visual_proj = nn.Linear(visual_dim, dim)
        self.spatial_proj = nn.Linear(5, dim)
        self.text_proj = nn.Linear(text_dim, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, ffn_dim, dropout, activation="gelu",
                                           batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.relatedness = nn.Linear(dim, 1)
        self.regression = mlp(dim, 4, 3)

    def forward(self, roi_features: Tensor, candidate_mask: Tensor, boxes: Tensor,
                image_sizes: Tensor, words: Tensor, word_mask: Tensor,
                image_index: Tensor | None = None) -> dict[str, Tensor]:
        _check(roi_features, candidate_mask, words, word_mask, image_index)
        visual = (self.visual_proj(self.region(roi_features))
                  + self.spatial_proj(spatial_code(boxes, image_sizes)))   # (I, N, d)
        visual, mask = _gather(visual, image_index), _gather(candidate_mask, image_index)
        n = visual.shape[1]
        tokens = torch.cat([visual, self.text_proj(words)], dim=1)
        padding = torch.cat([~mask, ~word_mask], dim=1)
        states = self.encoder(tokens, src_key_padding_mask=padding)[:, :n]
        logits = self.relatedness(states)[..., 0].masked_fill(~mask, float("-inf"))
        deltas = self.regression(states).masked_fill(~mask[..., None], 0.0)
        return {"logits": logits, "deltas": deltas}


# --- box deltas (Fast R-CNN parameterisation) ----------------------------------------------------

def box_deltas(boxes: Tensor, targets: Tensor, weights: tuple[float, ...] = DELTA_WEIGHTS) -> Tensor:
    """The deltas taking ``boxes`` to ``targets`` (both ``(..., 4)`` xyxy, positive sizes) ->
    ``(..., 4)`` ``(wx dx/w, wy dy/h, ww log(w'/w), wh log(h'/h))`` of the centres and sizes."""
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    tw, th = targets[..., 2] - targets[..., 0], targets[..., 3] - targets[..., 1]
    dx = ((targets[..., 0] + targets[..., 2]) - (boxes[..., 0] + boxes[..., 2])) / (2 * w)
    dy = ((targets[..., 1] + targets[..., 3]) - (boxes[..., 1] + boxes[..., 3])) / (2 * h)
    wx, wy, ww, wh = weights
    return torch.stack([wx * dx, wy * dy, ww * torch.log(tw / w), wh * torch.log(th / h)], dim=-1)


def apply_box_deltas(boxes: Tensor, deltas: Tensor, weights: tuple[float, ...] = DELTA_WEIGHTS,
                     clamp: float = DELTA_CLAMP) -> Tensor:
    """The inverse of :func:`box_deltas`: ``boxes (..., 4)`` xyxy moved by ``deltas (..., 4)``;
    ``dw``, ``dh`` (after the weights) are clamped at ``clamp`` so ``exp`` cannot overflow."""
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    cx, cy = boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h
    wx, wy, ww, wh = weights
    dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
    dw, dh = (deltas[..., 2] / ww).clamp(max=clamp), (deltas[..., 3] / wh).clamp(max=clamp)
    cx, cy = cx + dx * w, cy + dy * h
    w, h = w * torch.exp(dw), h * torch.exp(dh)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


# --- selection ---------------------------------------------------------------------------------

def vlnms_proposals(candidates: dict[str, Tensor], relatedness: Tensor, k: int,
                    nms_thresh: float = 0.3) -> dict[str, Tensor]:
    """VL-NMS: :func:`~groundkit.models.referring.proposals.select_proposals` of one expression's
    candidates ranked by the fused score ``s = r * c`` (``c = candidates["confidence"]``).

    relatedness: ``(N,)`` probabilities ``r`` of this expression's candidates (one row of
    ``logits.sigmoid()`` cut to the image's N). The result also carries ``relatedness (P,)``.
    For the Trans variant's refined boxes, put :func:`apply_box_deltas` of ``candidates["boxes"]``
    in ``candidates["boxes"]`` first.
    """
    criterion = relatedness * candidates["confidence"]
    return select_proposals({**candidates, "relatedness": relatedness}, criterion, k, nms_thresh)
