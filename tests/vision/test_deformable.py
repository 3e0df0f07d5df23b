"""Multi-scale deformable attention: the op against a literal per-point loop, gradients, the module."""
from __future__ import annotations

import math

import pytest
import torch

from groundkit.errors import ConfigError, InputError
from groundkit.vision.deformable import MSDeformAttn, initial_offsets, level_starts, ms_deform_attn_sample

SHAPES = [(5, 7), (3, 4), (2, 2)]  # (H_l, W_l), deliberately not square


def level_layout(shapes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    return spatial_shapes, level_starts(spatial_shapes)


def bilinear_literal(value_map, x: float, y: float) -> torch.Tensor:
    """Bilinear read of value_map (H, W, D) at normalised (x, y); corners outside the map read 0."""
    height, width = value_map.shape[:2]
    px, py = x * width - 0.5, y * height - 0.5  # pixel (i, j) has its centre at (j + .5, i + .5)
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(value_map.shape[-1], dtype=value_map.dtype)
    for yi in (y0, y0 + 1):
        for xi in (x0, x0 + 1):
            if 0 <= yi < height and 0 <= xi < width:
                out += (1 - abs(px - xi)) * (1 - abs(py - yi)) * value_map[yi, xi]
    return out


def deform_attn_literal(value, shapes, locations, weights) -> torch.Tensor:
    """The op written out point by point: value (B, S, H, D) -> (B, Q, H * D)."""
    batch, _, heads, dim = value.shape
    queries, levels, points = locations.shape[1], locations.shape[3], locations.shape[4]
    out = torch.zeros(batch, queries, heads * dim, dtype=value.dtype)
    for b in range(batch):
        for q in range(queries):
            for h in range(heads):
                start = 0
                for lvl in range(levels):
                    height, width = shapes[lvl]
                    value_map = value[b, start:start + height * width, h].reshape(height, width, dim)
                    for p in range(points):
                        x, y = locations[b, q, h, lvl, p].tolist()
                        out[b, q, h * dim:(h + 1) * dim] += (
                            weights[b, q, h, lvl, p] * bilinear_literal(value_map, x, y))
                    start += height * width
    return out


def random_inputs(shapes, batch=2, queries=3, heads=2, dim=3, points=2, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    tokens = sum(h * w for h, w in shapes)
    value = torch.randn(batch, tokens, heads, dim, generator=gen, dtype=dtype)
    # a margin beyond [0, 1] so that the zero padding outside the map is exercised too
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=gen, dtype=dtype)
    locations = locations * 1.3 - 0.15
    weights = torch.rand(batch, queries, heads, len(shapes), points, generator=gen, dtype=dtype)
    return value, locations, weights


def test_op_matches_literal_loop():
    spatial_shapes, starts = level_layout(SHAPES)
    value, locations, weights = random_inputs(SHAPES)
    got = ms_deform_attn_sample(value, spatial_shapes, starts, locations, weights)
    want = deform_attn_literal(value, SHAPES, locations, weights)
    assert got.shape == (2, 3, 2 * 3)
    assert (got - want).abs().max() <= 1e-5


def test_op_reads_pixel_centres_exactly_and_zero_far_outside():
    shapes = [(3, 4)]
    spatial_shapes, starts = level_layout(shapes)
    value = torch.arange(12, dtype=torch.float32).view(1, 12, 1, 1)
    # centre of pixel (row 1, col 2), then a point entirely outside the map
    locations = torch.tensor([[2.5 / 4, 1.5 / 3], [1.5, 0.5]]).view(1, 2, 1, 1, 1, 2)
    out = ms_deform_attn_sample(value, spatial_shapes, starts, locations, torch.ones(1, 2, 1, 1, 1))
    assert out.flatten().tolist() == [6.0, 0.0]


def test_op_gradcheck_float64():
    shapes = [(3, 4), (2, 2)]
    spatial_shapes, starts = level_layout(shapes)
    inputs = random_inputs(shapes, batch=1, queries=2, heads=2, dim=2, points=2, dtype=torch.float64,
                           seed=1)
    inputs = tuple(t.requires_grad_() for t in inputs)
    assert torch.autograd.gradcheck(
        lambda v, loc, w: ms_deform_attn_sample(v, spatial_shapes, starts, loc, w), inputs,
        eps=1e-6, atol=1e-5)


def test_initial_offsets_circle_scaled_by_point_index():
    offsets = initial_offsets(n_heads=8, n_levels=2, n_points=3)
    assert offsets.shape == (8, 2, 3, 2)
    assert torch.allclose(offsets[0, 1, 0], torch.tensor([1.0, 0.0]))
    assert torch.allclose(offsets[1, 0, 0], torch.tensor([1.0, 1.0]))  # 45 deg, on the unit square
    assert torch.allclose(offsets[2, 0, 2], torch.tensor([0.0, 3.0]), atol=1e-6)
    module = MSDeformAttn(d_model=16, n_levels=2, n_heads=8, n_points=3)
    assert torch.equal(module.sampling_offsets.bias, offsets.flatten())
    assert not module.sampling_offsets.weight.any() and not module.attention_weights.weight.any()


def test_offsets_are_pixels_of_each_level():
    spatial_shapes = torch.tensor([(4, 8), (2, 2)])  # (H, W)
    refs = torch.tensor([0.5, 0.25]).view(1, 1, 2)
    offsets = torch.tensor([1.0, 2.0]).expand(1, 1, 1, 2, 1, 2)  # 1 px right, 2 px down
    locations = MSDeformAttn.sampling_locations(refs, offsets, spatial_shapes)
    assert locations.shape == (1, 1, 1, 2, 1, 2)
    assert torch.allclose(locations[0, 0, 0, :, 0], torch.tensor([[0.5 + 1 / 8, 0.25 + 2 / 4],
                                                                  [0.5 + 1 / 2, 0.25 + 2 / 2]]))


def make_module_inputs(shapes, batch=2, queries=5, channels=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    tokens = sum(h * w for h, w in shapes)
    query = torch.randn(batch, queries, channels, generator=gen)
    reference_points = torch.rand(batch, queries, len(shapes), 2, generator=gen)
    input_flatten = torch.randn(batch, tokens, channels, generator=gen)
    return query, reference_points, input_flatten


def randomise_query_layers(module: MSDeformAttn) -> None:
    """Non-zero offset and weight layers (zero at init), so that each query moves its points."""
    with torch.no_grad():
        module.sampling_offsets.weight.normal_(0, 0.5)
        module.attention_weights.weight.normal_(0, 0.5)


def test_module_shape_and_shared_reference_points():
    torch.manual_seed(0)
    spatial_shapes, starts = level_layout(SHAPES)
    module = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=2)
    randomise_query_layers(module)
    query, refs, flat = make_module_inputs(SHAPES)
    out = module(query, refs, flat, spatial_shapes, starts)
    assert out.shape == (2, 5, 16)
    # a (B, Q, 2) reference point means the same point on every level
    same = module(query, refs[:, :, 0], flat, spatial_shapes, starts)
    expanded = module(query, refs[:, :, :1].expand(-1, -1, 3, -1), flat, spatial_shapes, starts)
    assert torch.allclose(same, expanded)


def test_padding_mask_is_respected():
    torch.manual_seed(0)
    spatial_shapes, starts = level_layout(SHAPES)
    module = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=2)
    randomise_query_layers(module)
    query, refs, flat = make_module_inputs(SHAPES)
    mask = torch.zeros(flat.shape[:2], dtype=torch.bool)
    mask[0, 10:30] = True
    mask[1, -4:] = True
    out = module(query, refs, flat, spatial_shapes, starts, mask)
    changed = flat.clone()
    changed[mask] += 100.0
    assert torch.allclose(module(query, refs, changed, spatial_shapes, starts, mask), out)
    # ...whereas without the mask those tokens are read
    assert not torch.allclose(module(query, refs, changed, spatial_shapes, starts), out)


