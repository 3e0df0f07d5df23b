"""Training speed and memory of ``groundkit train``, variants side by side; prints a table.

    python benchmarks/bench_train_step.py --config configs/ppmn_synthetic.yaml --steps 40 \\
        --variant "today: trainer.fused_optimizer=false trainer.threads=2" \\
        --variant "fused: trainer.fused_optimizer=true trainer.threads=2"

Each variant is a name and ``groundkit train`` overrides. Every run is a real ``groundkit train``
(the real data path, trainer, clipping, optimizer and schedule) in a fresh process: two epochs of
``--steps`` batches each, logging every step. The first epoch decodes the images into the cache
(as a real run's first epoch does) and warms up; the step time is the median of the differences
between consecutive step records of the second epoch, after its first ``--warmup`` steps (the
wall clock of the whole loop: loading, forward, backward, optimizer). The first epoch's median is
printed too. The variants alternate ``--repeats`` times (A B A B),
so a drift of a shared machine hits all alike; the table gives each variant's best repeat, its
peak resident memory (the training process's, read at its end), and its time over the first
variant's. Say which machine and how quiet it was beside the figures.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# Runs ``groundkit train`` in-process, then prints this process's peak resident memory.
CHILD = """
import resource, sys
from groundkit.cli import main
try:
    code = main(sys.argv[1:])
finally:
    print("PEAK_RSS_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, flush=True)
sys.exit(code)
"""


def run_variant(config: str, overrides: list[str], steps: int, warmup: int, batch_size: int
                ) -> tuple[float, float, float]:
    """(median seconds per step of the second epoch after ``warmup`` steps, the same of the first
    epoch, peak RSS in MB) of one two-epoch training run of ``steps`` batches per epoch."""
    with tempfile.TemporaryDirectory() as out:
        args = ["train", "--config", config, f"trainer.out_dir={out}", "trainer.epochs=2",
                f"trainer.batch_size={batch_size}", "trainer.log_every=1", "trainer.eval_every=0",
                "trainer.checkpoint_every=0", "trainer.tensorboard=false", "trainer.quiet=true",
                f"data.max_items={steps * batch_size}", "eval.max_items=16", *overrides]
        done = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise SystemExit(f"groundkit {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        peak = float(next(line.split()[1] for line in done.stdout.splitlines()
                          if line.startswith("PEAK_RSS_MB")))
        records = [json.loads(line) for line in Path(out, "metrics.jsonl").read_text().splitlines()]
    times = [r["time"] for r in records if "loss" in r]
    first, second = times[:steps], times[steps - 1:]  # the second's deltas start at its step 1
    step = statistics.median(b - a for a, b in zip(second[warmup:], second[warmup + 1:]))
    decoding = statistics.median(b - a for a, b in zip(first[warmup:], first[warmup + 1:]))
    return step, decoding, peak


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition(":")
    if not overrides.strip():
        raise SystemExit(f"--variant '{text}': expected 'NAME: key=value ...'")
    return name.strip(), overrides.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/ppmn_synthetic.yaml")
    parser.add_argument("--variant", action="append", required=True,
                        help="'NAME: override ...'; the first is the reference of the ratios")
    parser.add_argument("--steps", type=int, default=30, help="batches per epoch")
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of each median")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    variants = [parse_variant(v) for v in args.variant]
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in variants}
    for repeat in range(args.repeats):
        for name, overrides in variants:
            result = run_variant(args.config, overrides, args.steps, args.warmup, args.batch_size)
            results[name].append(result)
            step, decoding, peak = result
            print(f"  repeat {repeat + 1} {name:<26} {1000 * step:8.1f} ms/step (first epoch "
                  f"{1000 * decoding:6.1f})  {peak:6.0f} MB", flush=True)
    print(f"\n{args.config}, batch {args.batch_size}, {args.steps} steps per epoch (second epoch, "
          f"median after {args.warmup}), best of {args.repeats}")
    print(f"{'variant':<26} {'ms/step':>8} {'1st epoch':>10} {'peak RSS':>9} {'time / first':>13}")
    first = min(r[0] for r in results[variants[0][0]])
    for name, _ in variants:
        step = min(r[0] for r in results[name])
        decoding = min(r[1] for r in results[name])
        peak = max(r[2] for r in results[name])
        print(f"{name:<26} {1000 * step:8.1f} {1000 * decoding:10.1f} {peak:6.0f} MB "
              f"{step / first:12.2f}x")


if __name__ == "__main__":
    main()
