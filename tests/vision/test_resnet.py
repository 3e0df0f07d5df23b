import pytest
import torch

from groundkit.errors import ConfigError, FormatError
from groundkit.vision.resnet import (
    FrozenBatchNorm2d,
    ResNet,
    load_resnet_weights,
    num_groups,
    read_state_dict,
)

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_keys(blocks, convs_per_block):
    """torchvision's ResNet state_dict keys without fc, written from its published layout."""
    keys = ["conv1.weight"] + [f"bn1.{s}" for s in BN]
    for stage, count in enumerate(blocks, start=1):
        for b in range(count):
            p = f"layer{stage}.{b}"
            for c in range(1, convs_per_block + 1):
                keys += [f"{p}.conv{c}.weight"] + [f"{p}.bn{c}.{s}" for s in BN]
            # Bottleneck stages all project at block 0; BasicBlock stage 1 keeps its width.
            if b == 0 and (stage > 1 or convs_per_block == 3):
                keys += [f"{p}.downsample.0.weight"] + [f"{p}.downsample.1.{s}" for s in BN]
    return set(keys)


# (key, shape) pairs of torchvision's resnet18 / resnet50.
R18_SHAPES = {
    "conv1.weight": (64, 3, 7, 7),
    "bn1.running_var": (64,),
    "layer1.0.conv1.weight": (64, 64, 3, 3),
    "layer2.0.conv1.weight": (128, 64, 3, 3),
    "layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "layer3.1.conv2.weight": (256, 256, 3, 3),
    "layer4.0.downsample.1.weight": (512,),
    "layer4.1.bn2.bias": (512,),
}
R50_SHAPES = {
    "conv1.weight": (64, 3, 7, 7),
    "layer1.0.conv1.weight": (64, 64, 1, 1),
    "layer1.0.conv2.weight": (64, 64, 3, 3),
    "layer1.0.conv3.weight": (256, 64, 1, 1),
    "layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "layer2.0.conv1.weight": (128, 256, 1, 1),
    "layer2.0.conv2.weight": (128, 128, 3, 3),
    "layer2.0.downsample.0.weight": (512, 256, 1, 1),
    "layer3.5.conv3.weight": (1024, 256, 1, 1),
    "layer4.0.downsample.0.weight": (2048, 1024, 1, 1),
    "layer4.2.bn3.running_mean": (2048,),
}


@pytest.mark.parametrize("depth,blocks,convs,shapes,n_params", [
    (18, (2, 2, 2, 2), 2, R18_SHAPES, 11_689_512 - 513_000),     # torchvision count minus fc
    (50, (3, 4, 6, 3), 3, R50_SHAPES, 25_557_032 - 2_049_000),
])
def test_keys_and_shapes_match_torchvision(depth, blocks, convs, shapes, n_params):
    model = ResNet(depth, base_width=64, norm="bn")
    sd = model.state_dict()
    assert set(sd) == torchvision_keys(blocks, convs)
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert sum(p.numel() for p in model.parameters()) == n_params


def test_output_strides_and_channels():
    model = ResNet(50, base_width=8, norm="gn")
    out = model(torch.randn(1, 3, 64, 96))
    assert model.out_channels == {"c2": 32, "c3": 64, "c4": 128, "c5": 256}
    for name, stride in model.strides.items():
        assert out[name].shape == (1, model.out_channels[name], 64 // stride, 96 // stride)


def test_gn_keeps_torchvision_names():
    gn_keys = set(ResNet(18, base_width=8, norm="gn").state_dict())
    bn_keys = set(ResNet(18, base_width=8, norm="bn").state_dict())
    # GroupNorm has no running statistics; every other name is the same.
    assert gn_keys == {k for k in bn_keys if not k.endswith(("running_mean", "running_var",
                                                             "num_batches_tracked"))}


def test_num_groups_divides():
    assert num_groups(256) == 32
    assert num_groups(48) == 24
    assert num_groups(8) == 8
    assert num_groups(7) == 7
    assert num_groups(100) == 25


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_save_load_round_trip(tmp_path, suffix):
    torch.manual_seed(0)
    src = ResNet(18, base_width=8, norm="bn")
    with torch.no_grad():  # non-trivial statistics so that a failed load would show
        for m in src.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    sd = dict(src.state_dict())
    sd["fc.weight"], sd["fc.bias"] = torch.randn(10, 64), torch.randn(10)  # a classifier to ignore
    path = tmp_path / f"r18{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    dst = ResNet(18, base_width=8, norm="bn")
    report = load_resnet_weights(dst, path)
    assert report.ok and report.unexpected == []
    x = torch.randn(1, 3, 64, 64)
    src.eval(), dst.eval()
    assert torch.equal(src(x)["c5"], dst(x)["c5"])


def test_bn_weights_into_frozen_bn_give_same_output(tmp_path):
    torch.manual_seed(0)
    bn = ResNet(18, base_width=8, norm="bn")
    with torch.no_grad():
        for m in bn.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.weight.uniform_(0.5, 1.5)
    frozen = ResNet(18, base_width=8, norm="frozen_bn")
    report = load_resnet_weights(frozen, bn.state_dict())
    assert report.ok and report.unexpected == []  # step counters dropped silently
    # Frozen norms hold buffers only: the trainable parameters are the convolutions.
    assert all(p.dim() == 4 for p in frozen.parameters())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules())
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(bn.eval()(x)["c4"], frozen(x)["c4"], atol=1e-5)