def test_zero_offsets_one_level_one_point_is_bilinear_sampling():
    shapes = [(4, 6)]
    spatial_shapes, starts = level_layout(shapes)
    module = MSDeformAttn(d_model=8, n_levels=1, n_heads=2, n_points=1)
    with torch.no_grad():
        module.sampling_offsets.bias.zero_()
        for proj in (module.value_proj, module.output_proj):  # identity, so output = sampled input
            proj.weight.copy_(torch.eye(8))
            proj.bias.zero_()
    query, refs, flat = make_module_inputs(shapes, batch=2, queries=6, channels=8)
    out = module(query, refs, flat, spatial_shapes, starts)
    value_map = flat.view(2, 4, 6, 8)
    for b in range(2):
        for q in range(6):
            x, y = refs[b, q, 0].tolist()
            assert torch.allclose(out[b, q], bilinear_literal(value_map[b], x, y), atol=1e-6)
    # at a pixel centre the output is that pixel's input
    centre = torch.tensor([3.5 / 6, 2.5 / 4]).expand(2, 1, 1, 2)
    at_centre = module(query[:, :1], centre, flat, spatial_shapes, starts)
    assert torch.allclose(at_centre[:, 0], value_map[:, 2, 3])


def test_bad_inputs_raise_clear_errors():
    spatial_shapes, starts = level_layout(SHAPES)
    module = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=2)
    query, refs, flat = make_module_inputs(SHAPES)
    with pytest.raises(InputError, match="cover"):
        module(query, refs, flat[:, :-1], spatial_shapes, starts)
    with pytest.raises(InputError, match="level_start_index"):
        module(query, refs, flat, spatial_shapes, starts + 1)
    with pytest.raises(InputError, match="reference_points"):
        module(query, refs[:, :, :2], flat, spatial_shapes, starts)
    with pytest.raises(InputError, match="padding_mask"):
        module(query, refs, flat, spatial_shapes, starts, torch.zeros(2, 3, dtype=torch.bool))
    value, locations, weights = random_inputs(SHAPES)
    with pytest.raises(InputError, match="attention_weights"):
        ms_deform_attn_sample(value, spatial_shapes, starts, locations, weights[:, :, :, :2])
    with pytest.raises(ConfigError, match="divisible"):
        MSDeformAttn(d_model=10, n_heads=4)
