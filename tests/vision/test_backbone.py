import pytest
import torch

from groundkit.errors import ConfigError
from groundkit.vision.backbone import BackboneConfig, build_backbone, pad_to_multiple
from groundkit.vision.resnet import ResNet

TINY = dict(depth=18, base_width=8, fpn_channels=16, norm="gn")


def test_paper_defaults():
    cfg = BackboneConfig()
    assert (cfg.depth, cfg.base_width, cfg.fpn_channels, cfg.norm) == (101, 64, 256, "frozen_bn")


def test_odd_size_shapes_and_padding():
    model = build_backbone(BackboneConfig(**TINY))
    x = torch.randn(2, 3, 100, 132)
    out = model(x)
    for name, stride in model.strides.items():
        assert out[name].shape == (2, 16, -(-100 // stride), -(-132 // stride))
    padded = pad_to_multiple(x, 32)
    assert padded.shape == (2, 3, 128, 160)
    assert torch.equal(padded[..., :100, :132], x) and padded[..., 100:, :].abs().sum() == 0
    assert pad_to_multiple(padded, 32) is padded
    assert model(padded)["p5"].shape == (2, 16, 4, 5)


def test_gradients_flow_to_every_parameter():
    model = build_backbone(BackboneConfig(**TINY))
    out = model(torch.randn(2, 3, 64, 64))
    sum(v.mean() for v in out.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_freeze():
    model = build_backbone(BackboneConfig(**{**TINY, "norm": "bn"}, freeze=True))
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training and not model.body.bn1.training
    before = model.body.bn1.running_mean.clone()
    out = model(torch.randn(2, 3, 64, 64))
    assert not out["p2"].requires_grad
    assert torch.equal(before, model.body.bn1.running_mean)  # statistics untouched


def test_loads_trunk_and_whole_backbone_weights(tmp_path):
    torch.manual_seed(1)
    trunk = ResNet(18, base_width=8, norm="gn").state_dict()
    torch.save(trunk, tmp_path / "r18.pth")
    model = build_backbone(BackboneConfig(**TINY, weights=str(tmp_path / "r18.pth")))
    assert torch.equal(model.body.conv1.weight, trunk["conv1.weight"])

    from safetensors.torch import save_file
    save_file(model.state_dict(), str(tmp_path / "whole.safetensors"))
    again = build_backbone(BackboneConfig(**TINY, weights=str(tmp_path / "whole.safetensors")))
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_weights_of_another_depth_raise(tmp_path):
    torch.save(ResNet(34, base_width=8).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(ConfigError, match="missing|unexpected|shape"):
        build_backbone(BackboneConfig(**{**TINY, "depth": 50}, weights=str(tmp_path / "r34.pth")))


def test_bn_weights_into_gn_backbone_warn(tmp_path):
    torch.save(ResNet(18, base_width=8, norm="bn").state_dict(), tmp_path / "bn.pth")
    with pytest.warns(UserWarning, match="unused"):
        build_backbone(BackboneConfig(**TINY, weights=str(tmp_path / "bn.pth")))


@pytest.mark.parametrize("change", [{"fpn_channels": 0}, {"depth": 7}, {"norm": "nope"}])
def test_bad_config_raises(change):
    with pytest.raises(ConfigError):
        build_backbone(BackboneConfig(**{**TINY, **change}))


def test_backbone_starts_from_a_whole_checkpoint_frozen(tmp_path):
    """The papers' frozen panoptic-trained FPN: ``weights`` may name a groundkit checkpoint."""
    import torch

    from groundkit.engine.checkpoint import save_checkpoint
    from groundkit.vision.backbone import BackboneConfig, build_backbone

    cfg = BackboneConfig(depth=18, base_width=8, fpn_channels=16, norm="gn")
    donor = build_backbone(cfg)
    whole = {f"backbone.{k}": v for k, v in donor.state_dict().items()}
    whole["head.weight"] = torch.zeros(3)  # the rest of the donor model is ignored
    save_checkpoint(tmp_path / "donor", whole, {}, "panoptic")
    frozen = build_backbone(BackboneConfig(depth=18, base_width=8, fpn_channels=16, norm="gn",
                                           weights=str(tmp_path / "donor"), freeze=True))
    assert all(torch.equal(a, b) for a, b in zip(donor.state_dict().values(),
                                                 frozen.state_dict().values()))
    assert not any(p.requires_grad for p in frozen.parameters())
