"""detectron2 and Detectron (Caffe2) weight files -> groundkit's ResNet + FPN names.

The papers start from detectron2's ``panoptic_fpn_R_101_3x`` (``model_final_cafc3f.pkl``), a
pickle of ``{"model": {name: numpy array}, "__author__": ...}``; its ImageNet start is MSRA's
``R-101.pkl``, ``{"blobs": {caffe2 name: numpy array}}``. Both are read by the restricted unpickler
(:func:`groundkit._pickle.load_array_pickle`): numeric arrays and plain data load, anything else
is a FormatError that runs nothing.

Names (detectron2 -> groundkit; res2..res5 are layer1..layer4, FPN levels keep their numbers,
``fpn_lateral2`` reads ``res2`` as ``fpn.lateral.2`` reads ``c2``)::

    backbone.bottom_up.stem.conv1.weight          body.conv1.weight
    backbone.bottom_up.stem.conv1.norm.X          body.bn1.X
    backbone.bottom_up.res2.0.conv1.weight        body.layer1.0.conv1.weight
    backbone.bottom_up.res2.0.conv1.norm.X        body.layer1.0.bn1.X
    backbone.bottom_up.res2.0.shortcut.weight     body.layer1.0.downsample.0.weight
    backbone.bottom_up.res2.0.shortcut.norm.X     body.layer1.0.downsample.1.X
    backbone.fpn_lateral2.{weight,bias}           fpn.lateral.2.{weight,bias}
    backbone.fpn_output2.{weight,bias}            fpn.output.2.{weight,bias}

Caffe2 names (``blobs``): ``conv1_w``, ``res_conv1_bn_{s,b}``, ``res2_0_branch2{a,b,c}_{w,bn_s,bn_b}``,
``res2_0_branch1_*`` (the shortcut), ``fpn_inner_res2_2_sum_lateral_{w,b}``, ``fpn_res2_2_sum_{w,b}``.
Entries with no groundkit counterpart (heads, ``fc1000_*`` aside, which is dropped) keep their
file names, so a load report lists them as unexpected.

Two differences the names do not show:

- detectron2's MSRA networks take BGR pixels 0-255 minus a mean, groundkit RGB pixels normalised
  by ImageNet mean and std: :func:`fold_pixel_format` rewrites ``conv1`` so that the converted
  network computes the same features on groundkit's input (exact: the means agree, conv1 has no
  bias and pads with zeros, which both inputs map to the mean);
- they stride the 1x1 conv of a bottleneck: build the backbone with ``stride_in_1x1=True``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from groundkit._pickle import load_array_pickle
from groundkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from groundkit.errors import ConfigError, FormatError
from groundkit.vision.resnet import LoadReport, ResNet, load_weights


@dataclass(frozen=True)
class PixelFormat:
    """What a network's first conv expects: ``(pixel - mean) / std`` per channel, pixels 0-255,
    ``mean`` and ``std`` in the network's own channel order (B, G, R when ``bgr``)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool


DETECTRON2_MSRA = PixelFormat((103.530, 116.280, 123.675), (1.0, 1.0, 1.0), bgr=True)
"""detectron2's defaults (``MODEL.PIXEL_MEAN/STD``, ``INPUT.FORMAT: BGR``): every MSRA-initialised
model of its zoo, ``panoptic_fpn_R_101_3x`` included, and MSRA's ``R-50.pkl`` / ``R-101.pkl``."""

GROUNDKIT_PIXELS = PixelFormat(tuple(255 * m for m in IMAGENET_MEAN),
                               tuple(255 * s for s in IMAGENET_STD), bgr=False)
"""What groundkit's transforms give (:mod:`groundkit.data.transforms`): folding it changes nothing."""

_FROZEN_BN_EPS = 1e-5
_DROPPED = ""  # the name a classifier entry maps to: left out of the state dict, unreported

# --- names -----------------------------------------------------------------------------------------

_D2_STEM = re.compile(r"backbone\.bottom_up\.stem\.conv1\.(?:(norm)\.)?(\w+)")
_D2_BLOCK = re.compile(r"backbone\.bottom_up\.res([2-5])\.(\d+)\.(conv[123]|shortcut)\.(?:(norm)\.)?(\w+)")
_D2_FPN = re.compile(r"backbone\.fpn_(lateral|output)([2-5])\.(weight|bias)")

