"""Shared losses against literal formulas."""
import itertools

import pytest
import torch

from groundkit.models.losses import discriminative_loss


def literal_discriminative(e, masks, dv, dd):
    """De Brabandere et al. (2017), Eq. 1, with hard masks, one pixel at a time."""
    means = [e[:, m].mean(1) for m in masks]
    var = sum(sum(max(0.0, float((mu - e[:, i, j]).norm()) - dv) ** 2
                  for i, j in zip(*torch.nonzero(m, as_tuple=True))) / int(m.sum())
              for mu, m in zip(means, masks)) / len(masks)
    pairs = list(itertools.permutations(range(len(masks)), 2))
    dist = sum(max(0.0, 2 * dd - float((means[a] - means[b]).norm())) ** 2 for a, b in pairs)
    return var, dist / len(pairs), sum(float(mu.norm()) for mu in means) / len(masks)


def test_discriminative_loss_matches_literal_formula():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(3, 5, 6, generator=g)
    labels = torch.randint(0, 3, (5, 6), generator=g)
    masks = torch.stack([labels == k for k in range(3)])
    got = discriminative_loss(e, masks.float(), delta_var=0.5, delta_dist=1.5, reg_weight=1.0)
    var, dist, reg = literal_discriminative(e, masks, 0.5, 1.5)
    assert got["var"].item() == pytest.approx(var, rel=1e-5)
    assert got["dist"].item() == pytest.approx(dist, rel=1e-5)
    assert got["reg"].item() == pytest.approx(reg, rel=1e-5)


def test_discriminative_loss_is_zero_for_tight_separated_clusters_and_ignores_empty_rows():
    e = torch.zeros(2, 2, 2)
    e[0, :, 1] = 4.0                                   # left column at (0, 0), right at (4, 0)
    masks = torch.zeros(3, 2, 2)
    masks[0, :, 0], masks[1, :, 1] = 1, 1              # segment 2 is empty (padding)
    got = discriminative_loss(e, masks, reg_weight=0.0)
    assert got["var"].item() == 0 and got["dist"].item() == 0


def test_discriminative_loss_gradients_are_finite_with_one_segment_or_none():
    e = torch.randn(4, 3, 3, requires_grad=True)
    for masks in (torch.ones(1, 3, 3), torch.zeros(2, 3, 3), torch.rand(3, 3, 3)):
        total = sum(discriminative_loss(e, masks).values())
        (grad,) = torch.autograd.grad(total, e)
        assert torch.isfinite(grad).all()
