"""Deformable DETR encoder over a feature pyramid, and the flatten/unflatten of its levels.

DRMN encodes the flattened P2..P5 (with positional and level embeddings) with T of these layers,
every pixel of every level being a query whose reference point is its own pixel centre.
"""
from __future__ import annotations

import copy
from typing import NamedTuple

import torch
from torch import Tensor, nn

from groundkit.errors import InputError
from groundkit.vision.deformable import MSDeformAttn, level_starts
from groundkit.vision.position import LevelEmbedding

__all__ = ["FlatLevels", "flatten_levels", "unflatten_levels", "mask_valid_ratio",
           "DeformableEncoderLayer", "DeformableEncoder"]


class FlatLevels(NamedTuple):
    """A pyramid flattened row-major and concatenated over levels (``S = sum(H_l * W_l)``).

    src: (B, S, C); pos: (B, S, C) positional codes, or None; padding_mask: (B, S) bool,
    True on padding; spatial_shapes: (L, 2) long ``(H_l, W_l)``; level_start_index: (L,) long;
    valid_ratios: (B, L, 2) ``(w, h)`` share of each level that is not padding.
    """

    src: Tensor
    pos: Tensor | None
    padding_mask: Tensor
    spatial_shapes: Tensor
    level_start_index: Tensor
    valid_ratios: Tensor


def mask_valid_ratio(mask: Tensor) -> Tensor:
    """Share of a padded map that holds image, from its padding mask.

    mask: (B, H, W) bool, True on padding (padding at the bottom and right, as collate pads).
    Returns (B, 2) ``(valid_w / W, valid_h / H)``.
    """
    height, width = mask.shape[-2:]
    valid_h = (~mask[:, :, 0]).sum(1)
    valid_w = (~mask[:, 0, :]).sum(1)
    return torch.stack([valid_w / width, valid_h / height], -1)


def flatten_levels(features: list[Tensor], pos_embeds: list[Tensor] | None = None,
                   masks: list[Tensor] | None = None) -> FlatLevels:
    """Flatten a pyramid (and its positional codes and masks) into one token sequence.

    features: L maps (B, C, H_l, W_l); pos_embeds: L maps (B, C, H_l, W_l) (level embedding
    already added, see ``DeformableEncoder.encode_maps``) or None; masks: L maps (B, H_l, W_l)
    bool, True on padding, or None for no padding.
    """
    if not features:
        raise InputError("flatten_levels: 'features' is empty")
    for name, maps in (("pos_embeds", pos_embeds), ("masks", masks)):
        if maps is not None and len(maps) != len(features):
            raise InputError(f"flatten_levels: '{name}' has {len(maps)} levels, 'features' {len(features)}")
    if masks is None:
        masks = [f.new_zeros((f.shape[0], *f.shape[-2:]), dtype=torch.bool) for f in features]
    spatial_shapes = torch.tensor([f.shape[-2:] for f in features], dtype=torch.long,
                                  device=features[0].device)
    return FlatLevels(
        src=torch.cat([f.flatten(2).transpose(1, 2) for f in features], 1),
        pos=None if pos_embeds is None else torch.cat([p.flatten(2).transpose(1, 2)
                                                        for p in pos_embeds], 1),
        padding_mask=torch.cat([m.flatten(1) for m in masks], 1),
        spatial_shapes=spatial_shapes,
        level_start_index=level_starts(spatial_shapes),
        valid_ratios=torch.stack([mask_valid_ratio(m) for m in masks], 1),
    )


def unflatten_levels(x: Tensor, spatial_shapes: Tensor) -> list[Tensor]:
    """Inverse of ``flatten_levels`` for the features: x (B, S, C) -> L maps (B, C, H_l, W_l)."""
    shapes = spatial_shapes.tolist()
    sizes = [height * width for height, width in shapes]
    if sum(sizes) != x.shape[1]:
        raise InputError(f"unflatten_levels: spatial_shapes {shapes} cover {sum(sizes)} tokens, "
                         f"x has {x.shape[1]}")
    return [part.transpose(1, 2).reshape(x.shape[0], x.shape[2], height, width)
            for part, (height, width) in zip(x.split(sizes, 1), shapes)]


