"""Fuzz every reader of `data/formats` and every scorer of `metrics/files` for a while.

The long version of tests/data/formats/test_fuzz.py (same targets and mutations, from
tests/data/formats/fuzzing.py): N random cases per target, each a valid small file mutated (hostile
JSON values, missing keys, deep nesting; damaged or disguised PNGs; damaged pickles) and read all
the way. Prints per target the cases tried, how many gave a typed groundkit error, how many were
accepted, and the untyped escapes: any other exception, a peak of traced memory past the limit, a
crash of the process or a case running past --case-timeout. The first case of each distinct
escape is saved under --out (the files the target read, the traceback and the command that
replays it).

Each target runs in a child process (restarted after a crash or a hang) with its address space
capped at --max-memory-gb.

    .venv/bin/python benchmarks/fuzz_readers.py                      # 300 cases per target
    .venv/bin/python benchmarks/fuzz_readers.py --cases 2000 --targets score_png refcoco_refs
    .venv/bin/python benchmarks/fuzz_readers.py --seed 7 --replay score_png 123  # one case again
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import queue
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

FUZZING = Path(__file__).resolve().parents[1] / "tests" / "data" / "formats" / "fuzzing.py"


def load_fuzzing():
    name = "groundkit_tests_fuzzing"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FUZZING)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before running it: its dataclasses look themselves up there
        spec.loader.exec_module(module)
    return sys.modules[name]


def chooser(fuzzing, seed: int, target: str, case: int):
    return fuzzing.RandomChooser(random.Random(f"{seed}:{target}:{case}"))


# --- the child: runs cases, one JSON line per event ----------------------------------------------

def worker(args: argparse.Namespace) -> None:
    import resource

    limit = int(args.max_memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    fuzzing = load_fuzzing()
    target = fuzzing.TARGETS[args.worker]
    seeds, work = Path(args.seeds), Path(args.work)
    for i in range(args.start, args.cases):
        print(json.dumps({"start": i}), flush=True)
        case_dir = work / f"case-{i}"
        shutil.rmtree(case_dir, ignore_errors=True)
        case_dir.mkdir(parents=True)
        role, paths = fuzzing.make_case(target, seeds, chooser(fuzzing, args.seed, target.name, i),
                                        case_dir)
        made = {"role": role, "paths": {r: str(p) for r, p in paths.items()}}
        print(json.dumps({"made": i, **made}), flush=True)  # for the report of a crash
        outcome = fuzzing.execute(target, paths, seeds, role)
        event = {"done": i, "kind": outcome.kind, **made}
        if outcome.kind == "escape":
            event.update(key=fuzzing.escape_key(outcome), describe=outcome.describe(),
                         trace=outcome.trace)
        else:
            shutil.rmtree(case_dir)
        print(json.dumps(event), flush=True)


# --- the parent: runs the children, counts, saves the first case of each escape ------------------

def fuzz_target(name: str, args: argparse.Namespace, seeds: Path, work: Path, out: Path) -> dict:
    counts: Counter = Counter()
    escapes: dict[str, int] = {}
    start, began = 0, time.perf_counter()
    while start < args.cases:
        command = [sys.executable, __file__, "--worker", name, "--seed", str(args.seed),
                   "--cases", str(args.cases), "--start", str(start), "--seeds", str(seeds),
                   "--work", str(work), "--max-memory-gb", str(args.max_memory_gb)]
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in child.stdout] + [lines.put(None)],
                         daemon=True).start()
        current, made = None, {"role": "?", "paths": {}}
        while True:
            try:
                line = lines.get(timeout=args.case_timeout)
            except queue.Empty:  # a hang: the case ran past --case-timeout
                child.kill()
                child.wait()
                event = {"kind": "escape", "key": f"Timeout (> {args.case_timeout:g} s)",
                         "describe": f"no result after {args.case_timeout:g} s", "trace": ""}
                break
            if line is None:  # the child ended: done, or crashed in the middle of a case
                child.wait()
                event = None
                if current is not None:
                    err = child.stderr.read()[-3000:]
                    event = {"kind": "escape", "key": f"Crash (exit {child.returncode})",
                             "describe": f"the process died (exit {child.returncode})",
                             "trace": err}
                break
            message = json.loads(line)
            if "start" in message:
                current, made = message["start"], {"role": "?", "paths": {}}
                continue
            if "made" in message:
                made = {"role": message["role"], "paths": message["paths"]}
                continue
            current = None
            record(name, message, counts, escapes, out, work, args)
        if event is None:
            break
        event.update(done=current, **made)
        record(name, event, counts, escapes, out, work, args)
        start = current + 1
    counts["seconds"] = time.perf_counter() - began
    counts["distinct"] = len(escapes)
    return {"counts": counts, "escapes": escapes}


def record(name: str, event: dict, counts: Counter, escapes: dict, out: Path, work: Path,
           args: argparse.Namespace) -> None:
    counts["tried"] += 1
    counts[event["kind"]] += 1
    if event["kind"] != "escape":
        return
    case_dir = work / f"case-{event['done']}"
    key = event["key"]
    escapes[key] = escapes.get(key, 0) + 1
    if escapes[key] == 1:  # the first of its kind: keep it
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)[:80]
        saved = out / name / f"{len(escapes):02d}-{slug}"
        shutil.rmtree(saved, ignore_errors=True)
        saved.parent.mkdir(parents=True, exist_ok=True)
        if case_dir.exists():
            shutil.copytree(case_dir, saved / "mutated")
        saved.mkdir(parents=True, exist_ok=True)
        (saved / "README.txt").write_text(
            f"target {name}, case {event['done']}, seed {args.seed}: {key}\n"
            f"{event['describe']}\n\nmutated role: {event['role']} (its file is in mutated/; the "
            f"others are the seed files of fuzzing.make_seeds); files read: "
            f"{json.dumps(event['paths'], indent=1)}\n\nreplay (rebuilds the same files):\n"
            f"  python benchmarks/fuzz_readers.py --seed {args.seed} --replay {name} "
            f"{event['done']}\n\n{event['trace']}\n")
        print(f"  escape in {name}, case {event['done']}: {event['describe'][:200]}\n"
              f"    saved in {saved}", flush=True)
    shutil.rmtree(case_dir, ignore_errors=True)


def replay(args: argparse.Namespace) -> None:
    fuzzing = load_fuzzing()
    name, case = args.replay[0], int(args.replay[1])
    folder = Path(tempfile.mkdtemp(prefix=f"fuzz-replay-{name}-{case}-"))
    seeds = fuzzing.make_seeds(folder / "seeds")
    outcome = fuzzing.run_case(fuzzing.TARGETS[name], seeds, chooser(fuzzing, args.seed, name, case),
                               folder / "case")
    print(outcome.describe())
    print(outcome.trace or "")
    print(f"files read: {json.dumps({r: str(p) for r, p in outcome.paths.items()}, indent=1)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=300, help="cases per target (default 300)")
    parser.add_argument("--targets", nargs="+", help="only these targets (default: all)")
    parser.add_argument("--seed", type=int, help="base seed (default: a random one, printed)")
    parser.add_argument("--out", default="runs/fuzz_escapes", help="where escapes are saved")
    parser.add_argument("--case-timeout", type=float, default=60.0,
                        help="seconds a case may run before it counts as a hang (default 60)")
    parser.add_argument("--max-memory-gb", type=float, default=8.0,
                        help="address-space cap of each child process (default 8)")
    parser.add_argument("--replay", nargs=2, metavar=("TARGET", "CASE"),
                        help="run one case again (with --seed) and print its outcome")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seeds", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    if args.worker:
        return worker(args)
    if args.replay:
        return replay(args)

    fuzzing = load_fuzzing()
    names = args.targets or list(fuzzing.TARGETS)
    unknown = set(names) - set(fuzzing.TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; known: {', '.join(fuzzing.TARGETS)}")
    out = Path(args.out)
    print(f"fuzzing {len(names)} targets, {args.cases} cases each, seed {args.seed}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        seeds = fuzzing.make_seeds(Path(tmp) / "seeds")
        for name in names:
            results[name] = fuzz_target(name, args, seeds, Path(tmp) / name, out)
            c = results[name]["counts"]
            print(f"  {name}: {c['tried']} cases, {c['escape']} escapes, {c['seconds']:.0f} s",
                  flush=True)

    print(f"\nseed {args.seed}, {args.cases} cases per target\n")
    header = f"{'target':<22} {'tried':>6} {'typed':>6} {'accepted':>8} {'escapes':>7} {'distinct':>8}"
    print(header + f" {'s/case':>7}")
    print("-" * (len(header) + 8))
    for name, result in results.items():
        c = result["counts"]
        print(f"{name:<22} {c['tried']:>6} {c['typed']:>6} {c['accepted']:>8} {c['escape']:>7} "
              f"{c['distinct']:>8} {c['seconds'] / max(c['tried'], 1):>7.3f}")
    total = Counter()
    for result in results.values():
        total.update({k: v for k, v in result["counts"].items() if k != "seconds"})
    print(f"{'all':<22} {total['tried']:>6} {total['typed']:>6} {total['accepted']:>8} "
          f"{total['escape']:>7} {total['distinct']:>8}")
    for name, result in results.items():
        for key, n in result["escapes"].items():
            print(f"  {name}: {n} x {key}")
    if total["escape"]:
        print(f"\nthe first case of each escape is saved under {out}/")
        sys.exit(1)


if __name__ == "__main__":
    main()