_C2_LEAF = {"w": "weight", "b": "bias", "bn_s": "weight", "bn_b": "bias", "bn_rm": "running_mean",
            "bn_riv": "running_var"}
_C2_STEM = re.compile(r"(conv1|res_conv1)_(w|bn_s|bn_b|bn_rm|bn_riv)")
_C2_BLOCK = re.compile(r"res([2-5])_(\d+)_branch(1|2a|2b|2c)_(w|bn_s|bn_b|bn_rm|bn_riv)")
_C2_FPN = re.compile(r"fpn_(inner_)?res([2-5])_\d+_sum(?:_lateral)?_(w|b)")
_C2_CLASSIFIER = re.compile(r"(fc1000|pred)_[wb]")
_C2_BRANCH = {"1": ("downsample.0", "downsample.1"), "2a": ("conv1", "bn1"),
              "2b": ("conv2", "bn2"), "2c": ("conv3", "bn3")}


def detectron2_name(name: str) -> str | None:
    """A detectron2 name -> groundkit's ``ResNetFPN`` name, or None when it has none."""
    if m := _D2_STEM.fullmatch(name):
        norm, leaf = m.groups()
        return f"body.{'bn1' if norm else 'conv1'}.{leaf}"
    if m := _D2_BLOCK.fullmatch(name):
        stage, index, part, norm, leaf = m.groups()
        if part == "shortcut":
            module = "downsample.1" if norm else "downsample.0"
        else:
            module = f"bn{part[-1]}" if norm else part
        return f"body.layer{int(stage) - 1}.{index}.{module}.{leaf}"
    if m := _D2_FPN.fullmatch(name):
        return f"fpn.{m[1]}.{m[2]}.{m[3]}"
    return None


def caffe2_name(name: str) -> str | None:
    """A Caffe2 (Detectron, MSRA ImageNet) blob name -> groundkit's name, ``""`` for the ImageNet
    classifier (dropped, as ``fc.*`` of a torchvision file), None when it has none."""
    if _C2_CLASSIFIER.fullmatch(name):
        return _DROPPED
    if m := _C2_STEM.fullmatch(name):
        module = "conv1" if m[2] == "w" else "bn1"
        return f"body.{module}.{_C2_LEAF[m[2]]}"
    if m := _C2_BLOCK.fullmatch(name):
        stage, index, branch, leaf = m.groups()
        conv, norm = _C2_BRANCH[branch]
        return f"body.layer{int(stage) - 1}.{index}.{conv if leaf == 'w' else norm}.{_C2_LEAF[leaf]}"
    if m := _C2_FPN.fullmatch(name):
        return f"fpn.{'lateral' if m[1] else 'output'}.{m[2]}.{_C2_LEAF[m[3]]}"
    return None


# --- reading ---------------------------------------------------------------------------------------

def read_detectron2_weights(path: str | Path,
                            pixels: PixelFormat | None = DETECTRON2_MSRA) -> dict[str, Tensor]:
    """Read a detectron2 ``.pkl`` (``{"model": ...}``) or a Caffe2 one (``{"blobs": ...}`` or a
    bare ``{name: array}``) into a state dict with groundkit ``ResNetFPN`` names (``body.*``,
    ``fpn.*``); other entries keep their names. ``conv1`` is refolded from ``pixels`` to
    groundkit's input (None: left as in the file). Caffe2 files carry no BatchNorm statistics:
    mean 0 and variance 1 - eps are filled in, so a frozen BN applies exactly the file's affine.
    """
    path = Path(path)
    arrays, rename = _arrays_of(load_array_pickle(path, what="detectron2 weight file"), path)
    state: dict[str, Tensor] = {}
    for name, array in arrays.items():
        new = rename(name)
        if new != _DROPPED:
            state[new or name] = _tensor(array, path, name)
    if rename is caffe2_name:
        _fill_identity_statistics(state)
    if pixels is not None and "body.conv1.weight" in state:
        state["body.conv1.weight"] = fold_pixel_format(state["body.conv1.weight"], pixels)
    return state


