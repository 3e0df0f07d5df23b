"""Feature Pyramid Network: ResNet stages ``c2..c5`` -> pyramid ``p2..p5`` of equal width."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from groundkit.errors import ConfigError


class FPN(nn.Module):
    """Lateral 1x1 convs, a top-down path (nearest upsample + add), a 3x3 output conv per level.

    Args:
        in_channels: ``{"c2": C2, ..., "c5": C5}`` (a ResNet's ``out_channels``).
        out_channels: width of every output level.

    Attributes:
        out_channels: the width of every level.
        strides: ``{"p2": 4, "p3": 8, "p4": 16, "p5": 32}``.
    """

    LEVELS = ("2", "3", "4", "5")

    def __init__(self, in_channels: dict[str, int], out_channels: int = 256) -> None:
        super().__init__()
        missing = [f"c{lv}" for lv in self.LEVELS if f"c{lv}" not in in_channels]
        if missing:
            raise ConfigError(f"FPN in_channels: missing levels {missing}")
        if out_channels < 1:
            raise ConfigError(f"fpn out_channels: expected a positive integer, got {out_channels}")
        self.lateral = nn.ModuleDict(
            {lv: nn.Conv2d(in_channels[f"c{lv}"], out_channels, 1) for lv in self.LEVELS})
        self.output = nn.ModuleDict(
            {lv: nn.Conv2d(out_channels, out_channels, 3, padding=1) for lv in self.LEVELS})
        self.out_channels = out_channels
        self.strides = {f"p{lv}": 2 ** int(lv) for lv in self.LEVELS}
        for conv in self.modules():
            if isinstance(conv, nn.Conv2d):
                # Uniform fan-in init with unit gain, as Detectron's FPN: keeps level scales close.
                nn.init.kaiming_uniform_(conv.weight, a=1)
                nn.init.zeros_(conv.bias)

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        """features: {"c2": (B, C2, H2, W2), ..., "c5"} -> {"p2": (B, C, H2, W2), ..., "p5"}.

        The top-down path upsamples to the next level's exact size, so odd sizes work too.
        """
        top = None
        out = {}
        for lv in reversed(self.LEVELS):
            x = self.lateral[lv](features[f"c{lv}"])
            if top is not None:
                x = x + F.interpolate(top, size=x.shape[-2:], mode="nearest")
            top = x
            out[f"p{lv}"] = self.output[lv](x)
        return {f"p{lv}": out[f"p{lv}"] for lv in self.LEVELS}
