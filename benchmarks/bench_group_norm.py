"""GroupNorm forward + backward on the CPU by memory layout, at the demo recipe's shapes.

    python benchmarks/bench_group_norm.py --threads 2

GroupNorm is ~19% of a PPMN training step on this CPU (forward + backward, torch profiler), and
the demo trains in channels-last, where oneDNN's convolutions are fastest. This prints, per
activation shape of the demo's narrow ResNet-18 FPN (batch 16, 128 px), the milliseconds of one
GroupNorm forward + backward with the input in NCHW, in channels-last, and in channels-last
converted to NCHW around the norm and back (what a layout-aware wrapper would do), and the ratio
of channels-last to NCHW.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import torch

from groundkit.vision.resnet import num_groups

# (channels, side) of the GroupNorm inputs of configs/ppmn_synthetic.yaml at 128 px: the ResNet-18
# stem (stride 2) and its four stages (base width 16), and the 64-channel neck at stride 4.
SHAPES = ((16, 64), (16, 32), (32, 16), (64, 8), (128, 4), (64, 32))


def forward_backward_ms(x: torch.Tensor, norm: Callable[[torch.Tensor], torch.Tensor],
                        repeats: int) -> float:
    """Median milliseconds of ``norm(x).sum().backward()`` over ``repeats`` calls, after 3."""
    times = []
    for i in range(repeats + 3):
        start = time.perf_counter()
        norm(x).sum().backward()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, batch {args.batch}; ms per forward + backward (median of "
          f"{args.repeats})")
    print(f"{'C x side':>10} {'NCHW':>8} {'CL':>8} {'CL->NCHW->CL':>13} {'CL / NCHW':>10}")
    for channels, side in SHAPES:
        norm = torch.nn.GroupNorm(num_groups(channels), channels)  # as the library builds it
        nchw = torch.randn(args.batch, channels, side, side, requires_grad=True)
        last = nchw.detach().to(memory_format=torch.channels_last).requires_grad_()
        around = lambda x: norm(x.contiguous()).contiguous(memory_format=torch.channels_last)  # noqa: E731
        t_nchw = forward_backward_ms(nchw, norm, args.repeats)
        t_last = forward_backward_ms(last, norm, args.repeats)
        t_around = forward_backward_ms(last, around, args.repeats)
        print(f"{f'{channels} x {side}':>10} {t_nchw:8.2f} {t_last:8.2f} {t_around:13.2f} "
              f"{t_last / t_nchw:9.1f}x")


if __name__ == "__main__":
    main()