def test_frozen_batch_norm_is_the_literal_formula_with_a_gradient_to_its_input():
    norm = FrozenBatchNorm2d(3, eps=1e-3)
    norm.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
    norm.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    norm.running_mean.copy_(torch.tensor([1.0, -1.0, 0.0]))
    norm.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
    x = torch.randn(2, 3, 5, 7, requires_grad=True)
    y = norm(x)
    for c in range(3):
        expected = ((x[:, c] - norm.running_mean[c]) / (norm.running_var[c] + 1e-3).sqrt()
                    * norm.weight[c] + norm.bias[c])
        assert torch.allclose(y[:, c], expected, atol=1e-6)
    y.sum().backward()
    slope = norm.weight / (norm.running_var + 1e-3).sqrt()
    assert torch.allclose(x.grad, slope[None, :, None, None].expand_as(x))
    assert norm(x.detach().contiguous(memory_format=torch.channels_last)).shape == x.shape


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("norm", ["bn", "gn", "frozen_bn"])
def test_residual_sum_in_place_keeps_gradients(depth, norm):
    # The blocks add the shortcut into the norm's output in place: every norm's backward must
    # still run and give the input a gradient (autograd refuses a modified saved tensor).
    torch.manual_seed(0)
    model = ResNet(depth, base_width=8, norm=norm).train()
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    sum(v.square().sum() for v in model(x).values()).backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


def test_report_lists_missing_unexpected_and_shape_mismatch(tmp_path):
    sd = dict(ResNet(18, base_width=8, norm="bn").state_dict())
    del sd["layer1.0.conv1.weight"]
    sd["extra.weight"] = torch.zeros(3)
    sd["conv1.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(sd, tmp_path / "w.pt")
    report = load_resnet_weights(ResNet(18, base_width=8, norm="bn"), tmp_path / "w.pt")
    assert report.missing == ["layer1.0.conv1.weight"]
    assert report.unexpected == ["extra.weight"]
    assert report.shape_mismatch == [("conv1.weight", (8, 3, 3, 3), (8, 3, 7, 7))]
    assert not report.ok and "1 missing" in str(report)


def test_bn_file_into_gn_model_reports_statistics_as_unexpected():
    sd = ResNet(18, base_width=8, norm="bn").state_dict()
    report = load_resnet_weights(ResNet(18, base_width=8, norm="gn"), sd)
    assert report.ok
    assert report.unexpected and all(k.endswith(("running_mean", "running_var"))
                                     for k in report.unexpected)


def test_wrapped_and_ddp_prefixed_checkpoints_unwrap(tmp_path):
    sd = ResNet(18, base_width=8).state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "c.pth")
    assert set(read_state_dict(tmp_path / "c.pth")) == set(sd)


class NotTensors:
    pass


@pytest.mark.parametrize("content,name", [
    ([1, 2, 3], "list.pt"),
    ({"a": 1}, "dict.pt"),
    ({"obj": NotTensors()}, "pickle.pt"),  # arbitrary objects are refused by weights_only
])
def test_not_a_state_dict_raises(tmp_path, content, name):
    torch.save(content, tmp_path / name)
    with pytest.raises(FormatError, match=name):
        read_state_dict(tmp_path / name)


def test_bad_files_raise(tmp_path):
    (tmp_path / "w.safetensors").write_text("not safetensors")
    (tmp_path / "w.npz").write_text("")
    for path in (tmp_path / "w.safetensors", tmp_path / "w.npz", tmp_path / "absent.pt"):
        with pytest.raises(FormatError, match=path.name):
            read_state_dict(path)


@pytest.mark.parametrize("kwargs", [{"depth": 42}, {"base_width": 0}, {"norm": "ln"}])
def test_bad_config_raises(kwargs):
    with pytest.raises(ConfigError):
        ResNet(**{"depth": 18, **kwargs})
