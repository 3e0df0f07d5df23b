import pytest
import torch

from groundkit.models.panoptic.affinity import AffinityHead, ChunkedAffinity
from groundkit.models.panoptic.potential import box_cell_ranges, box_cells
from groundkit.models.panoptic.semantic_head import FeatureDecoder
from groundkit.vision.position import coordinate_channels


def literal_affinity(q, head, psi, inside=None, gain=1.0, scale="pixels"):
    """Eq. 4 as written, forming the N x N affinity (row-major, N x C), then the options.

    q: (C, N); psi: (K, N); inside: (K, N) 0/1 or None.
    """
    a0 = torch.relu(head.phi0.weight.flatten(1) @ q + head.phi0.bias[:, None]).T  # (N, C)
    a1 = torch.relu(head.phi1.weight.flatten(1) @ q + head.phi1.bias[:, None]).T
    affinity = a0 @ a1.T  # (N, N)
    term = (affinity @ psi.T).T  # (K, N)
    term = term / (q.shape[1] if scale == "pixels" else psi.sum(1, keepdim=True) + 1e-6)
    if inside is not None:
        term = term * inside
    return psi + gain * term


def _head(chunk=4096, **options):
    torch.manual_seed(0)
    return AffinityHead(FeatureDecoder(in_channels=8, channels=4, num_convs=1), channels=5,
                        chunk=chunk, **options).double()


@pytest.mark.parametrize("chunk", [1, 5, 7, 4096])
def test_chunked_equals_literal_formula(chunk):
    head = _head(chunk)
    q = torch.randn(5, 3, 4, dtype=torch.float64)
    psi = torch.rand(7, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(head(q, psi).flatten(1), literal_affinity(q.flatten(1), head, psi.flatten(1)))


def test_box_region_and_gate_match_literal():
    head = _head(chunk=5, region="box", gate=True)
    with torch.no_grad():
        head.gain.fill_(0.7)
    q = torch.randn(5, 3, 4, dtype=torch.float64)
    psi = torch.rand(3, 3, 4, dtype=torch.float64)
    boxes = torch.tensor([[0.0, 0.0, 6.0, 5.0], [5.0, 4.0, 16.0, 12.0]], dtype=torch.float64)
    cells = torch.cat([box_cell_ranges(boxes, (3, 4), 4), torch.tensor([[0, 3, 0, 4]])])
    inside = torch.cat([box_cells(boxes, (3, 4), 4), torch.ones(1, 3, 4, dtype=torch.float64)])
    expected = literal_affinity(q.flatten(1), head, psi.flatten(1), inside.flatten(1), 0.7)
    torch.testing.assert_close(head(q, psi, cells).flatten(1), expected)
    # outside its box a detection's channel is exactly its potential
    outside = inside[:2] == 0
    assert outside.any()
    torch.testing.assert_close(head(q, psi, cells)[:2][outside], psi[:2][outside])


def test_mass_scale_makes_the_term_independent_of_a_channel_area():
    """A channel's term is the Psi-weighted mean affinity over its region: spread the same values
    over twice the pixels and the term is unchanged (with the pixel count it would double)."""
    head = _head(scale="mass")
    q = torch.randn(5, 2, 4, dtype=torch.float64)
    q[:, 1] = q[:, 0]  # the bottom row repeats the top row
    small = torch.zeros(1, 2, 4, dtype=torch.float64)
    small[0, 0] = torch.rand(4, dtype=torch.float64)
    large = small.clone()
    large[0, 1] = small[0, 0]
    torch.testing.assert_close((head(q, small) - small)[0, 0], (head(q, large) - large)[0, 0])


def test_gate_starts_closed_so_p_equals_psi():
    head = _head(gate=True)
    q, psi = torch.randn(5, 3, 4, dtype=torch.float64), torch.rand(4, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(head(q, psi), psi)


@pytest.mark.parametrize("region,scale", [("image", "pixels"), ("box", "pixels"), ("box", "mass")])
def test_gradients_match_autograd_of_the_literal_formula(region, scale):
    head = _head(chunk=5, region=region, gate=True, scale=scale)
    with torch.no_grad():
        head.gain.fill_(1.3)
    q = torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=True)
    psi = torch.rand(3, 3, 4, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor([[0.0, 0.0, 6.0, 5.0], [5.0, 4.0, 16.0, 12.0]], dtype=torch.float64)
    cells = torch.cat([box_cell_ranges(boxes, (3, 4), 4), torch.tensor([[0, 3, 0, 4]])])
    weights = torch.randn(3, 3, 4, dtype=torch.float64)
    params = [q, psi, head.gain, head.phi0.weight, head.phi0.bias, head.phi1.weight, head.phi1.bias]

    (head(q, psi, cells) * weights).sum().backward()
    chunked = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    inside = (torch.cat([box_cells(boxes, (3, 4), 4), torch.ones(1, 3, 4, dtype=torch.float64)])
              .flatten(1) if region == "box" else None)
    literal = literal_affinity(q.flatten(1), head, psi.flatten(1), inside, head.gain, scale)
    (literal * weights.flatten(1)).sum().backward()
    for got, p in zip(chunked, params):
        torch.testing.assert_close(got, p.grad)


def test_gradcheck():
    torch.manual_seed(0)
    c, k, n = 3, 4, 10
    q = torch.randn(c, n, dtype=torch.float64, requires_grad=True)
    w0, w1 = (torch.randn(c, c, dtype=torch.float64, requires_grad=True) for _ in range(2))
    b0, b1 = (torch.randn(c, dtype=torch.float64, requires_grad=True) for _ in range(2))
    psi = torch.rand(k, n, dtype=torch.float64, requires_grad=True)
    gain = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    cells = torch.tensor([[0, 1, 1, 4], [0, 2, 0, 5], [1, 2, 2, 3], [0, 2, 0, 5]])
    for kind, scale in (("sigmoid", "pixels"), ("softplus", "mass"), ("sigmoid", None)):
        # smooth activations, so finite differences hold everywhere
        assert torch.autograd.gradcheck(
            lambda *t: ChunkedAffinity.apply(*t, cells, 5, kind, scale, 3),
            (q, w0, b0, w1, b1, psi, gain))


def test_features_shape_with_and_without_coordinates():
    for coords in (False, True):
        head = AffinityHead(FeatureDecoder(in_channels=8, channels=4, num_convs=2), channels=6,
                            coords=coords)
        feats = {f"p{i}": torch.randn(2, 8, 32 >> (i - 2), 48 >> (i - 2)) for i in range(2, 6)}
        assert head.features(feats).shape == (2, 6, 32, 48)


def test_coordinate_channels():
    grid = coordinate_channels(torch.zeros(2, 3, 4, 5))
    assert grid.shape == (2, 2, 4, 5)
    assert grid[0, 0, 0].tolist() == pytest.approx([-1, -0.5, 0, 0.5, 1])  # x along a row
    assert grid[0, 1, :, 0].tolist() == pytest.approx([-1, -1 / 3, 1 / 3, 1])  # y down a column


def test_number_of_channels_is_dynamic():
    head = AffinityHead(FeatureDecoder(in_channels=8, channels=4, num_convs=1), channels=5)
    q = torch.randn(5, 6, 6)
    for k in (1, 3, 40):
        assert head(q, torch.rand(k, 6, 6)).shape == (k, 6, 6)


def test_unknown_options_are_rejected():
    with pytest.raises(ValueError, match="activation"):
        _head(activation="softmax")
    with pytest.raises(ValueError, match="region"):
        _head(region="everywhere")
    with pytest.raises(ValueError, match="scale"):
        _head(scale="area")
