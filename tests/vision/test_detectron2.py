"""detectron2 / Caffe2 ``.pkl`` weights and torchvision ``.pth`` files into groundkit's backbone.

The detectron2 files here are built in the test from a tiny groundkit backbone with the inverse
of the name mapping, written independently of the converter (so one typo cannot hide in both).
"""
from __future__ import annotations

import os
import pickle
import tracemalloc
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from groundkit.errors import ConfigError, FormatError
from groundkit.vision.backbone import BackboneConfig, build_backbone
from groundkit.vision.detectron2 import (
    DETECTRON2_MSRA,
    GROUNDKIT_PIXELS,
    caffe2_name,
    detectron2_name,
    fold_pixel_format,
    load_detectron2_weights,
    read_detectron2_weights,
)

TINY = dict(depth=50, base_width=4, fpn_channels=8, norm="frozen_bn", stride_in_1x1=True)
HEAD = "sem_seg_head.predictor.weight"


def tiny_backbone(seed: int, **changes):
    """A ResNet-50 + FPN, 4 channels wide, every weight and BatchNorm statistic random."""
    torch.manual_seed(seed)
    model = build_backbone(BackboneConfig(**{**TINY, **changes}))
    with torch.no_grad():
        for name, t in model.state_dict().items():
            t.copy_(torch.rand_like(t) + 0.5 if "running_var" in name else torch.randn_like(t))
    return model.eval()


def d2_name(key: str) -> str:
    """groundkit -> detectron2 names (the inverse of the converter's mapping)."""
    if key.startswith("fpn."):
        _, kind, level, leaf = key.split(".")
        return f"backbone.fpn_{kind}{level}.{leaf}"
    parts = key.split(".")[1:]
    if parts[0] == "conv1":
        return "backbone.bottom_up.stem.conv1.weight"
    if parts[0] == "bn1":
        return f"backbone.bottom_up.stem.conv1.norm.{parts[1]}"
    layer, index, module, *rest = parts
    stage = f"res{int(layer[len('layer'):]) + 1}"
    if module == "downsample":
        conv, norm, leaf = "shortcut", rest[0] == "1", rest[1]
    else:
        conv, norm, leaf = module.replace("bn", "conv"), module.startswith("bn"), rest[0]
    return f"backbone.bottom_up.{stage}.{index}.{conv}.{'norm.' if norm else ''}{leaf}"


def c2_name(key: str) -> str:
    """groundkit trunk -> Caffe2 blob names, e.g. ``res2_0_branch2a_bn_s``."""
    leaf = {"weight": "w", "bias": "b"}
    parts = key.split(".")[1:]
    if parts[0] == "conv1":
        return "conv1_w"
    if parts[0] == "bn1":
        return "res_conv1_bn_s" if parts[1] == "weight" else "res_conv1_bn_b"
    layer, index, module, *rest = parts
    stage = int(layer[len("layer"):]) + 1
    if module == "downsample":
        branch, is_norm, name = "1", rest[0] == "1", rest[1]
    else:
        branch, is_norm, name = "2" + "abc"[int(module[-1]) - 1], module.startswith("bn"), rest[0]
    suffix = ("bn_s" if name == "weight" else "bn_b") if is_norm else leaf[name]
    return f"res{stage}_{index}_branch{branch}_{suffix}"


def write_model_final(path, model, protocol=2, unfold=None, drop=()):
    """A detectron2 ``model_final`` pickle of ``model`` (plus one head entry); ``unfold``: write
    conv1 as a network taking that pixel format would hold it."""
    arrays = {}
    for key, t in model.state_dict().items():
        if any(key.startswith(d) for d in drop):
            continue
        value = t.numpy().copy()
        if key == "body.conv1.weight" and unfold is not None:
            value = unfold_conv1(value, unfold)
        arrays[d2_name(key)] = value
    arrays[HEAD] = np.ones((3, 8, 1, 1), np.float32)
    with open(path, "wb") as f:
        pickle.dump({"model": arrays, "__author__": "groundkit test"}, f, protocol=protocol)


