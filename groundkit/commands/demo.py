"""``groundkit demo``: the main job, end to end, on the embedded synthetic benchmark.

1. generates the benchmark into ``--data`` if it is not there;
2. trains the small model of ``configs/<model>_synthetic.yaml`` from scratch (or, with
   ``--pretrained``, takes the checkpoint bundled with the package);
3. evaluates it on the val split;
4. writes a report folder: the AR table (``scores.json``, ``README.md``), the recall curves,
   the predictions and a page of overlays with their captions.
"""
from __future__ import annotations

import argparse
from pathlib import Path

DEMO_SIZES = {"train": 12000, "val": 200, "test": 200}
CONFIGS = Path(__file__).parents[1] / "configs"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="generate data, train, evaluate, write a report",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=demo_models(),
                        help="model type (default ppmn); trained with configs/<model>_synthetic.yaml")
    parser.add_argument("--task", metavar="FAMILY",
                        help="the first model type of a task family instead of --model: "
                             "grounding, panoptic, referring (a prefix will do: --task refer)")
    parser.add_argument("--pretrained", action="store_true",
                        help="use the bundled <model>-synthetic checkpoint instead of training")
    parser.add_argument("--data", default="data/synthetic", help="benchmark folder")
    parser.add_argument("--train-images", type=int,
                        help="generate and train on this many training images (default 12,000; "
                             "each 1,000 fewer saves ~50 s on 2 CPU cores; 11,000: val AR 71.0 vs 71.7)")
    parser.add_argument("--out", default="report", help="report folder")
    parser.add_argument("--run-dir", help="training folder (default: runs/demo_<model>)")
    parser.add_argument("--overlays", type=int, default=12, help="overlays on the report page")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override training config keys, e.g. trainer.epochs=2")
    parser.set_defaults(func=run)


def demo_models() -> list[str]:
    """The registered model types with a synthetic config in ``configs/``."""
    from groundkit.models import model_types

    return [m for m in model_types() if (CONFIGS / f"{m}_synthetic.yaml").exists()]


def demo_model(model: str | None, task: str | None) -> str:
    """``--model``, or the first demo model of the family ``--task`` names (or begins)."""
    from groundkit.errors import InputError
    from groundkit.models import families, model_spec_of

    if task is None:
        return model or "ppmn"
    matches = [f for f in families() if f.startswith(task)]
    if len(matches) != 1:
        raise InputError(f"--task {task!r}: expected one of {families()} (or a prefix of one)")
    if model is not None and model_spec_of(model).family != matches[0]:
        raise InputError(f"--model {model} is not a {matches[0]} model")
    return model or next(m for m in demo_models() if model_spec_of(m).family == matches[0])


def run(args: argparse.Namespace) -> int:
    import time

    start = time.time()
    args.model = demo_model(args.model, args.task)
    overrides = list(args.overrides)
    if args.train_images is not None:
        if args.train_images < 1:
            from groundkit.errors import InputError
            raise InputError(f"--train-images must be >= 1, got {args.train_images}")
        overrides.insert(0, f"data.max_items={args.train_images}")  # a larger folder: the first N
    data = ensure_benchmark(Path(args.data), args.train_images)
    if args.pretrained:
        checkpoint = f"{args.model}-synthetic"
    else:
        checkpoint = train_demo_model(args.model, data, args.run_dir or f"runs/demo_{args.model}",
                                      overrides)
    report = write_report(checkpoint, data, Path(args.out), args.overlays)
    print(f"\ndemo finished in {time.time() - start:.0f} s; report: {report.resolve()}")
    return 0


def ensure_benchmark(root: Path, train_images: int | None = None) -> Path:
    """Generate the default synthetic benchmark into ``root`` unless it is there in full.

    A smaller benchmark from an earlier demo is extended in place: every image is a function of
    the seed and its index alone, so its files are rewritten with the same bytes.
    ``train_images`` replaces the default count of training images.
    """
    import os

    from groundkit.data.synthetic import generate_benchmark
    from groundkit.data.synthetic.writer import image_id

    sizes = {**DEMO_SIZES, "train": train_images or DEMO_SIZES["train"]}
    last_train = root / "images" / "train" / f"{image_id('train', sizes['train'] - 1):012d}.png"
    if (root / "annotations" / "png_coco_val.json").exists() and last_train.exists():
        print(f"benchmark: {root} (already there)")
        return root
    workers = min(4, os.cpu_count() or 1)
    print(f"benchmark: generating {root} (seed 0, {sizes}, {workers} processes)")
    generate_benchmark(root, seed=0, sizes=sizes, image_size=128, workers=workers)
    return root


def train_demo_model(model_type: str, data: Path, run_dir: str, overrides: list[str]) -> str:
    from groundkit.config import load_config
    from groundkit.engine.tasks import task_of

    task = task_of(model_type)
    config = CONFIGS / f"{model_type}_synthetic.yaml"
    cfg = load_config(task.experiment_class(model_type), config,
                      [f"data.root={data}", f"trainer.out_dir={run_dir}", *overrides])
    print(f"training {model_type} from scratch ({config.name}) into {run_dir}")
    task.train(cfg)
    return run_dir


def write_report(checkpoint: str, data: Path, out: Path, overlays: int) -> Path:
    """Evaluate ``checkpoint`` on the val split and write the report folder: what
    ``groundkit evaluate --pred-out OUT --json OUT/scores.json`` writes, a page of overlays and
    a README."""
    from groundkit._io import write_json
    from groundkit.commands.evaluate import evaluate_checkpoint
    from groundkit.data.formats import write_scores

    out.mkdir(parents=True, exist_ok=True)
    report = evaluate_checkpoint(checkpoint, data, "val", out)
    table = report.table
    print(table)
    write_scores(out / "scores.json", report.evaluation.scores())
    report.evaluation.plot(out / "recall_curves.png")
    write_overlay_page(report, out, out / "overlays.png", overlays)
    (out / "README.md").write_text(
        f"# groundkit demo report\n\nCheckpoint: `{checkpoint}`\n\n```\n{table}\n```\n\n"
        "![recall curves](recall_curves.png)\n\n![overlays](overlays.png)\n")
    write_json(out / "checkpoint.json", {"checkpoint": str(checkpoint), "data": str(data)})
    return out


def write_overlay_page(report, pred_dir: Path, path: Path, count: int) -> None:
    """A page of the first ``count`` predictions of ``report``'s split, drawn by the family's
    predictor (grounding: masks over the image, the caption below)."""
    from itertools import islice

    from groundkit.api import predictor_class
    from groundkit.visualize import contact_sheet, save_image

    predictor = predictor_class(report.task.name).from_model(report.model, report.cfg)
    pictures = [predictor.draw(image, result) for image, result
                in islice(report.task.results(report.dataset, pred_dir), count)]
    save_image(contact_sheet(pictures, columns=4), path)
