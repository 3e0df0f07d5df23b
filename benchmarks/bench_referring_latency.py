"""Referrer latency on one CPU: ``set_image`` once, then ``refer`` many expressions.

    python benchmarks/bench_referring_latency.py --checkpoint runs/pbrec_synthetic [--n 50]
    python benchmarks/bench_referring_latency.py --checkpoint pbrec-synthetic "test_scales=[]"

Trailing ``key=value`` are inference options of the model config, as for ``groundkit evaluate``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

EXPRESSIONS = ["the red circle", "the small blue square left of the star", "the topmost triangle",
               "green object under the yellow ring", "the large purple heart"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--image", help="an image (default: a 128 px synthetic val image)")
    parser.add_argument("--n", type=int, default=50, help="refer() calls timed")
    parser.add_argument("options", nargs="*", metavar="key=value", help="inference options")
    args = parser.parse_args()
    from groundkit import Referrer
    from groundkit.engine.tasks import get_task

    referrer = Referrer.from_pretrained(args.checkpoint, device="cpu")
    get_task("referring").set_inference_options(referrer.model, args.options)
    image = args.image or next(iter(sorted(Path("data/synthetic/images/val").glob("*.png"))), None)
    if image is None:
        image = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    start = time.perf_counter()
    referrer.set_image(image)
    set_ms = 1000 * (time.perf_counter() - start)
    for text in EXPRESSIONS:  # warm-up: the text cache and the first call's allocations
        referrer.refer(text)
    times = []
    for k in range(args.n):
        start = time.perf_counter()
        referrer.refer(EXPRESSIONS[k % len(EXPRESSIONS)] + f" {k}")  # new text: encoded each time
        times.append(1000 * (time.perf_counter() - start))
    print(f"threads {torch.get_num_threads()}; set_image {set_ms:.1f} ms; refer() with a new "
          f"expression: median {np.median(times):.1f} ms, p90 {np.percentile(times, 90):.1f} ms "
          f"over {args.n} calls")


if __name__ == "__main__":
    main()
