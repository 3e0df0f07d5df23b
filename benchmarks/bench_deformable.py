"""Cost of multi-scale deformable attention against dense attention over every pixel.

Times forward + backward of ``MSDeformAttn`` (4 levels, strides 1, 2, 4, 8 below the base map) for
several numbers of queries Q and points P, and a dense multi-head attention of the same Q queries
over all S pixels of the pyramid. Deformable attention reads Q x heads x levels x P points, so its
time should follow Q x P (plus a projection of the S values, linear in S); dense attention follows
Q x S, which is S^2 when every pixel is a query (the DRMN encoder). Times are CPU times of one
thread by default, so that other jobs on a shared machine do not blur them.

    .venv/bin/python benchmarks/bench_deformable.py                  # the default table
    .venv/bin/python benchmarks/bench_deformable.py --sizes 64 --queries 512 --points 4
"""
from __future__ import annotations

import argparse

import torch
from timing import best_cpu_seconds
from torch import nn

from groundkit.vision.deformable import MSDeformAttn
from groundkit.vision.deformable_encoder import flatten_levels

D_MODEL, HEADS, LEVELS = 256, 8, 4


def deformable_step(pyramid, queries: int, points: int):
    """A closure running forward + backward of MSDeformAttn for ``queries`` random queries."""
    attn = MSDeformAttn(D_MODEL, LEVELS, HEADS, points)
    flat = flatten_levels(pyramid)
    src = flat.src.requires_grad_()
    query = torch.randn(1, queries, D_MODEL, requires_grad=True)
    refs = torch.rand(1, queries, LEVELS, 2)

    def step() -> None:
        attn(query, refs, src, flat.spatial_shapes, flat.level_start_index).sum().backward()
    return step


def dense_step(pyramid, queries: int):
    """The same queries attending to every pixel with a standard multi-head attention."""
    attn = nn.MultiheadAttention(D_MODEL, HEADS, batch_first=True)
    src = flatten_levels(pyramid).src.requires_grad_()
    query = torch.randn(1, queries, D_MODEL, requires_grad=True)

    def step() -> None:
        attn(query, src, src, need_weights=False)[0].sum().backward()
    return step


def make_pyramid(base: int) -> list[torch.Tensor]:
    return [torch.randn(1, D_MODEL, base >> level, base >> level) for level in range(LEVELS)]


def run(sizes: list[int], queries: list[int], points: list[int], repeats: int,
        dense_max_pairs: float) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, d_model {D_MODEL}, "
          f"{HEADS} heads, {LEVELS} levels, batch 1, forward + backward, CPU time, best of {repeats}")
    header = (f"{'base':>5} {'S':>6} {'Q':>6} {'P':>2} {'samples':>9} {'deform ms':>10} "
              f"{'ns/sample':>9} {'dense ms':>10} {'dense/deform':>12}")
    print(header)
    print("-" * len(header))
    for base in sizes:
        pyramid = make_pyramid(base)
        tokens = sum(f.shape[-1] * f.shape[-2] for f in pyramid)
        rate = None  # dense seconds per query x pixel pair, to estimate the runs that are skipped
        for n_queries in [q if q > 0 else tokens for q in queries]:
            if n_queries * tokens <= dense_max_pairs:
                dense = best_cpu_seconds(dense_step(pyramid, n_queries), repeats)
                rate = dense / (n_queries * tokens)
                dense_text = f"{dense * 1e3:10.1f}"
            else:
                dense = None if rate is None else rate * n_queries * tokens
                dense_text = f"{'skipped' if dense is None else f'~{dense * 1e3:.0f}':>10}"
            for n_points in points:
                deform = best_cpu_seconds(deformable_step(pyramid, n_queries, n_points), repeats)
                samples = n_queries * HEADS * LEVELS * n_points
                ratio = "" if dense is None else f"{dense / deform:12.1f}"
                print(f"{base:>5} {tokens:>6} {n_queries:>6} {n_points:>2} {samples:>9} "
                      f"{deform * 1e3:10.1f} {deform / samples * 1e9:9.0f} {dense_text} {ratio}")
    print(f"Q = S rows are the encoder (every pixel a query). '~': dense time estimated from the time "
          f"per query x pixel pair measured at that size, as Q x S > --dense-max-pairs "
          f"({dense_max_pairs:.0e}).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="base level side")
    parser.add_argument("--queries", type=int, nargs="+", default=[256, 1024, 4096, 0],
                        help="numbers of queries; 0 means every pixel (Q = S)")
    parser.add_argument("--points", type=int, nargs="+", default=[1, 4], help="points per level and head")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (one by default: steadier timings on a shared machine)")
    parser.add_argument("--dense-max-pairs", type=float, default=1e8,
                        help="run dense attention only when Q x S is at most this")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    run(args.sizes, args.queries, args.points, args.repeats, args.dense_max_pairs)


if __name__ == "__main__":
    main()
