"""Train PBREC-MT runs side by side on one GPU inside a fixed time budget (one device-tool call).

A lent GPU comes for minutes, in one call: this script generates the synthetic benchmark, measures
the seconds per step of every run *while they share the GPU* (a short calibration with a few
thousand sentences), picks the number of epochs that fits the rest of the budget (so that the cosine
schedule ends where the run ends), trains, and copies the model files and logs to ``--out``.

    python benchmarks/gpu_train_pbrec.py --out $OUT --budget 540 \\
        --run main= --run hard=model.hard_targets=true --run rec_only=model.lambda_mass=0

The first step of the bundled ``pbrec-synthetic`` was the ``amp`` run of (docs/referring.md)::

    python benchmarks/gpu_train_pbrec.py --out $OUT --budget 515 --startup 60 \\
        --run "main=trainer.num_workers=4" \\
        --run "big=trainer.batch_size=128,trainer.lr=3e-4,trainer.num_workers=4" \\
        --run "amp=trainer.amp=true,trainer.amp_dtype=bfloat16,trainer.num_workers=4"

Each ``--run NAME=OVERRIDES`` is one ``groundkit train --config CONFIG`` with the comma-separated
``key=value`` overrides. ``--budget`` counts seconds from the script's start; a run still going at
the end is stopped (SIGTERM: it saves a resumable training state; its model file comes back only
if an earlier epoch wrote one; on 1 December two runs stopped during their first epoch's
evaluation came back with none). Written to ``--out``: ``NAME.safetensors`` (the model) for every
run that has one and ``logs.tar.gz`` (configs, metrics.jsonl, stdout of every run).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

START = time.monotonic()
GROUNDKIT = [sys.executable, "-c", "import sys; from groundkit.cli import main; sys.exit(main())"]


def elapsed() -> float:
    return time.monotonic() - START


def say(message: str) -> None:
    print(f"[{elapsed():6.1f} s] {message}", flush=True)


def start_run(config: str, out_dir: Path, overrides: list[str], log: Path) -> subprocess.Popen:
    out_dir.mkdir(parents=True, exist_ok=True)
    command = GROUNDKIT + ["train", "--config", config, *overrides,
                           f"trainer.out_dir={out_dir}", "trainer.quiet=true",
                           "trainer.tensorboard=false"]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_all(runs: dict[str, subprocess.Popen], deadline: float) -> dict[str, int | None]:
    """Wait for every run until ``deadline`` (script seconds); runs still going are stopped."""
    codes: dict[str, int | None] = {}
    for name, process in runs.items():
        try:
            codes[name] = process.wait(timeout=max(1.0, deadline - elapsed()))
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
            codes[name] = None
    return codes


def seconds_per_step(metrics: Path) -> float:
    """From the trainer's log records (``step``, ``time``): the slope after the first record."""
    records = [r for r in map(json.loads, metrics.read_text().splitlines()) if "loss" in r]
    if len(records) < 2:
        raise SystemExit(f"calibration: fewer than 2 log records in {metrics}")
    first, last = records[0], records[-1]
    return (last["time"] - first["time"]) / (last["step"] - first["step"])


def count_sentences(data: Path) -> int:
    from groundkit.data.referring import ReferringDataConfig, ReferringDataset
    return len(ReferringDataset(ReferringDataConfig(root=str(data)), "train"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/pbrec_synthetic_gpu.yaml")
    parser.add_argument("--run", action="append", required=True, metavar="NAME=OVERRIDES")
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default="/tmp/pbrec_gpu", help="data and run folders")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds from start")
    parser.add_argument("--train-images", type=int, default=12000)
    parser.add_argument("--calibration-items", type=int, default=3200)
    parser.add_argument("--startup", type=float, default=45.0,
                        help="seconds a run spends before its first step (text features, loading)")
    parser.add_argument("--epoch-overhead", type=float, default=8.0,
                        help="seconds per epoch beside the steps (evaluation, checkpoint, workers)")
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--eval-items", type=int, default=64,
                        help="val expressions scored after each epoch (the GPU scores them slowly: "
                             "600 took 40 s on an H200, docs/referring.md); score the whole "
                             "split afterwards with groundkit evaluate")
    args = parser.parse_args()
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    specs = {}
    for spec in args.run:
        name, _, overrides = spec.partition("=")
        specs[name] = [o for o in overrides.split(",") if o]

    data = work / "data"
    if not (data / "refcoco" / "refs(unc).p").exists():
        say(f"generating {args.train_images} training images into {data}")
        subprocess.run(GROUNDKIT + ["generate", "--out", str(data), "--seed", "0", "--train",
                                    str(args.train_images), "--val", "200", "--test", "200",
                                    "--workers", str(os.cpu_count())], check=True,
                       stdout=subprocess.DEVNULL)
    sentences = count_sentences(data)
    say(f"data ready: {sentences} training sentences")

    common = [f"data.root={data}", f"eval.max_items={args.eval_items}"]
    batch = {}
    calibration = {}
    for name, overrides in specs.items():
        batch[name] = int(_value_of(args.config, overrides, "trainer.batch_size"))
        calibration[name] = start_run(
            args.config, work / "cal" / name,
            common + overrides + [f"data.max_items={args.calibration_items}", "trainer.epochs=1",
                                  "trainer.eval_every=0", "trainer.log_every=10"],
            work / f"cal_{name}.log")
    codes = wait_all(calibration, deadline=args.budget / 2)
    for name, code in codes.items():
        if code != 0:
            print((work / f"cal_{name}.log").read_text()[-6000:])
            raise SystemExit(f"calibration of {name} failed (exit {code})")
    calibration_end = elapsed()
    remaining = args.budget - calibration_end - args.startup
    epochs = {}
    for name in specs:
        step = seconds_per_step(work / "cal" / name / "metrics.jsonl")
        steps = math.ceil(sentences / batch[name])
        per_epoch = steps * step + args.epoch_overhead
        epochs[name] = max(1, min(args.max_epochs, int(remaining // per_epoch)))
        say(f"{name}: {step * 1000:.1f} ms/step side by side, {steps} steps = {per_epoch:.0f} s "
            f"per epoch -> {epochs[name]} epochs in {remaining:.0f} s")

    runs = {name: start_run(args.config, work / "runs" / name,
                            common + overrides + [f"trainer.epochs={epochs[name]}"],
                            work / f"train_{name}.log")
            for name, overrides in specs.items()}
    codes = wait_all(runs, deadline=args.budget)
    say("training finished: " + ", ".join(f"{n} exit {c}" for n, c in codes.items()))

    for name in specs:
        model = work / "runs" / name / "model.safetensors"
        if model.exists():
            shutil.copy(model, out / f"{name}.safetensors")
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        for path in sorted(work.glob("*.log")):
            tar.add(path, arcname=path.name)
        for folder in ("cal", "runs"):
            for path in sorted((work / folder).glob("*/*")):
                if path.suffix in (".json", ".jsonl"):
                    tar.add(path, arcname=f"{folder}/{path.parent.name}/{path.name}")
    for name in specs:
        print(f"--- {name} (exit {codes[name]})")
        metrics = work / "runs" / name / "metrics.jsonl"
        if metrics.exists():
            for line in metrics.read_text().splitlines():
                if "eval/" in line:
                    print(line)
        else:
            print((work / f"train_{name}.log").read_text()[-3000:])
    say("done")
    return 0 if all(c == 0 for c in codes.values()) else 1


def _value_of(config: str, overrides: list[str], key: str) -> str:
    from groundkit.config import peek_value
    return peek_value(config, overrides, key, None)


if __name__ == "__main__":
    sys.exit(main())
