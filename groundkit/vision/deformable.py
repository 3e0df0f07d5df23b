"""Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021) in pure PyTorch.

Each query looks at ``n_points`` locations per head and per level of a feature pyramid, placed
around its reference point by learned offsets, and mixes their bilinearly sampled values with
learned softmax weights. Its cost grows with queries x points, not with pixels squared, which is
why DRMN can encode every pixel of P2..P5 with it.

Conventions (those of the Deformable DETR reference code):

- the maps of all levels are flattened row-major and concatenated: ``(B, S, ...)`` with
  ``S = sum(H_l * W_l)``; ``spatial_shapes: (L, 2)`` holds ``(H_l, W_l)`` and
  ``level_start_index: (L,)`` where each level starts in ``S``;
- locations are ``(x, y)`` normalised to ``[0, 1]``: ``(0, 0)`` is the top-left corner of the map,
  pixel ``(i, j)`` has its centre at ``((j + 0.5) / W, (i + 0.5) / H)``; outside the map values
  are zero.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from groundkit.errors import ConfigError, InputError

__all__ = ["ms_deform_attn_sample", "MSDeformAttn", "level_starts", "check_levels", "initial_offsets"]


def level_starts(spatial_shapes: Tensor) -> Tensor:
    """Where each level starts in the flattened sequence: spatial_shapes (L, 2) -> (L,) long."""
    sizes = spatial_shapes.prod(1)
    return torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])


def check_levels(num_tokens: int, spatial_shapes: Tensor, level_start_index: Tensor) -> None:
    """Raise ``InputError`` unless the level layout describes exactly ``num_tokens`` tokens.

    spatial_shapes: (L, 2) long, ``(H_l, W_l)``; level_start_index: (L,) long.
    """
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
        raise InputError(f"deformable attention: 'spatial_shapes' must be (L, 2), "
                         f"got {tuple(spatial_shapes.shape)}")
    starts = level_starts(spatial_shapes).tolist()
    if level_start_index.tolist() != starts:
        raise InputError(f"deformable attention: 'level_start_index' must be {starts} for "
                         f"spatial_shapes {spatial_shapes.tolist()}, got {level_start_index.tolist()}")
    covered = int(spatial_shapes.prod(1).sum())
    if covered != num_tokens:
        raise InputError(f"deformable attention: spatial_shapes {spatial_shapes.tolist()} cover "
                         f"{covered} tokens, the input has {num_tokens}")


def ms_deform_attn_sample(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                          sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """The core op: bilinear sampling per level, then a weighted sum over levels and points.

    value: (B, S, H, D) per-head values of the flattened levels.
    spatial_shapes: (L, 2) long, ``(H_l, W_l)``; level_start_index: (L,) long.
    sampling_locations: (B, Q, H, L, P, 2), ``(x, y)`` in [0, 1] (outside reads zeros).
    attention_weights: (B, Q, H, L, P), normally a softmax over ``L * P``.
    Returns (B, Q, H * D), heads concatenated.
    """
    batch, _, heads, dim = value.shape
    queries, points = sampling_locations.shape[1], sampling_locations.shape[4]
    check_levels(value.shape[1], spatial_shapes, level_start_index)
    expected = (batch, queries, heads, spatial_shapes.shape[0], points)
    if tuple(sampling_locations.shape) != (*expected, 2) or tuple(attention_weights.shape) != expected:
        raise InputError(f"deformable attention: expected sampling_locations {(*expected, 2)} and "
                         f"attention_weights {expected} (B, Q, H, L, P), got "
                         f"{tuple(sampling_locations.shape)} and {tuple(attention_weights.shape)}")
    # grid_sample reads [-1, 1] with align_corners=False: -1 is the left/top edge of the map.
    grids = 2.0 * sampling_locations - 1.0
    out = value.new_zeros(batch * heads, dim, queries)
    levels = zip(spatial_shapes.tolist(), level_start_index.tolist())
    for level, ((height, width), start) in enumerate(levels):
        # (B, H_l*W_l, H, D) -> (B*H, D, H_l, W_l): one image per (batch, head)
        value_l = value[:, start:start + height * width].permute(0, 2, 3, 1)
        value_l = value_l.reshape(batch * heads, dim, height, width)
        grid_l = grids[:, :, :, level].transpose(1, 2).reshape(batch * heads, queries, points, 2)
        sampled = F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros",
                                align_corners=False)  # (B*H, D, Q, P)
        weights_l = attention_weights[:, :, :, level].transpose(1, 2)
        out = out + (sampled * weights_l.reshape(batch * heads, 1, queries, points)).sum(-1)
    return out.view(batch, heads * dim, queries).transpose(1, 2).contiguous()


def initial_offsets(n_heads: int, n_levels: int, n_points: int) -> Tensor:
    """Deformable DETR's starting offsets, in pixels of each level: (n_heads, n_levels, n_points, 2).

    Head ``h`` points in direction ``2 pi h / n_heads``, scaled so its larger component is 1 (a point
    on the unit square), and point ``k`` goes ``k + 1`` times as far: before training the heads
    look around the reference point in a spread of directions and distances.
    """
    angles = torch.arange(n_heads, dtype=torch.float32) * (2.0 * math.pi / n_heads)
    directions = torch.stack([angles.cos(), angles.sin()], -1)
    directions = directions / directions.abs().max(-1, keepdim=True).values
    steps = torch.arange(1, n_points + 1, dtype=torch.float32)
    offsets = directions[:, None, None, :] * steps[None, None, :, None]  # (n_heads, 1, n_points, 2)
    return offsets.expand(n_heads, n_levels, n_points, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention: ``n_heads`` heads x ``n_levels`` levels x ``n_points`` points."""

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8,
                 n_points: int = 4) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ConfigError(f"MSDeformAttn: d_model={d_model} must be divisible by n_heads={n_heads}")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's init: offsets start at ``initial_offsets`` whatever the query, and the
        attention weights uniform (zero logits); projections Xavier."""
        nn.init.zeros_(self.sampling_offsets.weight)
        with torch.no_grad():
            start = initial_offsets(self.n_heads, self.n_levels, self.n_points)
            self.sampling_offsets.bias.copy_(start.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, query: Tensor, reference_points: Tensor, input_flatten: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor,
                padding_mask: Tensor | None = None) -> Tensor:
        """Attend from each query to its sampled points.

        query: (B, Q, C), with its positional code already added.
        reference_points: (B, Q, L, 2) or (B, Q, 2) (the same point on every level), ``(x, y)`` in [0, 1].
        input_flatten: (B, S, C) flattened levels; spatial_shapes: (L, 2) long ``(H_l, W_l)``;
        level_start_index: (L,) long.
        padding_mask: (B, S) bool, True where the input is padding (it then contributes zero).
        Returns (B, Q, C).
        """
        batch, queries, _ = query.shape
        self._check_inputs(query, reference_points, input_flatten, spatial_shapes, level_start_index,
                           padding_mask)
        value = self.value_proj(input_flatten)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(batch, input_flatten.shape[1], self.n_heads, self.d_model // self.n_heads)
        shape = (batch, queries, self.n_heads, self.n_levels, self.n_points)
        offsets = self.sampling_offsets(query).view(*shape, 2)
        # softmax over all L * P samples of a head, as in Deformable DETR
        weights = self.attention_weights(query).view(batch, queries, self.n_heads, -1).softmax(-1)
        locations = self.sampling_locations(reference_points, offsets, spatial_shapes)
        out = ms_deform_attn_sample(value, spatial_shapes, level_start_index, locations, weights.view(shape))
        return self.output_proj(out)

    @staticmethod
    def sampling_locations(reference_points: Tensor, offsets: Tensor, spatial_shapes: Tensor) -> Tensor:
        """Reference points plus offsets given in pixels of each level.

        reference_points: (B, Q, L, 2) or (B, Q, 2); offsets: (B, Q, H, L, P, 2) in pixels;
        spatial_shapes: (L, 2) ``(H_l, W_l)``. Returns (B, Q, H, L, P, 2) normalised ``(x, y)``.
        """
        if reference_points.dim() == 3:
            reference_points = reference_points[:, :, None, :]
        # offsets are (x, y) in pixels of each level: divide by (W_l, H_l)
        level_size = spatial_shapes.flip(-1).to(offsets.dtype)
        return reference_points[:, :, None, :, None, :] + offsets / level_size[None, None, None, :, None, :]

    def _check_inputs(self, query: Tensor, reference_points: Tensor, input_flatten: Tensor,
                      spatial_shapes: Tensor, level_start_index: Tensor,
                      padding_mask: Tensor | None) -> None:
        batch, queries, channels = query.shape
        if channels != self.d_model or input_flatten.shape[-1] != self.d_model:
            raise InputError(f"MSDeformAttn: query and input must have {self.d_model} channels, got "
                             f"{channels} and {input_flatten.shape[-1]}")
        if spatial_shapes.shape[0] != self.n_levels:
            raise InputError(f"MSDeformAttn: built for {self.n_levels} levels, spatial_shapes has "
                             f"{spatial_shapes.shape[0]}")
        ok_refs = {(batch, queries, 2), (batch, queries, self.n_levels, 2)}
        if tuple(reference_points.shape) not in ok_refs:
            raise InputError(f"MSDeformAttn: 'reference_points' must be (B, Q, 2) or (B, Q, L, 2), "
                             f"one of {sorted(ok_refs)}, got {tuple(reference_points.shape)}")
        flat_shape = tuple(input_flatten.shape[:2])
        if padding_mask is not None and tuple(padding_mask.shape) != flat_shape:
            raise InputError(f"MSDeformAttn: 'padding_mask' must be (B, S) = {flat_shape}, "
                             f"got {tuple(padding_mask.shape)}")
