import pytest
import torch
import torch.nn.functional as F

from groundkit.errors import ConfigError
from groundkit.vision.fpn import FPN

CHANNELS = {"c2": 4, "c3": 8, "c4": 16, "c5": 32}


def features(h, w):
    return {f"c{k}": torch.randn(1, CHANNELS[f"c{k}"], -(-h // 2**k), -(-w // 2**k)) for k in (2, 3, 4, 5)}


def test_shapes_at_odd_size():
    fpn = FPN(CHANNELS, out_channels=12)
    feats = features(100, 132)
    out = fpn(feats)
    assert list(out) == ["p2", "p3", "p4", "p5"]
    for k in (2, 3, 4, 5):
        assert out[f"p{k}"].shape == (1, 12, *feats[f"c{k}"].shape[-2:])


def test_top_down_sum_matches_hand_computation():
    fpn = FPN(CHANNELS, out_channels=6)
    feats = features(64, 64)
    lat = {k: fpn.lateral[k](feats[f"c{k}"]) for k in "2345"}
    m5 = lat["5"]
    m4 = lat["4"] + F.interpolate(m5, scale_factor=2, mode="nearest")
    m3 = lat["3"] + F.interpolate(m4, scale_factor=2, mode="nearest")
    out = fpn(feats)
    assert torch.allclose(out["p5"], fpn.output["5"](m5), atol=1e-6)
    assert torch.allclose(out["p3"], fpn.output["3"](m3), atol=1e-6)


def test_missing_level_raises():
    with pytest.raises(ConfigError, match="c5"):
        FPN({"c2": 4, "c3": 8, "c4": 16})
