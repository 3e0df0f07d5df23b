"""Speed of the synthetic benchmark generator: scenes per second, drawing alone and end to end.

Usage: python benchmarks/bench_generate.py [--n 300] [--size 128]
Target: at least 50 scenes/s end to end at 128 x 128 on one CPU core.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from groundkit.data.synthetic import generate_benchmark
from groundkit.data.synthetic.language import make_narrative, make_refs
from groundkit.data.synthetic.scene import make_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="scenes to draw")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    args = parser.parse_args()

    start, cpu = time.perf_counter(), time.process_time()
    for i in range(args.n):
        rng = np.random.default_rng([0, i])
        scene = make_scene(rng, args.size)
        make_narrative(scene, i, rng)
        make_refs(scene, rng)
    drawn = args.n / (time.perf_counter() - start), args.n / (time.process_time() - cpu)

    with tempfile.TemporaryDirectory() as out:
        start, cpu = time.perf_counter(), time.process_time()
        generate_benchmark(out, 0, {"train": args.n}, args.size, progress=False)
        written = args.n / (time.perf_counter() - start), args.n / (time.process_time() - cpu)
    print(f"size {args.size}px, {args.n} scenes")
    # CPU time says what one free core would do when other jobs share the machine.
    print(f"{'':30s}   wall   per CPU second (scenes/s)")
    print(f"draw scene + narrative + refs : {drawn[0]:6.1f} {drawn[1]:8.1f}")
    print(f"end to end (files written)    : {written[0]:6.1f} {written[1]:8.1f}")


if __name__ == "__main__":
    main()
