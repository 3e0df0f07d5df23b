"""Positional codes for feature maps: the 2-D sine encoding of DETR and a learned level embedding."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from groundkit.errors import ConfigError


class PositionEmbeddingSine(nn.Module):
    """2-D sine/cosine positional encoding (DETR): ``num_pos_feats`` channels for y, then for x.

    With ``normalize`` the cumulative row/column index of each valid pixel is divided by the
    valid extent and multiplied by ``scale``, so the code spans [0, scale] whatever the map size.
    Channel ``2i`` of an axis is ``sin(pos / temperature^(2i / num_pos_feats))`` and channel
    ``2i + 1`` the cosine of the same argument.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0,
                 normalize: bool = True, scale: float = 2 * math.pi) -> None:
        super().__init__()
        if num_pos_feats < 2 or num_pos_feats % 2:
            raise ConfigError(f"num_pos_feats: expected an even integer >= 2, got {num_pos_feats}")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: (B, C, H, W) (only its shape, device, dtype are used); mask: (B, H, W) bool,
        True on padding, or None for no padding -> (B, 2 * num_pos_feats, H, W)."""
        b, _, h, w = x.shape
        if mask is None:
            valid = torch.ones(b, h, w, device=x.device, dtype=torch.float32)
        else:
            valid = (~mask).to(torch.float32)
        # 1-based index of each pixel among the valid pixels of its column (y) and row (x).
        y = valid.cumsum(1)
        xx = valid.cumsum(2)
        if self.normalize:
            eps = 1e-6
            y = y / (y[:, -1:, :] + eps) * self.scale
            xx = xx / (xx[:, :, -1:] + eps) * self.scale
        pair = torch.arange(self.num_pos_feats, device=x.device) // 2
        freqs = self.temperature ** (2 * pair / self.num_pos_feats)  # (F,): sin/cos pairs share one
        pos_y = _interleave_sin_cos(y[..., None] / freqs)
        pos_x = _interleave_sin_cos(xx[..., None] / freqs)
        return torch.cat((pos_y, pos_x), dim=-1).permute(0, 3, 1, 2).to(x.dtype)


def _interleave_sin_cos(angles: Tensor) -> Tensor:
    """angles: (..., F) -> (..., F): sine on even channels, cosine on odd ones."""
    out = angles.clone()
    out[..., 0::2] = angles[..., 0::2].sin()
    out[..., 1::2] = angles[..., 1::2].cos()
    return out


class LevelEmbedding(nn.Module):
    """A learned vector per pyramid level, added to that level's positional code (Deformable DETR).

    Attributes:
        weight: (num_levels, dim), initialised from N(0, 1).
    """

    def __init__(self, num_levels: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_levels, dim))

    def forward(self, pos: Tensor, level: int) -> Tensor:
        """pos: (B, dim, H, W) positional code of level ``level`` -> (B, dim, H, W) with the
        level's vector added."""
        return pos + self.weight[level].view(1, -1, 1, 1).to(pos.dtype)


def coordinate_channels(x: torch.Tensor) -> torch.Tensor:
    """Normalised (x, y) positions in [-1, 1] of a ``(B, C, h, w)`` map: ``(B, 2, h, w)``."""
    b, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"))  # (2, h, w): x then y
    return grid.expand(b, -1, -1, -1)
