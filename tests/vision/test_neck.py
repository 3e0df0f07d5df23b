import pytest
import torch
from torch import nn

from groundkit.errors import ConfigError
from groundkit.vision.neck import SemanticFPNNeck


def pyramid(c, h, w, fill=None):
    sizes = {k: (-(-h // 2**k), -(-w // 2**k)) for k in (2, 3, 4, 5)}
    make = (lambda s: torch.full((2, c, *s), fill)) if fill is not None else (lambda s: torch.randn(2, c, *s))
    return {f"p{k}": make(s) for k, s in sizes.items()}


@pytest.mark.parametrize("h,w", [(64, 96), (100, 132)])
def test_output_is_stride_8(h, w):
    neck = SemanticFPNNeck(in_channels=16, channels=24, out_channels=20)
    out = neck(pyramid(16, h, w))
    assert out.shape == (2, 20, -(-h // 8), -(-w // 8))


@pytest.mark.parametrize("h,w", [(64, 96), (100, 132)])
def test_stride_4_output_is_on_the_p2_grid(h, w):
    neck = SemanticFPNNeck(in_channels=16, channels=24, stride=4)
    features = pyramid(16, h, w)
    assert neck(features).shape == (2, 24, *features["p2"].shape[-2:])
    assert neck.branches["p2"][0][0].stride == (1, 1)


def test_stride_4_upsamples_after_every_conv(monkeypatch):
    """Panoptic FPN's layout: P3 conv-up; P4 (conv-up) x 2; P5 (conv-up) x 3, ending on P2's grid."""
    import groundkit.vision.neck as module
    neck = SemanticFPNNeck(in_channels=8, channels=8, stride=4)
    calls, interpolate = [], module.F.interpolate
    monkeypatch.setattr(
        module.F, "interpolate",
        lambda x, size, mode: calls.append(tuple(size)) or interpolate(x, size=size, mode=mode))
    neck(pyramid(8, 64, 64))
    assert calls == [(16, 16), (8, 8), (16, 16), (4, 4), (8, 8), (16, 16)]


def test_output_width_defaults_to_branch_width():
    assert SemanticFPNNeck(in_channels=16, channels=24).out_channels == 24


def test_structure_follows_ppmn():
    neck = SemanticFPNNeck(in_channels=256, channels=256, out_channels=256)
    convs = {k: len(v) for k, v in neck.branches.items()}
    assert convs == {"p2": 1, "p3": 1, "p4": 2, "p5": 3}
    assert neck.branches["p2"][0][0].stride == (2, 2)
    for block in (b for branch in neck.branches.values() for b in branch):
        conv, norm, act = block
        assert conv.kernel_size == (3, 3) and norm.num_groups == 32 and isinstance(act, nn.ReLU)
    assert isinstance(neck.head[0], nn.Conv2d) and neck.head[0].kernel_size == (1, 1)
    assert neck.position.num_pos_feats == 128 and neck.position.normalize


def test_positional_code_reaches_output():
    # Constant inputs: only the code added to P5 can make the output vary over space.
    neck = SemanticFPNNeck(in_channels=8, channels=8, out_channels=4).eval()
    out = neck(pyramid(8, 64, 64, fill=0.5))
    assert out[0].std(dim=(1, 2)).max() > 1e-3


def test_gradients_reach_every_parameter():
    neck = SemanticFPNNeck(in_channels=8, channels=8, out_channels=4, head_norm=True)
    feats = {k: v.requires_grad_() for k, v in pyramid(8, 64, 64).items()}
    neck(feats).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in neck.parameters())
    assert all(f.grad.abs().sum() > 0 for f in feats.values())


def test_position_width_must_match_channels():
    with pytest.raises(ConfigError, match="num_pos_feats"):
        SemanticFPNNeck(in_channels=16, num_pos_feats=4)
