import torch

from groundkit.models.panoptic.affinity import AffinityHead, apply_affinity
from groundkit.models.panoptic.semantic_head import FeatureDecoder


def literal_affinity(a0, a1, psi, normalize):
    """Eq. 4 as written, forming the N x N affinity: P = Psi + (phi0 phi1^T) Psi, row-major."""
    affinity = a0.T @ a1  # (N, N)
    if normalize:
        affinity = affinity / psi.shape[1]
    return (psi.T + affinity @ psi.T).T


def test_right_to_left_equals_literal_formula():
    torch.manual_seed(0)
    a0, a1, psi = (torch.rand(c, 35, dtype=torch.float64) for c in (6, 6, 4))
    for normalize in (True, False):
        torch.testing.assert_close(apply_affinity(a0, a1, psi, normalize),
                                   literal_affinity(a0, a1, psi, normalize))


def test_head_matches_literal_and_has_gradients():
    torch.manual_seed(0)
    head = AffinityHead(FeatureDecoder(in_channels=8, channels=4, num_convs=1), channels=5).double()
    q = torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=True)
    psi = torch.rand(7, 3, 4, dtype=torch.float64, requires_grad=True)
    p = head(q, psi)
    assert p.shape == (7, 3, 4)
    a0 = torch.relu(head.phi0(q[None])[0].flatten(1))
    a1 = torch.relu(head.phi1(q[None])[0].flatten(1))
    torch.testing.assert_close(p.flatten(1), literal_affinity(a0, a1, psi.flatten(1), True))
    p.square().sum().backward()
    assert q.grad.abs().sum() > 0 and psi.grad.abs().sum() > 0
    assert head.phi0.weight.grad.abs().sum() > 0 and head.phi1.weight.grad.abs().sum() > 0


def test_features_shape():
    head = AffinityHead(FeatureDecoder(in_channels=8, channels=4, num_convs=2), channels=6)
    feats = {f"p{i}": torch.randn(2, 8, 32 >> (i - 2), 48 >> (i - 2)) for i in range(2, 6)}
    assert head.features(feats).shape == (2, 6, 32, 48)


def test_number_of_channels_is_dynamic():
    head = AffinityHead(FeatureDecoder(in_channels=8, channels=4, num_convs=1), channels=5)
    q = torch.randn(5, 6, 6)
    for k in (1, 3, 40):
        assert head(q, torch.rand(k, 6, 6)).shape == (k, 6, 6)


def test_softmax_activation_is_efficient_attention():
    """phi0 a softmax over channels, phi1 over pixels: P = Psi + a0^T (a1 Psi^T), no 1/N."""
    torch.manual_seed(0)
    head = AffinityHead(FeatureDecoder(in_channels=8, channels=4, num_convs=1), channels=5,
                        activation="softmax").double()
    q, psi = torch.randn(5, 3, 4, dtype=torch.float64), torch.rand(6, 3, 4, dtype=torch.float64)
    a0 = head.phi0(q[None])[0].flatten(1).softmax(0)
    a1 = head.phi1(q[None])[0].flatten(1).softmax(1)
    torch.testing.assert_close(head(q, psi).flatten(1), literal_affinity(a0, a1, psi.flatten(1), False))
    # each output is Psi plus a convex combination of weighted averages of Psi: bounded by max Psi
    assert (head(q, psi) - psi).max() <= psi.max()
