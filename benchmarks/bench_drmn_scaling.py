"""How the DRMN head's cost grows with the input size and the number of sampling points.

Times forward + backward of :class:`DRMNHead` (the synthetic config's widths: hidden 64, 4 heads,
FPN 32) on random P2..P5 maps and phrase queries, at several input sizes and points per head and
level. Every pixel of P2..P5 is an encoder query, so the encoder reads ``S x heads x levels x
points`` samples per layer (S = pyramid pixels) and the refinement ``Q x k x heads x levels x
points`` per round: the time should follow those sample counts (x4 per doubling of the side, x2
from 2 to 4 points), not the ``S^2`` pairs of dense attention (x16 per doubling). ``--stride 4``
matches on P2's grid, ``--encoder-levels 3`` encodes P3..P5 only (S then counts those levels).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_drmn_scaling.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_drmn_scaling.py --sizes 128 256 384 --points 4
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_drmn_scaling.py --stride 4 --encoder-levels 3
"""
from __future__ import annotations

import argparse

import torch
from timing import best_cpu_seconds

from groundkit.models.drmn import LEVELS, DRMNConfig, DRMNHead
from groundkit.vision.backbone import BackboneConfig

FPN, HIDDEN, HEADS = 32, 64, 4


def head_step(cfg: DRMNConfig, size: int, batch: int, queries: int):
    """A closure running forward + backward of the head on random features of a ``size`` input."""
    torch.manual_seed(0)
    head = DRMNHead(cfg).train()
    features = {name: torch.randn(batch, FPN, size >> (2 + i), size >> (2 + i))
                for i, name in enumerate(LEVELS)}
    features["neck"] = torch.randn(batch, cfg.neck_channels, size // cfg.neck_stride,
                                   size // cfg.neck_stride)
    text = torch.randn(batch, queries, HIDDEN, requires_grad=True)

    def step() -> None:
        head.zero_grad()
        sum(logits.sum() for logits in head(features, text)).backward()
    return step


def samples(cfg: DRMNConfig, size: int, queries: int) -> tuple[int, int]:
    """Encoded pyramid pixels S and deformable samples per image (encoder + refinement)."""
    pixels = sum((size >> (2 + i)) ** 2 for i in range(len(LEVELS) - cfg.encoder_levels, len(LEVELS)))
    per_query = cfg.heads * cfg.encoder_levels * cfg.points
    top_k = min(cfg.top_k, (size // cfg.neck_stride) ** 2)
    return pixels, per_query * (pixels * cfg.encoder_layers + queries * top_k * cfg.refine_rounds)


def run(sizes: list[int], points: list[int], batch: int, queries: int, repeats: int, stride: int,
        encoder_levels: int) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, DRMN head, hidden {HIDDEN}, "
          f"{HEADS} heads, grid stride {stride}, {encoder_levels} encoded levels, batch {batch}, "
          f"{queries} phrases, forward + backward, CPU time, best of {repeats}")
    header = (f"{'size':>5} {'P':>2} {'S':>6} {'S^2 (M)':>8} {'samples (M)':>11} {'head ms':>8} "
              f"{'ns/sample':>9} {'x time':>7} {'x samples':>9} {'x S^2':>6}")
    print(header)
    print("-" * len(header))
    first = None
    for n_points in points:
        for size in sizes:
            cfg = DRMNConfig(backbone=BackboneConfig(fpn_channels=FPN), neck_channels=HIDDEN,
                             hidden_dim=HIDDEN, heads=HEADS, points=n_points, top_k=32, ffn_dim=256,
                             dropout=0.0, neck_stride=stride, encoder_levels=encoder_levels)
            pixels, count = samples(cfg, size, queries)
            seconds = best_cpu_seconds(head_step(cfg, size, batch, queries), repeats)
            total = count * batch
            first = first or (seconds, total, pixels ** 2)
            print(f"{size:>5} {n_points:>2} {pixels:>6} {pixels ** 2 / 1e6:>8.2f} {total / 1e6:>11.2f} "
                  f"{seconds * 1e3:>8.0f} {seconds / total * 1e9:>9.0f} {seconds / first[0]:>7.2f} "
                  f"{total / first[1]:>9.2f} {pixels ** 2 / first[2]:>6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--points", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--queries", type=int, default=8, help="phrases per caption")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stride", type=int, choices=[4, 8], default=8, help="matching grid")
    parser.add_argument("--encoder-levels", type=int, choices=[1, 2, 3, 4], default=4)
    args = parser.parse_args()
    run(args.sizes, args.points, args.batch, args.queries, args.repeats, args.stride,
        args.encoder_levels)


if __name__ == "__main__":
    main()