def unfold_conv1(weight: np.ndarray, pixels) -> np.ndarray:
    """Groundkit conv1 -> the conv1 that gives the same output on input in ``pixels``."""
    out = np.empty_like(weight)
    for c in range(3):
        k = 2 - c if pixels.bgr else c
        out[:, k] = weight[:, c] * pixels.std[k] / GROUNDKIT_PIXELS.std[c]
    return out


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# --- names ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("d2, ours", [
    ("backbone.bottom_up.stem.conv1.weight", "body.conv1.weight"),
    ("backbone.bottom_up.stem.conv1.norm.running_var", "body.bn1.running_var"),
    ("backbone.bottom_up.res2.0.conv1.weight", "body.layer1.0.conv1.weight"),
    ("backbone.bottom_up.res5.2.conv3.norm.bias", "body.layer4.2.bn3.bias"),
    ("backbone.bottom_up.res3.0.shortcut.weight", "body.layer2.0.downsample.0.weight"),
    ("backbone.bottom_up.res4.0.shortcut.norm.running_mean", "body.layer3.0.downsample.1.running_mean"),
    ("backbone.fpn_lateral2.weight", "fpn.lateral.2.weight"),
    ("backbone.fpn_output5.bias", "fpn.output.5.bias"),
    ("sem_seg_head.predictor.weight", None),
    ("roi_heads.box_head.fc1.weight", None),
])
def test_detectron2_names(d2, ours):
    assert detectron2_name(d2) == ours


@pytest.mark.parametrize("c2, ours", [
    ("conv1_w", "body.conv1.weight"),
    ("res_conv1_bn_s", "body.bn1.weight"),
    ("res2_0_branch2a_w", "body.layer1.0.conv1.weight"),
    ("res4_22_branch2c_bn_b", "body.layer3.22.bn3.bias"),
    ("res3_0_branch1_w", "body.layer2.0.downsample.0.weight"),
    ("res3_0_branch1_bn_s", "body.layer2.0.downsample.1.weight"),
    ("fpn_inner_res5_2_sum_w", "fpn.lateral.5.weight"),
    ("fpn_inner_res2_2_sum_lateral_b", "fpn.lateral.2.bias"),
    ("fpn_res3_3_sum_w", "fpn.output.3.weight"),
    ("fc1000_w", ""),
    ("conv_rpn_fpn2_w", None),
])
def test_caffe2_names(c2, ours):
    assert caffe2_name(c2) == ours


# --- model_final round trip ----------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 4])
def test_model_final_round_trip_is_exact(tmp_path, protocol):
    original = tiny_backbone(0)
    write_model_final(tmp_path / "model_final_test.pkl", original, protocol)
    loaded = tiny_backbone(1)
    report = load_detectron2_weights(loaded, tmp_path / "model_final_test.pkl", pixels=None)
    assert report.ok and report.missing == [] and report.unexpected == [HEAD]
    assert_same_state(loaded, original)
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out, expected = loaded(images), original(images)
    assert all(torch.equal(out[k], expected[k]) for k in expected)


def test_fpn_levels_keep_their_orientation(tmp_path):
    """``fpn_lateral2`` reads res2 (the widest-resolution, narrowest stage): shapes say so."""
    original = tiny_backbone(0)
    write_model_final(tmp_path / "m.pkl", original)
    state = read_detectron2_weights(tmp_path / "m.pkl", pixels=None)
    assert state["fpn.lateral.2.weight"].shape[1] == original.body.out_channels["c2"] == 16
    assert state["fpn.lateral.5.weight"].shape[1] == original.body.out_channels["c5"] == 128


def test_config_key_loads_a_model_final_with_detectron2_pixels(tmp_path):
    """``model.backbone.weights=model_final_*.pkl``: conv1 is refolded from BGR 0-255 input, so the
    converted backbone gives the original's features on groundkit's normalised input."""
    original = tiny_backbone(0)
    path = tmp_path / "model_final_cafc3f.pkl"
    write_model_final(path, original, unfold=DETECTRON2_MSRA)
    with pytest.warns(UserWarning, match=r"1 entries unused, e\.g\. sem_seg_head"):
        loaded = build_backbone(BackboneConfig(**TINY, weights=str(path))).eval()
    torch.testing.assert_close(loaded.body.conv1.weight, original.body.conv1.weight,
                               rtol=1e-6, atol=1e-6)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out, expected = loaded(images), original(images)
    for k in expected:  # random weights make large values: compare relative to the largest
        scale = expected[k].abs().max()
        torch.testing.assert_close(out[k] / scale, expected[k] / scale, rtol=1e-4, atol=1e-5)


