"""Deformable encoder: level flattening round trip, reference points, gradients, padding."""
from __future__ import annotations

import pytest
import torch

from groundkit.errors import InputError
from groundkit.vision.deformable_encoder import (
    DeformableEncoder,
    DeformableEncoderLayer,
    flatten_levels,
    mask_valid_ratio,
    unflatten_levels,
)

SHAPES = [(6, 8), (3, 4), (2, 2)]
CHANNELS = 16


def pyramid(batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, CHANNELS, h, w, generator=gen) for h, w in SHAPES]


def small_encoder(num_layers: int = 2) -> DeformableEncoder:
    """A tiny encoder whose queries matter: at init the offset and weight layers are zero, so the
    queries (and with them the positions and the level embedding) would change nothing."""
    torch.manual_seed(0)
    layer = DeformableEncoderLayer(d_model=CHANNELS, d_ffn=32, dropout=0.0, n_levels=len(SHAPES),
                                   n_heads=4, n_points=2)
    encoder = DeformableEncoder(layer, num_layers)
    with torch.no_grad():
        for layer in encoder.layers:
            layer.self_attn.sampling_offsets.weight.normal_(0, 0.1)
            layer.self_attn.attention_weights.weight.normal_(0, 0.1)
    return encoder


def test_flatten_unflatten_round_trip_and_layout():
    features = pyramid()
    pos = pyramid(seed=1)
    flat = flatten_levels(features, pos)
    assert flat.src.shape == flat.pos.shape == (2, 48 + 12 + 4, CHANNELS)
    assert flat.spatial_shapes.tolist() == [list(s) for s in SHAPES]
    assert flat.level_start_index.tolist() == [0, 48, 60]
    assert not flat.padding_mask.any() and torch.equal(flat.valid_ratios, torch.ones(2, 3, 2))
    # row-major: token 48 + 1 * 4 + 2 is level 1, row 1, column 2
    assert torch.equal(flat.src[:, 48 + 6], features[1][:, :, 1, 2])
    assert torch.equal(flat.pos[:, 48 + 6], pos[1][:, :, 1, 2])
    for back, original in zip(unflatten_levels(flat.src, flat.spatial_shapes), features):
        assert torch.equal(back, original)
    assert flatten_levels(features).pos is None


def test_encode_maps_adds_the_level_embedding_to_the_positions():
    encoder = small_encoder(num_layers=1)
    features, pos = pyramid(), pyramid(seed=1)
    out = encoder.encode_maps(features, pos)
    flat = flatten_levels(features)
    level_of_token = torch.repeat_interleave(torch.arange(3), torch.tensor([48, 12, 4]))
    with_level = flatten_levels(pos).src + encoder.level_embed.weight[level_of_token]
    want = encoder(flat.src, flat.spatial_shapes, flat.level_start_index, flat.valid_ratios, with_level)
    for got, expected in zip(out, unflatten_levels(want, flat.spatial_shapes)):
        assert torch.allclose(got, expected, atol=1e-6)
    without_level = encoder(flat.src, flat.spatial_shapes, flat.level_start_index, flat.valid_ratios,
                            flatten_levels(pos).src)
    assert not torch.allclose(want, without_level, atol=1e-3)


def test_valid_ratio_from_mask():
    mask = torch.zeros(2, 4, 8, dtype=torch.bool)
    mask[1, 3:, :] = True  # one row of four is padding
    mask[1, :, 6:] = True  # two columns of eight
    assert mask_valid_ratio(mask).tolist() == [[1.0, 1.0], [0.75, 0.75]]


def test_reference_points_are_pixel_centres():
    shapes = torch.tensor(SHAPES)
    refs = DeformableEncoder.reference_points(shapes, torch.ones(2, 3, 2))
    assert refs.shape == (2, 64, 3, 2)
    # token 48 + 6 is level 1 (3 x 4), row 1, column 2: centre (2.5 / 4, 1.5 / 3) on every level
    assert torch.allclose(refs[:, 54], torch.tensor([2.5 / 4, 1.5 / 3]).expand(2, 3, 2))
    # level 1 holds image on its left half only (2 of 4 columns), the other levels are unpadded:
    # a level-1 pixel keeps its own centre on level 1 and means the same image point elsewhere
    ratios = torch.ones(1, 3, 2)
    ratios[0, 1, 0] = 0.5
    padded = DeformableEncoder.reference_points(shapes, ratios)[0, 48 + 1]  # level 1, row 0, column 1
    assert torch.allclose(padded[1], torch.tensor([1.5 / 4, 0.5 / 3]))
    assert torch.allclose(padded[0], torch.tensor([1.5 / 2, 0.5 / 3]))  # 3/4 of the image's width


def test_encoder_shapes_and_gradient_reaches_every_parameter():
    encoder = small_encoder()
    features = [f.requires_grad_() for f in pyramid()]
    out = encoder.encode_maps(features, pyramid(seed=1))
    assert [o.shape for o in out] == [f.shape for f in features]
    sum(o.square().sum() for o in out).backward()
    for name, param in encoder.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert all(f.grad.abs().sum() > 0 for f in features)


def test_layer_reencodes_some_queries_over_the_maps():
    layer = small_encoder(num_layers=1).layers[0]
    flat = flatten_levels(pyramid())
    queries = flat.src[:, [3, 50, 61]]  # three pixels, one per level, as DRMN's top-k would pick
    refs = DeformableEncoder.reference_points(flat.spatial_shapes, flat.valid_ratios)[:, [3, 50, 61]]
    out = layer(queries, None, refs, flat.spatial_shapes, flat.level_start_index, memory=flat.src)
    full = layer(flat.src, None, DeformableEncoder.reference_points(flat.spatial_shapes, flat.valid_ratios),
                 flat.spatial_shapes, flat.level_start_index)
    assert out.shape == (2, 3, CHANNELS)
    assert torch.allclose(out, full[:, [3, 50, 61]], atol=1e-6)  # the same as in self attention


def test_encoder_ignores_padded_pixels():
    encoder = small_encoder(num_layers=1).eval()
    features = pyramid()
    masks = [torch.zeros(2, h, w, dtype=torch.bool) for h, w in SHAPES]
    for mask in masks:  # the right half of image 1 is padding on every level
        mask[1, :, mask.shape[-1] // 2:] = True
    out = encoder.encode_maps(features, masks=masks)
    changed = [f.clone() for f in features]
    for f, mask in zip(changed, masks):
        f.permute(0, 2, 3, 1)[mask] += 50.0
    out_changed = encoder.encode_maps(changed, masks=masks)
    for o, c, mask in zip(out, out_changed, masks):
        # valid pixels do not see padding (padded pixels' own outputs may change: they are discarded)
        assert torch.allclose(o.permute(0, 2, 3, 1)[~mask], c.permute(0, 2, 3, 1)[~mask], atol=1e-5)


def test_flatten_rejects_mismatched_levels():
    with pytest.raises(InputError, match="pos_embeds"):
        flatten_levels(pyramid(), pyramid()[:2])
    with pytest.raises(InputError, match="built for 3 levels"):
        small_encoder().encode_maps(pyramid()[:2])
    with pytest.raises(InputError, match="cover"):
        unflatten_levels(torch.zeros(1, 10, CHANNELS), torch.tensor(SHAPES))
