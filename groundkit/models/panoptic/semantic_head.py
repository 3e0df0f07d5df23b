"""The semantic segmentation submodule (paper Sec. 3.2, Fig. H) and its feature decoder.

The decoder is UPSNet's semantic head with GroupNorm after every 3x3 convolution: one small conv
stack, shared across FPN levels, brings each of P2..P5 to ``channels`` maps; every level is upsampled
to the stride-4 grid and the four are concatenated. The paper uses deformable 3x3 convolutions; this
pure-PyTorch version uses plain ones. The same decoder architecture (its own weights) produces the
affinity features Q (Sec. 3.4.2), so both heads are "a decoder + a 1x1 projection".
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from groundkit.labels import IGNORE_LABEL
from groundkit.vision.neck import ConvGNReLU

LEVELS = ("p2", "p3", "p4", "p5")


class FeatureDecoder(nn.Module):
    """FPN levels -> one stride-4 map.

    forward: ``{"p2": (B, C_in, H/4, W/4), ..., "p5": (B, C_in, H/32, W/32)}`` ->
    ``(B, len(LEVELS) * channels, H/4, W/4)``.
    """

    def __init__(self, in_channels: int = 256, channels: int = 128, num_convs: int = 2) -> None:
        super().__init__()
        layers = [ConvGNReLU(in_channels if i == 0 else channels, channels) for i in range(num_convs)]
        self.convs = nn.Sequential(*layers)  # shared by all levels, as in UPSNet
        self.out_channels = len(LEVELS) * channels

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        size = features[LEVELS[0]].shape[-2:]
        maps = []
        for name in LEVELS:
            x = self.convs(features[name])
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            maps.append(x)
        return torch.cat(maps, dim=1)


class SemanticHead(nn.Module):
    """Semantic logits over ``num_classes`` (things first, then stuff) on the stride-4 grid.

    forward: FPN dict -> ``(B, num_classes, H/4, W/4)`` logits; V of the paper is their softmax.
    """

    def __init__(self, decoder: FeatureDecoder, num_classes: int) -> None:
        super().__init__()
        self.decoder = decoder
        self.classifier = nn.Conv2d(decoder.out_channels, num_classes, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.decoder(features))


def semantic_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_LABEL
                  ) -> torch.Tensor:
    """Cross-entropy of stride-4 logits against a full-resolution label map.

    logits: ``(B, L, h, w)``; target: ``(B, H, W)`` int64 with ``H = 4h`` (padded batch),
    ``ignore_index`` for void/padding. The target is sampled at the centre pixel of every stride-4 cell.
    """
    target = downsample_labels(target, logits.shape[-2:])
    if not (target != ignore_index).any():
        return logits.sum() * 0.0  # cross_entropy over no pixel is NaN
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


def downsample_labels(labels: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Nearest sampling of a label map ``(..., H, W)`` at the cell centres of a ``size`` grid.

    ``H`` must be a multiple of ``size[0]`` (and likewise for W): the padded batch guarantees it.
    """
    h, w = labels.shape[-2:]
    sy, sx = h // size[0], w // size[1]
    if sy * size[0] != h or sx * size[1] != w:
        raise ValueError(f"label map {h}x{w} is not a multiple of the grid {size[0]}x{size[1]}")
    return labels[..., sy // 2::sy, sx // 2::sx]