def test_pkl_into_torchvision_stride_layout_warns(tmp_path):
    write_model_final(tmp_path / "m.pkl", tiny_backbone(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_backbone(BackboneConfig(**{**TINY, "stride_in_1x1": False},
                                      weights=str(tmp_path / "m.pkl")))
    assert any("stride_in_1x1=true" in str(w.message) for w in caught)


def test_stride_in_1x1_moves_the_stride_not_the_weights():
    torch.manual_seed(0)
    msra = build_backbone(BackboneConfig(**TINY)).eval()
    tv = build_backbone(BackboneConfig(**{**TINY, "stride_in_1x1": False})).eval()
    tv.load_state_dict(msra.state_dict())
    assert msra.body.layer2[0].conv1.stride == (2, 2) and msra.body.layer2[0].conv2.stride == (1, 1)
    assert tv.body.layer2[0].conv1.stride == (1, 1) and tv.body.layer2[0].conv2.stride == (2, 2)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = msra(images), tv(images)
    assert all(a[k].shape == b[k].shape for k in a) and not torch.allclose(a["p5"], b["p5"])


def test_report_lists_missing_and_unexpected(tmp_path):
    write_model_final(tmp_path / "m.pkl", tiny_backbone(0), drop=("fpn.output.",))
    report = load_detectron2_weights(tiny_backbone(1), tmp_path / "m.pkl")
    assert sorted(report.missing) == sorted(f"fpn.output.{lv}.{leaf}" for lv in "2345"
                                            for leaf in ("weight", "bias"))
    assert report.unexpected == [HEAD] and not report.ok
    with pytest.raises(ConfigError, match=r"m\.pkl: do not fit .* 8 missing"):
        build_backbone(BackboneConfig(**TINY, weights=str(tmp_path / "m.pkl")))


def test_wrong_depth_is_a_shape_mismatch(tmp_path):
    write_model_final(tmp_path / "m.pkl", tiny_backbone(0))
    report = load_detectron2_weights(tiny_backbone(1, base_width=8), tmp_path / "m.pkl")
    assert report.shape_mismatch and not report.ok


# --- Caffe2 (MSRA ImageNet) blobs ------------------------------------------------------------------

def test_caffe2_imagenet_blobs_load_into_the_trunk(tmp_path):
    original = tiny_backbone(0)
    with torch.no_grad():  # Caffe2 ImageNet files hold the affine only: statistics are identity
        for name, t in original.body.state_dict().items():
            if "running_mean" in name:
                t.zero_()
            elif "running_var" in name:
                t.fill_(1 - 1e-5)
    blobs = {"fc1000_w": np.ones((10, 128), np.float32), "fc1000_b": np.ones(10, np.float32)}
    for key, t in original.state_dict().items():
        if key.startswith("body.") and "running" not in key:
            blobs[c2_name(key)] = t.numpy().copy()
    (tmp_path / "R-50.pkl").write_bytes(pickle.dumps({"blobs": blobs}, protocol=2))
    loaded = tiny_backbone(1)
    report = load_detectron2_weights(loaded, tmp_path / "R-50.pkl", pixels=None)
    assert report.ok and report.unexpected == [] and report.missing == []
    assert_same_state(loaded.body, original.body)
    with torch.no_grad():  # the FPN keeps its own weights: only the trunk came from the file
        assert not torch.equal(loaded.fpn.lateral["2"].weight, original.fpn.lateral["2"].weight)


# --- pixel format ------------------------------------------------------------------------------------

def test_fold_pixel_format_is_exact_on_images():
    torch.manual_seed(0)
    weight = torch.randn(5, 3, 7, 7)
    pixels = torch.randint(0, 256, (1, 3, 20, 20)).float()  # RGB 0-255
    ours = (pixels - torch.tensor(GROUNDKIT_PIXELS.mean)[:, None, None]) / torch.tensor(
        GROUNDKIT_PIXELS.std)[:, None, None]
    bgr = (pixels.flip(1) - torch.tensor(DETECTRON2_MSRA.mean)[:, None, None])
    expected = F.conv2d(bgr, weight, padding=3)
    out = F.conv2d(ours, fold_pixel_format(weight, DETECTRON2_MSRA), padding=3)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(fold_pixel_format(weight, GROUNDKIT_PIXELS), weight)


# --- torchvision .pth ----------------------------------------------------------------------------------

def test_torchvision_pth_through_the_config_key(tmp_path):
    """``model.backbone.weights=resnet50-....pth``: a torchvision trunk (``fc.*`` ignored)."""
    original = tiny_backbone(0, stride_in_1x1=False)
    state = {**original.body.state_dict(), "fc.weight": torch.ones(10, 128), "fc.bias": torch.ones(10)}
    torch.save(state, tmp_path / "resnet50-0676ba61.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = build_backbone(BackboneConfig(**{**TINY, "stride_in_1x1": False},
                                               weights=str(tmp_path / "resnet50-0676ba61.pth")))
    assert_same_state(loaded.body, original.body)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.eval().body(images)["c5"], original.body(images)["c5"])


