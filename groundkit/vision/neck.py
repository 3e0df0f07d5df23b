"""The semantic-FPN neck of PPMN: merge pyramid levels ``p2..p5`` into one stride-8 map.

Per level (every conv is 3x3 + GroupNorm + ReLU; "up" is a x2 nearest upsample):

- P2: conv with stride 2;
- P3: conv;
- P4: conv, up, conv;
- P5 + 2-D sine positional code: conv, up, conv, up, conv;

then the four maps are summed and a 1x1 conv gives the output.

``stride=4`` gives Panoptic FPN's semantic head layout instead (P2: conv; PK: K - 2 times
conv + up), for small images where a stride-8 grid is too coarse for the objects.

The positional code is *added* to P5 ("we add the sinusoids positional encoding with F5", PPMN
Sec. 3.1; the official code adds it too), so it needs ``2 * num_pos_feats == in_channels``
(128 per axis for 256 channels). Upsampling goes to the exact size of the next finer level, which
equals x2 for inputs padded to a multiple of 32 and stays aligned for other sizes.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from groundkit.errors import ConfigError
from groundkit.vision.position import PositionEmbeddingSine
from groundkit.vision.resnet import num_groups


class ConvGNReLU(nn.Sequential):
    """3x3 conv (no bias: the norm follows) + GroupNorm (<= 32 groups dividing C) + ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.GroupNorm(num_groups(cout), cout),
            nn.ReLU(inplace=True),
        )


class SemanticFPNNeck(nn.Module):
    """Pyramid ``p2..p5`` -> one feature map at stride 8.

    Args:
        in_channels: width of every pyramid level (the FPN's ``out_channels``).
        channels: width of the per-level branches.
        out_channels: width of the output (after the final 1x1 conv); None -> ``channels``.
        num_pos_feats: sine features per axis added to P5; None -> ``in_channels // 2``.
        head_norm: follow the final 1x1 conv with GroupNorm + ReLU, as the official PPMN code
            does (the paper describes a plain 1x1 conv, the default).
        stride: 8 (PPMN) or 4 (Panoptic FPN's semantic head).
    """

    def __init__(self, in_channels: int = 256, channels: int = 256, out_channels: int | None = None,
                 num_pos_feats: int | None = None, head_norm: bool = False, stride: int = 8) -> None:
        super().__init__()
        if stride not in (4, 8):
            raise ConfigError(f"neck: stride must be 4 or 8, got {stride}")
        num_pos_feats = in_channels // 2 if num_pos_feats is None else num_pos_feats
        out_channels = channels if out_channels is None else out_channels
        if 2 * num_pos_feats != in_channels:
            raise ConfigError(f"neck: the positional code is added to P5, so 2 * num_pos_feats "
                              f"({2 * num_pos_feats}) must equal in_channels ({in_channels})")
        self.position = PositionEmbeddingSine(num_pos_feats, normalize=True)
        # Level "pK" for K >= 3 has K - 2 convs with an upsample between consecutive ones
        # (stride 8) or after each one (stride 4).
        self.branches = nn.ModuleDict({
            "p2": nn.ModuleList([ConvGNReLU(in_channels, channels, stride=stride // 4)]),
            **{f"p{k}": nn.ModuleList([ConvGNReLU(in_channels, channels)]
                                      + [ConvGNReLU(channels, channels) for _ in range(k - 3)])
               for k in (3, 4, 5)},
        })
        head: list[nn.Module] = [nn.Conv2d(channels, out_channels, 1)]
        if head_norm:
            head += [nn.GroupNorm(num_groups(out_channels), out_channels), nn.ReLU(inplace=True)]
        self.head = nn.Sequential(*head)
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """features: {"p2": (B, C, H/4, W/4), ..., "p5": (B, C, H/32, W/32)} -> (B, C_out, H/s, W/s)."""
        # Target sizes on the way down: P5 -> size of P4 -> ... -> the output grid.
        sizes = {k: features[f"p{k}"].shape[-2:] for k in (2, 3, 4)}
        p5 = features["p5"]
        inputs = {**features, "p5": p5 + self.position(p5)}
        total = self.branches["p2"][0](inputs["p2"])
        for k in (3, 4, 5):
            x = inputs[f"p{k}"]
            for i, conv in enumerate(self.branches[f"p{k}"]):
                if self.stride == 8 and i > 0:
                    x = F.interpolate(x, size=sizes[k - i], mode="nearest")
                x = conv(x)
                if self.stride == 4:
                    x = F.interpolate(x, size=sizes[k - i - 1], mode="nearest")
            total = total + x
        return self.head(total)
