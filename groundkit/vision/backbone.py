"""ResNet + FPN backbone shared by every model, its config, builder and input padding helper."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from groundkit.errors import ConfigError
from groundkit.vision.detectron2 import load_detectron2_weights
from groundkit.vision.fpn import FPN
from groundkit.vision.resnet import (
    LoadReport,
    ResNet,
    load_resnet_weights,
    load_weights,
    read_state_dict,
)


@dataclass
class BackboneConfig:
    """Backbone settings; the defaults are the papers' (ResNet-101 + 256-channel FPN, frozen BN).

    weights: a torchvision-layout ResNet file (``conv1.weight``, ``layer1.0...``) loaded into the
    trunk, or a groundkit ``ResNetFPN`` state dict (keys ``body.*`` and ``fpn.*``) loaded whole.
    A detectron2 weight file (``.pkl``: ``model_final_*.pkl`` or an MSRA ``R-101.pkl``) is converted
    to these names (:mod:`groundkit.vision.detectron2`); docs/weights.md lists what loads.
    freeze: no gradients and eval mode for the whole backbone (PPMN/DRMN freeze ResNet and FPN).
    stride_in_1x1: bottleneck stride on the 1x1 conv, as the MSRA-initialised detectron2 models
    (e.g. ``panoptic_fpn_R_101_3x``) need; False is torchvision's layout.
    """

    depth: int = 101
    base_width: int = 64
    fpn_channels: int = 256
    norm: str = "frozen_bn"
    weights: str | None = None
    freeze: bool = False
    stride_in_1x1: bool = False


class ResNetFPN(nn.Module):
    """Images -> pyramid ``p2..p5`` (strides 4, 8, 16, 32), all ``out_channels`` wide.

    Attributes:
        body: the ResNet trunk; fpn: the FPN; out_channels: pyramid width;
        strides: ``{"p2": 4, ..., "p5": 32}``; frozen: whether ``freeze()`` was called.
    """

    def __init__(self, body: ResNet, fpn: FPN) -> None:
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.out_channels = fpn.out_channels
        self.strides = dict(fpn.strides)
        self.frozen = False

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """images: (B, 3, H, W) normalised -> {"p2": (B, C, ceil(H/4), ceil(W/4)), ..., "p5"}.

        Any H, W work; pad with :func:`pad_to_multiple` (32) when exact strides matter, e.g. to
        batch images of different sizes or to map stride-8 cells back to pixels by multiplication.
        """
        return self.fpn(self.body(images))

    def freeze(self) -> "ResNetFPN":
        """Stop gradients to every parameter and keep the module in eval mode from now on."""
        for p in self.parameters():
            p.requires_grad_(False)
        self.frozen = True
        return self.train(False)

    def train(self, mode: bool = True) -> "ResNetFPN":
        # A frozen backbone must not update BatchNorm statistics when the model around it trains.
        return super().train(mode and not self.frozen)


def pad_to_multiple(images: Tensor, multiple: int = 32, value: float = 0.0) -> Tensor:
    """images: (B, C, H, W) -> (B, C, H', W') zero-padded at the bottom and right so that H' and W'
    are the smallest multiples of ``multiple`` >= H, W (the input is returned when already so)."""
    h, w = images.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h == 0 and pad_w == 0:
        return images
    return F.pad(images, (0, pad_w, 0, pad_h), value=value)


def build_backbone(cfg: BackboneConfig) -> ResNetFPN:
    """Build a ``ResNetFPN`` from ``cfg``; load ``cfg.weights`` when given; freeze when asked.

    Raises ConfigError when the weight file misses keys or has wrong shapes for this config; keys
    the model has no place for only warn (e.g. BatchNorm statistics into a GroupNorm model).
    """
    if not isinstance(cfg.fpn_channels, int) or cfg.fpn_channels < 1:
        raise ConfigError(f"backbone fpn_channels: expected a positive integer, got {cfg.fpn_channels!r}")
    body = ResNet(cfg.depth, base_width=cfg.base_width, norm=cfg.norm,
                  stride_in_1x1=cfg.stride_in_1x1)
    model = ResNetFPN(body, FPN(body.out_channels, cfg.fpn_channels))
    if cfg.weights:
        _load_backbone_weights(model, cfg.weights)
    if cfg.freeze:
        model.freeze()
    return model


def _load_backbone_weights(model: ResNetFPN, path: str) -> None:
    """A torchvision ResNet file, a ResNetFPN state dict, a whole groundkit checkpoint (its
    ``backbone.*`` entries: e.g. the bundled ``panoptic-synthetic``, as the papers start from a
    panoptic-trained FPN), or a detectron2 / Caffe2 ``.pkl`` (converted, docs/weights.md)."""
    from groundkit.hub import resolve_weights_file

    file = resolve_weights_file(path)
    if file.suffix == ".pkl":
        report = load_detectron2_weights(model, file)
        _warn_stride_layout(model, path)
    else:
        report = _load_state_dict_file(model, file)
    if not report.ok:
        raise ConfigError(f"backbone weights {path}: do not fit this backbone config: {report}")
    if report.unexpected:
        warnings.warn(f"backbone weights {path}: {len(report.unexpected)} entries unused, e.g. "
                      f"{report.unexpected[0]}", stacklevel=3)


def _load_state_dict_file(model: ResNetFPN, file: Path) -> LoadReport:
    """A safetensors / PyTorch file: a trunk (torchvision names) or a whole backbone."""
    state = read_state_dict(file)
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    whole = any(k.startswith("fpn.") for k in state)
    return load_weights(model, state) if whole else load_resnet_weights(model.body, state)


def _warn_stride_layout(model: ResNetFPN, path: str) -> None:
    """detectron2's MSRA-initialised ResNets stride the bottleneck's 1x1 conv: the same weights in
    torchvision's layout load without a shape error and compute other features."""
    if model.body.depth >= 50 and not model.body.stride_in_1x1:
        warnings.warn(f"backbone weights {path}: a detectron2 file loaded with "
                      f"backbone.stride_in_1x1=false; detectron2's MSRA-initialised models (R-50 / "
                      f"R-101 FPN, panoptic_fpn_R_101_3x) need stride_in_1x1=true",
                      stacklevel=4)