class DeformableEncoderLayer(nn.Module):
    """Self deformable attention, then an FFN; each followed by dropout, residual and LayerNorm."""

    def __init__(self, d_model: int = 256, d_ffn: int = 1024, dropout: float = 0.1, n_levels: int = 4,
                 n_heads: int = 8, n_points: int = 4) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, d_ffn), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(d_ffn, d_model))
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src: Tensor, pos: Tensor | None, reference_points: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, padding_mask: Tensor | None = None,
                memory: Tensor | None = None) -> Tensor:
        """Encode ``src`` by attending over the flattened maps ``memory`` (``src`` itself by default).

        src: (B, Q, C); pos: (B, Q, C) or None, added to the queries only (not to the values);
        reference_points: (B, Q, L, 2) or (B, Q, 2); memory: (B, S, C) or None for self attention
        (Q = S); padding_mask: (B, S) bool, True on padding. Returns (B, Q, C).
        A separate ``memory`` serves DRMN's refinement: top-k pixels re-encoded over the pyramid.
        """
        query = src if pos is None else src + pos
        attended = self.self_attn(query, reference_points, src if memory is None else memory,
                                  spatial_shapes, level_start_index, padding_mask)
        src = self.norm1(src + self.dropout1(attended))
        return self.norm2(src + self.dropout2(self.ffn(src)))


class DeformableEncoder(nn.Module):
    """``num_layers`` copies of ``layer`` over a flattened pyramid, plus the learned level embedding
    that ``encode_maps`` adds to the positional codes."""

    def __init__(self, layer: DeformableEncoderLayer, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        attn = layer.self_attn
        self.level_embed = LevelEmbedding(attn.n_levels, attn.d_model)

    @staticmethod
    def reference_points(spatial_shapes: Tensor, valid_ratios: Tensor) -> Tensor:
        """Each token's pixel centre, as a reference point on every level.

        spatial_shapes: (L, 2) long ``(H_l, W_l)``; valid_ratios: (B, L, 2) ``(w, h)``.
        Returns (B, S, L, 2) ``(x, y)`` in [0, 1]. The centre is normalised by the valid (unpadded)
        part of its own level, then scaled by each level's valid part, so that the same image point
        is meant on every level even when levels are padded by different amounts.
        """
        points = []
        for level, (height, width) in enumerate(spatial_shapes.tolist()):
            ys, xs = torch.meshgrid(
                torch.arange(height, dtype=valid_ratios.dtype, device=valid_ratios.device) + 0.5,
                torch.arange(width, dtype=valid_ratios.dtype, device=valid_ratios.device) + 0.5,
                indexing="ij")
            ratio = valid_ratios[:, None, level]  # (B, 1, 2)
            points.append(torch.stack([xs.reshape(1, -1) / (ratio[..., 0] * width),
                                       ys.reshape(1, -1) / (ratio[..., 1] * height)], -1))
        return torch.cat(points, 1)[:, :, None] * valid_ratios[:, None]

    def forward(self, src: Tensor, spatial_shapes: Tensor, level_start_index: Tensor, valid_ratios: Tensor,
                pos: Tensor | None = None, padding_mask: Tensor | None = None) -> Tensor:
        """src: (B, S, C) flattened levels; pos: (B, S, C) or None; padding_mask: (B, S) bool or None;
        valid_ratios: (B, L, 2). Returns (B, S, C)."""
        reference_points = self.reference_points(spatial_shapes, valid_ratios)
        for layer in self.layers:
            src = layer(src, pos, reference_points, spatial_shapes, level_start_index, padding_mask)
        return src

    def encode_maps(self, features: list[Tensor], pos_embeds: list[Tensor] | None = None,
                    masks: list[Tensor] | None = None) -> list[Tensor]:
        """Encode a pyramid: L maps (B, C, H_l, W_l) -> L maps of the same shapes.

        pos_embeds: L maps (B, C, H_l, W_l) (e.g. ``PositionEmbeddingSine``) or None for the level
        embedding alone; masks: L maps (B, H_l, W_l) bool, True on padding, or None.
        """
        levels = self.level_embed.weight.shape[0]
        if pos_embeds is None:
            pos_embeds = [torch.zeros_like(f) for f in features]
        if len(features) != levels or len(pos_embeds) != levels:
            raise InputError(f"encode_maps: built for {levels} levels, got {len(features)} feature maps "
                             f"and {len(pos_embeds)} positional maps")
        pos_embeds = [self.level_embed(pos, level) for level, pos in enumerate(pos_embeds)]
        flat = flatten_levels(features, pos_embeds, masks)
        out = self.forward(flat.src, flat.spatial_shapes, flat.level_start_index, flat.valid_ratios,
                           flat.pos, flat.padding_mask)
        return unflatten_levels(out, flat.spatial_shapes)
