import math

import pytest
import torch

from groundkit.errors import ConfigError
from groundkit.vision.position import LevelEmbedding, PositionEmbeddingSine


def slow_code(i, j, h, w, k, num_feats, temperature=10000.0, scale=2 * math.pi):
    """DETR's formula for pixel (i, j) of an unpadded h x w map, channel k, written per pixel."""
    axis, c = divmod(k, num_feats)  # y channels first, then x
    pos = (i + 1) / (h + 1e-6) * scale if axis == 0 else (j + 1) / (w + 1e-6) * scale
    angle = pos / temperature ** (2 * (c // 2) / num_feats)
    return math.sin(angle) if c % 2 == 0 else math.cos(angle)


def test_matches_per_pixel_formula():
    enc = PositionEmbeddingSine(num_pos_feats=8)
    out = enc(torch.zeros(2, 5, 3, 4))
    assert out.shape == (2, 16, 3, 4)
    for i, j, k in [(0, 0, 0), (2, 3, 1), (1, 2, 6), (2, 1, 9), (0, 3, 15), (1, 0, 12)]:
        assert out[1, k, i, j].item() == pytest.approx(slow_code(i, j, 3, 4, k, 8), abs=1e-5)


def test_padding_mask_normalises_over_valid_region():
    enc = PositionEmbeddingSine(num_pos_feats=4)
    mask = torch.zeros(1, 6, 7, dtype=torch.bool)
    mask[:, 4:, :] = True
    mask[:, :, 5:] = True
    padded = enc(torch.zeros(1, 1, 6, 7), mask)
    alone = enc(torch.zeros(1, 1, 4, 5))
    assert torch.allclose(padded[..., :4, :5], alone, atol=1e-6)


def test_odd_num_feats_rejected():
    with pytest.raises(ConfigError):
        PositionEmbeddingSine(num_pos_feats=5)


def test_level_embedding_adds_its_level_vector():
    emb = LevelEmbedding(num_levels=4, dim=6)
    pos = torch.zeros(2, 6, 3, 3)
    out = emb(pos, level=2)
    assert torch.equal(out[1, :, 2, 0], emb.weight[2])
    out.sum().backward()
    assert emb.weight.grad[2].abs().sum() > 0 and emb.weight.grad[0].abs().sum() == 0