def _arrays_of(obj: Any, path: Path) -> tuple[dict[str, Any], Any]:
    """The name -> array mapping of an unpickled file and the function that renames its keys;
    detectron2 tells its own files apart the same way (``"model"`` + ``"__author__"``)."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        arrays, rename = obj["model"], detectron2_name
    elif isinstance(obj, dict) and isinstance(obj.get("blobs"), dict):
        arrays, rename = obj["blobs"], caffe2_name
    elif isinstance(obj, dict) and obj and all(isinstance(v, np.ndarray) for v in obj.values()):
        arrays, rename = obj, caffe2_name
    else:
        raise FormatError(path, "not a detectron2 weight file: expected a dict with 'model' "
                                "(detectron2) or 'blobs' (Caffe2 Detectron) mapping names to arrays")
    bad = [k for k, v in arrays.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
    if bad:
        raise FormatError(path, "expected every entry to be a numpy array under a string name",
                          item=f"entry {str(bad[0])[:80]!r}")
    return arrays, rename


def _tensor(array: np.ndarray, path: Path, name: str) -> Tensor:
    """A numpy array (any byte order) -> a CPU tensor that owns its memory."""
    try:
        native = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
        return torch.from_numpy(native.copy() if not native.flags.writeable else native)
    except TypeError as e:  # a dtype torch has no counterpart for (e.g. uint32 on old torch)
        raise FormatError(path, f"array type {array.dtype} is not supported ({e})", item=name) from None


def _fill_identity_statistics(state: dict[str, Tensor]) -> None:
    """Add mean 0 / variance 1 - eps beside each BatchNorm affine that has no statistics."""
    for key in [k for k in state if k.endswith(".weight") and _is_norm(k)]:
        base = key[: -len("weight")]
        channels = state[key].shape[0]
        state.setdefault(base + "running_mean", torch.zeros(channels))
        state.setdefault(base + "running_var", torch.full((channels,), 1 - _FROZEN_BN_EPS))


def _is_norm(key: str) -> bool:
    return ".bn" in key or ".downsample.1." in key


def fold_pixel_format(weight: Tensor, pixels: PixelFormat) -> Tensor:
    """The first conv's ``weight`` (O, 3, k, k) for input in ``pixels`` -> the weight giving the
    same output on groundkit's input (RGB, ImageNet mean/std).

    The same pixel P of groundkit channel c is ``x_g = (P - M_g[c]) / S_g[c]`` there and
    ``x_s = (P - M_s[k]) / S_s[k]`` in the source (k = c, or 2 - c for BGR): with equal means
    ``x_s = x_g * S_g[c] / S_s[k]``, so column c of the new weight is the source's column k times
    ``S_g[c] / S_s[k]``. Unequal means would need a bias the conv lacks: ConfigError.
    """
    if weight.ndim != 4 or weight.shape[1] != 3:
        raise ConfigError(f"conv1 weight of shape {tuple(weight.shape)}: expected 3 input channels")
    order = [2, 1, 0] if pixels.bgr else [0, 1, 2]   # source channel of each groundkit channel
    mean_s = [pixels.mean[k] for k in order]
    if any(abs(a - b) > 0.05 for a, b in zip(mean_s, GROUNDKIT_PIXELS.mean)):
        raise ConfigError(f"pixel mean {pixels.mean} is not ImageNet's (in 0-255): conv1 cannot be "
                          f"refolded exactly for groundkit's input")
    scale = torch.tensor([GROUNDKIT_PIXELS.std[c] / pixels.std[k] for c, k in enumerate(order)],
                         dtype=torch.float64)
    folded = weight.double()[:, order] * scale[None, :, None, None]
    return folded.to(weight.dtype)


# --- loading -------------------------------------------------------------------------------------

def load_detectron2_weights(model: nn.Module, path: str | Path,
                            pixels: PixelFormat | None = DETECTRON2_MSRA) -> LoadReport:
    """Load a detectron2 / Caffe2 ``.pkl`` into a groundkit ``ResNetFPN`` (or a bare ``ResNet``);
    report loaded-or-not per key as :func:`~groundkit.vision.resnet.load_weights` does.

    A file without FPN weights (an ImageNet ``R-101.pkl``) loads into the trunk only and the
    report covers the trunk: the FPN keeps its initialisation, as in detectron2's own training.
    """
    state = read_detectron2_weights(path, pixels)
    body = model if isinstance(model, ResNet) else getattr(model, "body", None)
    if body is None:
        raise ConfigError(f"{type(model).__name__}: expected a ResNet or a ResNet + FPN backbone")
    if body is model or not any(k.startswith("fpn.") for k in state):
        trunk = {k.removeprefix("body."): v for k, v in state.items()}
        return load_weights(body, trunk)
    return load_weights(model, state)
