"""Time `groundkit score png|panoptic|rec|res` as whole commands (a fresh interpreter each: imports
included, as a user pays them), and `groundkit score panoptic` against the COCO panoptic API's
`pq_compute` on the same files, with the largest difference of their PQ / SQ / RQ.

The ground truth is a synthetic split (`groundkit generate --val IMAGES --size PX`, written here
when DATA lacks it); the predictions are the ground truth perturbed (tests/commands/score_cases.py),
written to DATA/predictions (not timed).
panopticapi is a local checkout of github.com/cocodataset/panopticapi (not part of groundkit);
it runs as `python -c "pq_compute(...)"` with its folder on PYTHONPATH, and, as shipped, on a pool
of every core.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_score_commands.py \\
        --panopticapi ../panopticapi --data /tmp/score500 --images 500 --repeats 7
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def load_score_cases():
    """tests/commands/score_cases.py, by path (the tests are no package)."""
    path = Path(__file__).parents[1] / "tests" / "commands" / "score_cases.py"
    spec = importlib.util.spec_from_file_location("groundkit_tests_score_cases", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PQ_COMPUTE = """import json, sys
from panopticapi.evaluation import pq_compute
gt, pred, out = sys.argv[1:4]
results = pq_compute(gt + ".json", pred + ".json", gt, pred)
json.dump({k: results[k] for k in ("All", "Things", "Stuff")}, open(out, "w"))
"""


def wall_seconds(command: list[str], env: dict[str, str], repeats: int) -> list[float]:
    """Wall time of ``command`` run ``repeats`` times (output discarded: the PNG and RES files
    leave some samples without a prediction on purpose, and the commands warn of it)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def decode_seconds(*folders: Path, pillow: bool = True) -> float:
    """CPU seconds to decode every PNG of ``folders`` in this process, the work any scorer of
    these files must do (the least of 3 passes: the files are in the page cache): with Pillow
    (as pq_compute) or with groundkit's decoder (libspng where installed)."""
    from PIL import Image

    from groundkit.data.formats import png_decode

    paths = [p for folder in folders for p in sorted(folder.glob("*.png"))]
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for path in paths:
            with Image.open(path) as image:
                if pillow or png_decode.decode_rgb8(image, path) is None:
                    image.load()
        best = min(best, time.process_time() - start)
    return best


def max_difference(ours: dict, theirs: dict) -> float:
    """Largest |difference| of pq / sq / rq over All, Things and Stuff (fractions)."""
    return max(abs(ours[g][k] - theirs[g][k]) for g in ("All", "Things", "Stuff")
               for k in ("pq", "sq", "rq"))


def report(name: str, times: list[float]) -> float:
    median = statistics.median(times)
    print(f"{name:<34} median {median:6.2f} s   runs {' '.join(f'{t:.2f}' for t in times)}")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--panopticapi", type=Path, required=True, help="a panopticapi checkout")
    parser.add_argument("--data", type=Path, required=True, help="a generated folder (made if absent)")
    parser.add_argument("--images", type=int, default=500, help="val images to generate")
    parser.add_argument("--size", type=int, default=128, help="their side in pixels, if generated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, help="groundkit score panoptic --workers")
    args = parser.parse_args()

    cases = load_score_cases()
    groundkit = [sys.executable, "-m", "groundkit.cli"]
    # Both commands run as an installed package does: with their compiled modules (.pyc)
    # cached. A PYTHONDONTWRITEBYTECODE=1 in the caller's environment (this project's sandbox
    # sets it) made every run compile groundkit's ~60 modules again: +0.1 s at 128 px.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "1")
    gt_json = args.data / "annotations" / f"panoptic_{cases.SPLIT}.json"
    if not gt_json.exists():
        subprocess.run(groundkit + ["generate", "--out", str(args.data), "--seed", "0", "--train", "0",
                                    "--val", str(args.images), "--test", "0", "--size", str(args.size)],
                       env=env, check=True, stderr=subprocess.DEVNULL)
    pred = args.data / "predictions"
    if not (pred / "referring.json").exists():
        cases.write_predictions(args.data, pred)
    print(f"{len(json.loads(gt_json.read_text())['images'])} images in {args.data}; "
          f"{os.cpu_count()} cores; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    ours_json, theirs_json = pred / "scores_groundkit.json", pred / "scores_panopticapi.json"
    workers = [] if args.workers is None else ["--workers", str(args.workers)]
    ours_cmd = groundkit + ["score", *cases.score_arguments(args.data, pred, "panoptic"), *workers,
                            "--json", str(ours_json)]
    theirs_cmd = [sys.executable, "-c", PQ_COMPUTE, str(gt_json.with_suffix("")),
                  str(pred / "panoptic"), str(theirs_json)]
    theirs_env = {**env, "PYTHONPATH": os.pathsep.join([str(args.panopticapi.resolve()),
                                                        env.get("PYTHONPATH", "")])}
    wall_seconds(ours_cmd, env, 1), wall_seconds(theirs_cmd, theirs_env, 1)  # caches warm
    ours_t, theirs_t = [], []
    for _ in range(args.repeats):  # alternated: a change of load on a shared machine hits both
        ours_t += wall_seconds(ours_cmd, env, 1)
        theirs_t += wall_seconds(theirs_cmd, theirs_env, 1)
    ours = report("groundkit score panoptic", ours_t)
    theirs = report("panopticapi pq_compute", theirs_t)
    difference = max_difference(json.loads(ours_json.read_text()), json.loads(theirs_json.read_text()))
    print(f"panopticapi / groundkit: {theirs / ours:.2f}x; max |difference| of PQ/SQ/RQ "
          f"(All, Things, Stuff): {difference:.3g}")
    folders = (args.data / "annotations" / f"panoptic_{cases.SPLIT}", pred / "panoptic")
    cores = os.cpu_count() or 1
    floor = decode_seconds(*folders) / cores   # as pq_compute runs
    # groundkit's decoder with the heap kept as its commands keep it: without that, every
    # decode's buffers of a megabyte fault their pages in afresh (2.0 against 0.65 ms a 512 px map)
    from groundkit._malloc import keep_freed_memory
    keep_freed_memory()
    ours_floor = decode_seconds(*folders, pillow=False) / cores
    print(f"decoding the {2 * len(list(pred.glob('panoptic/*.png')))} PNGs alone (in-process, "
          f"shared over the cores): Pillow {floor:.2f} s, groundkit's decoder {ours_floor:.2f} s; "
          f"no scorer that reads them with Pillow can be more than {theirs / floor:.2f}x faster "
          f"than pq_compute here, {theirs / ours_floor:.2f}x with groundkit's")
    for task in ("png", "rec", "res"):
        report(f"groundkit score {task}", wall_seconds(
            groundkit + ["score", *cases.score_arguments(args.data, pred, task)], env, args.repeats))


if __name__ == "__main__":
    main()