# --- hostile and broken files ------------------------------------------------------------------------

class SystemPayload:
    """Unpickled by plain ``pickle``, this runs ``touch target`` in a shell."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


def test_reduce_payload_is_refused_and_runs_nothing(tmp_path):
    target = tmp_path / "pwned"
    data = {"model": {"backbone.fpn_lateral2.bias": SystemPayload(target)}, "__author__": "x"}
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(FormatError, match=r"evil\.pkl: refused to load: the detectron2 weight file "
                                          r"refers to the global '(posix|os|nt)\.system'"):
        load_detectron2_weights(tiny_backbone(0), tmp_path / "evil.pkl")
    assert not target.exists()


@pytest.mark.parametrize("global_name", [b"builtins\neval", b"posix\nsystem", b"__builtin__\neval"])
def test_global_of_eval_or_system_is_refused(tmp_path, global_name):
    target = tmp_path / "pwned"
    code = f"open({str(target)!r}, 'w')" if b"eval" in global_name else f"touch {target}"
    (tmp_path / "evil.pkl").write_bytes(b"c" + global_name + b"\n(V" + code.encode() + b"\ntR.")
    with pytest.raises(FormatError, match=r"evil\.pkl: refused to load"):
        build_backbone(BackboneConfig(**TINY, weights=str(tmp_path / "evil.pkl")))
    assert not target.exists()


def test_object_arrays_are_refused(tmp_path):
    data = {"model": {"x": np.array([1, "a"], dtype=object)}}
    (tmp_path / "obj.pkl").write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(FormatError, match=r"obj\.pkl: .*unsupported array type 'O8'"):
        read_detectron2_weights(tmp_path / "obj.pkl")


class HugeArray:
    """Pickles as numpy does, but ``_reconstruct`` and the state claim ``shape`` over 16 bytes."""

    def __init__(self, shape):
        self.shape = shape

    def __reduce__(self):
        return (np.ndarray.__reduce__(np.zeros(1))[0], (np.ndarray, self.shape, b"b"),
                (1, self.shape, np.dtype("f4"), False, b"\0" * 16))


@pytest.mark.parametrize("shape", [(2**28,), (10**12, 10**9), (2**62, 2**62)])
def test_huge_array_shape_is_refused_without_allocating(tmp_path, shape):
    (tmp_path / "huge.pkl").write_bytes(pickle.dumps({"model": {"w": HugeArray(shape)}}, 2))
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match=r"huge\.pkl: not a readable detectron2 weight file: "
                                              r"UnpicklingError: array of shape .* needs"):
            read_detectron2_weights(tmp_path / "huge.pkl")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20  # numpy traces its buffers: 1 GB would show


def test_length_field_beyond_the_file_is_refused_without_allocating(tmp_path):
    # BINBYTES8 claiming 1 TiB followed by 3 bytes
    (tmp_path / "claim.pkl").write_bytes(b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b"abc")
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match=r"claim\.pkl: not a readable detectron2 weight file"):
            read_detectron2_weights(tmp_path / "claim.pkl")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20


def test_ndarray_cannot_be_called_to_allocate(tmp_path):
    (tmp_path / "nd.pkl").write_bytes(b"cnumpy\nndarray\n(I4000000000\ntR.")
    with pytest.raises(FormatError, match=r"nd\.pkl: not a readable detectron2 weight file"):
        read_detectron2_weights(tmp_path / "nd.pkl")


def test_truncated_empty_and_foreign_files_name_the_file(tmp_path):
    write_model_final(tmp_path / "whole.pkl", tiny_backbone(0), protocol=4)
    data = (tmp_path / "whole.pkl").read_bytes()
    cases = {"cut.pkl": data[: len(data) // 2], "empty.pkl": b"", "text.pkl": b"not a pickle"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(FormatError, match=rf"{name}: not a readable detectron2 weight file"):
            read_detectron2_weights(tmp_path / name)
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(FormatError, match=r"list\.pkl: not a detectron2 weight file"):
        read_detectron2_weights(tmp_path / "list.pkl")
    (tmp_path / "mixed.pkl").write_bytes(pickle.dumps({"model": {"a": np.zeros(2), "b": "text"}}))
    with pytest.raises(FormatError, match=r"mixed\.pkl: entry 'b': expected every entry"):
        read_detectron2_weights(tmp_path / "mixed.pkl")
    with pytest.raises(FormatError, match=r"missing\.pkl: file not found"):
        read_detectron2_weights(tmp_path / "missing.pkl")
