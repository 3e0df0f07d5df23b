"""PPMN: Pixel-Phrase Matching Network with Language-Compatible Pixel Aggregation (LCPA).

Ding et al., "PPMN: Pixel-Phrase Matching Network for One-Stage Panoptic Narrative Grounding",
ACM MM 2022. The queries (``model.query``, shared with DRMN) are by default one per grounded noun
phrase, its word pieces' features mean-pooled (the paper's R, N x C); ``query="word_piece"`` is the
official code's: one query per word piece, each trained with its phrase's mask, the maps of a
phrase's word pieces averaged at inference. Word pieces lost 8.7 AR on val at the synthetic bundle's
recipe (docs/results.md), so phrases stay the default. Maps are thresholded at 0.5.

Pipeline: image -> ResNet-FPN -> semantic-FPN neck F (stride 8); caption -> text encoder -> word-piece
features -> queries; round 0 matches projected pixels and queries by dot product; each LCPA round
gathers the top-S pixels of every query's current map, attends over them, and predicts a new
dynamic kernel.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from groundkit.models.grounding import GroundingHead, GroundingModel, GroundingModelConfig, build_grounding
from groundkit.vision.position import coordinate_channels
from groundkit.vision.resnet import num_groups


@dataclass
class PPMNConfig(GroundingModelConfig):
    """PPMN hyper-parameters; defaults are the paper's (methods.md)."""

    rounds: int = 3          # L, LCPA rounds after the initial matching
    top_pixels: int = 200    # S, pixels gathered per query and round; 0 disables aggregation
    heads: int = 8
    ffn_dim: int = 2048
    dropout: float = 0.0
    kernel_mlp_layers: int = 3
    # Append normalised (x, y) to the pixel features before the projection W1 (CoordConv, as
    # SOLO's mask branch): position becomes linear in the pixel embedding, for phrases that name
    # a place ("the topmost star", "left of the circle"). Not in the paper.
    pixel_coords: bool = False


def _conv_gn_relu(channels: int, out: int, groups: int = 32) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, out, 1), nn.GroupNorm(num_groups(out, groups), out),
                         nn.ReLU(inplace=True))


def matching_logits(kernels: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Dot product of every query kernel with every pixel.

    kernels: ``(B, Q, C)``; pixels: ``(B, C, h, w)`` -> ``(B, Q, h, w)``.
    """
    return torch.einsum("bqc,bchw->bqhw", kernels, pixels)


def gather_top_pixels(logits: torch.Tensor, pixels: torch.Tensor, k: int) -> torch.Tensor:
    """Features of the ``k`` highest-scoring pixels of every query's map.

    logits: ``(B, Q, h, w)``; pixels: ``(B, C, h, w)`` -> ``(B, Q, k, C)``.
    """
    return gather_pixels(pixels, top_pixel_indices(logits, k))


def top_pixel_indices(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Flat indices (row-major) of the ``k`` highest-scoring pixels of every query's map, best
    first; no gradient flows through the choice.

    logits: ``(B, Q, h, w)`` -> ``(B, Q, min(k, h * w))`` long.
    """
    h, w = logits.shape[-2:]
    return logits.detach().flatten(2).topk(min(k, h * w), dim=-1).indices


def gather_pixels(pixels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Features of the pixels at flat indices ``index``.

    pixels: ``(B, C, h, w)``; index: ``(B, Q, k)`` long -> ``(B, Q, k, C)``.
    """
    b, q, k = index.shape
    flat = pixels.flatten(2).transpose(1, 2)                              # (B, hw, C)
    gathered = torch.gather(flat, 1, index.reshape(b, q * k, 1).expand(-1, -1, flat.shape[-1]))
    return gathered.reshape(b, q, k, -1)


class LCPARound(nn.Module):
    """One round of Language-Compatible Pixel Aggregation.

    Multi-head attention of each query over its top-S pixels, residual + LayerNorm, FFN + residual +
    LayerNorm (post-norm, as the official code), then an MLP to a new dynamic kernel applied to a
    freshly projected pixel map (1x1 conv + GroupNorm + ReLU).
    """

    def __init__(self, dim: int, top_pixels: int, heads: int, ffn_dim: int, dropout: float,
                 mlp_layers: int) -> None:
        super().__init__()
        self.top_pixels = top_pixels
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(ffn_dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        layers: list[nn.Module] = []
        for _ in range(mlp_layers):
            layers += [nn.Linear(dim, dim), nn.LayerNorm(dim), nn.ReLU(inplace=True)]
        self.kernel_mlp = nn.Sequential(*layers, nn.Linear(dim, dim))
        self.pixel_proj = _conv_gn_relu(dim, dim)

    def forward(self, queries: torch.Tensor, pixels: torch.Tensor, logits: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries: ``(B, Q, C)``; pixels: ``(B, C, h, w)``; logits: ``(B, Q, h, w)``.

        Returns the refined queries ``(B, Q, C)`` and the new logits ``(B, Q, h, w)``.
        """
        if self.top_pixels > 0:
            b, q, c = queries.shape
            context = gather_top_pixels(logits, pixels, self.top_pixels)   # (B, Q, S, C)
            attended, _ = self.attention(queries.reshape(b * q, 1, c),
                                         context.reshape(b * q, -1, c), context.reshape(b * q, -1, c),
                                         need_weights=False)
            queries = self.norm1(queries + attended.reshape(b, q, c))
        queries = self.norm2(queries + self.ffn(queries))
        return queries, matching_logits(self.kernel_mlp(queries), self.pixel_proj(pixels))


class PPMNHead(GroundingHead):
    """Initial pixel-phrase matching + L LCPA rounds: a list of ``L + 1`` logit maps."""

    def __init__(self, cfg: PPMNConfig) -> None:
        super().__init__()
        dim = cfg.hidden_dim
        self.pixel_coords = cfg.pixel_coords
        self.pixel_proj = nn.Conv2d(cfg.neck_channels + 2 * cfg.pixel_coords, dim, 1)  # W1 of Eq. (1)
        self.rounds = nn.ModuleList(
            LCPARound(dim, cfg.top_pixels, cfg.heads, cfg.ffn_dim, cfg.dropout, cfg.kernel_mlp_layers)
            for _ in range(cfg.rounds))

    def forward(self, features: dict[str, torch.Tensor], queries: torch.Tensor,
                valid: torch.Tensor | None = None) -> list[torch.Tensor]:
        """features["neck"]: ``(B, C_v, h, w)``; queries: ``(B, Q, C)`` -> L+1 x ``(B, Q, h, w)``.

        ``valid`` (padding queries) is not needed: PPMN's queries never read each other.
        """
        neck = features["neck"]
        if self.pixel_coords:
            neck = torch.cat([neck, coordinate_channels(neck)], dim=1)
        pixels = self.pixel_proj(neck)
        logits = matching_logits(queries, pixels)
        outputs = [logits]
        for lcpa in self.rounds:
            queries, logits = lcpa(queries, pixels, logits)
            outputs.append(logits)
        return outputs


def build_ppmn(cfg: PPMNConfig, **parts: nn.Module) -> GroundingModel:
    """PPMN from its config: the shared grounding model around a :class:`PPMNHead`
    (``parts``: ``backbone=``, ``text_encoder=`` shared with another model)."""
    return build_grounding(cfg, PPMNHead(cfg), **parts)
