"""``groundkit demo``: the whole toolkit in a few minutes, on the embedded synthetic benchmark.

By default (``make demo``):

1. generates the benchmark's val split into ``--data`` if it is not there (200 images of 128 px,
   seed 0); a folder the demo did not make is never written into;
2. runs every model bundled with the package (PPMN, DRMN, the panoptic model; any checkpoint
   ``groundkit/pretrained`` holds) on it and scores the prediction files;
3. writes ``report/index.html``, a page that explains itself: per task a table of scores beside
   the papers' published numbers (real data: for scale, not comparable), the recall curves, and
   a gallery of ground truth beside prediction with the IoU of every phrase, segment or box, the
   worst cases first. Each model's predictions, scores and pictures lie beside it.

Measured: 229-316 s in all on this project's 2-core CPU machine, quiet, in three fresh clones
(1 December 2026): per model 2 to 47 s to load, predict, score and draw 12 pictures, and
129-187 s for PBREC-MT, whose bundle refers each of the 1,454 expressions at two scales. The
page says where its own time went.

``--train`` runs the first demo's recipe instead: it generates the full benchmark (12,000
training images), trains the small model of ``configs/<model>_synthetic.yaml`` from random
weights (PPMN: 13 min on 2 CPU cores, docs/results.md), evaluates it and writes
``report/train/index.html``, which the main page links to.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence

from groundkit._io import check_output_dir

DEMO_SIZES = {"train": 12000, "val": 200, "test": 200}
DEMO_SEED, DEMO_IMAGE_SIZE = 0, 128
MARKER = "groundkit-demo.json"   # in a benchmark folder the demo made
CONFIGS = Path(__file__).parents[1] / "configs"
TRAIN_TIME = "about 13 min for PPMN on 2 CPU cores, 783 to 795 s measured (docs/results.md)"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the bundled models on the synthetic benchmark, write report/index.html",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", action="store_true",
                        help=f"train a model from random weights instead: {TRAIN_TIME}")
    parser.add_argument("--model", choices=demo_models(),
                        help="only this model type's bundled checkpoint; with --train the model "
                             "to train (default ppmn) with configs/<model>_synthetic.yaml")
    parser.add_argument("--task", metavar="FAMILY",
                        help="only this task family: grounding, panoptic, referring (a prefix "
                             "will do: --task refer); with --train its first model type")
    parser.add_argument("--pretrained", action="store_true", help=argparse.SUPPRESS)  # the default
    parser.add_argument("--data", default="data/synthetic", help="benchmark folder")
    parser.add_argument("--val-images", type=int, default=DEMO_SIZES["val"],
                        help="val images to generate when the folder has fewer (default "
                             f"{DEMO_SIZES['val']}; a larger split that is there is used whole)")
    parser.add_argument("--out", default="report", help="report folder")
    parser.add_argument("--gallery", "--overlays", type=int, default=12, metavar="N",
                        help="pictures per model in the gallery, the worst first (default 12)")
    train = parser.add_argument_group("--train")
    train.add_argument("--train-images", type=int,
                       help="generate and train on this many training images (default 12,000; "
                            "each 1,000 fewer saves ~50 s on 2 CPU cores; 11,000: val AR 71.0 vs "
                            "71.7)")
    train.add_argument("--run-dir", help="training folder (default: runs/demo_<model>)")
    train.add_argument("overrides", nargs="*", metavar="key=value",
                       help="override training config keys, e.g. trainer.epochs=2")
    parser.set_defaults(func=run)


def demo_models() -> list[str]:
    """The registered model types with a synthetic config in ``configs/``."""
    from groundkit.models import model_types

    return [m for m in model_types() if (CONFIGS / f"{m}_synthetic.yaml").exists()]


def demo_family(task: str) -> str:
    """The task family ``task`` names (or begins)."""
    from groundkit.errors import InputError
    from groundkit.models import families

    matches = [f for f in families() if f.startswith(task)]
    if len(matches) != 1:
        raise InputError(f"--task {task!r}: expected one of {families()} (or a prefix of one)")
    return matches[0]


def demo_model(model: str | None, task: str | None) -> str:
    """``--model``, or the first demo model of the family ``--task`` names (or begins)."""
    from groundkit.engine.tasks import get_task
    from groundkit.errors import InputError
    from groundkit.models import model_spec_of

    if task is None:
        return model or "ppmn"
    family = demo_family(task)
    if model is not None and model_spec_of(model).family != family:
        raise InputError(f"--model {model} is not a {family} model")
    if model is not None:
        return model
    members = [m for m in demo_models() if model_spec_of(m).family == family]
    # the family's main model first: the one its default bundled checkpoint is (pbrec-synthetic)
    main = get_task(family).default_checkpoint.split("-")[0]
    return main if main in members else members[0]


def run(args: argparse.Namespace) -> int:
    from groundkit.errors import InputError

    start = time.time()
    if args.gallery < 0 or args.val_images < 1:
        raise InputError(f"--gallery must be >= 0 and --val-images >= 1, got {args.gallery} and "
                         f"{args.val_images}")
    if args.train:
        if args.pretrained:
            raise InputError("--pretrained and --train exclude each other (without --train the "
                             "demo runs the bundled, pretrained models)")
        return run_training(args, start)
    train_only = [name for name, value in (("--train-images", args.train_images),
                                           ("--run-dir", args.run_dir),
                                           ("key=value overrides", args.overrides or None))
                  if value is not None]
    if train_only:
        raise InputError(f"{', '.join(train_only)}: for training from random weights; add --train")
    checkpoints = bundled_checkpoints(args.model, args.task)
    check_output_dir(args.out, "--out")
    data = ensure_benchmark(Path(args.data), {"val": args.val_images})
    out = Path(args.out)
    page = write_demo_page([(name, "bundled with the package") for name in checkpoints], data,
                           out, args.gallery, start=start)
    print(f"\ndemo finished in {time.time() - start:.0f} s; report: {page.resolve()}")
    return 0


def run_training(args: argparse.Namespace, start: float) -> int:
    """``--train``: today's recipe from random weights, then its page in ``OUT/train/``."""
    from groundkit.errors import InputError

    model = demo_model(args.model, args.task)
    overrides = list(args.overrides)
    if args.train_images is not None:
        if args.train_images < 1:
            raise InputError(f"--train-images must be >= 1, got {args.train_images}")
        overrides.insert(0, f"data.max_items={args.train_images}")  # a larger folder: the first N
    sizes = {**DEMO_SIZES, "train": args.train_images or DEMO_SIZES["train"]}
    run_dir = args.run_dir or f"runs/demo_{model}"
    check_output_dir(Path(args.out) / "train", "--out")
    check_output_dir(run_dir, "--run-dir")
    data = ensure_benchmark(Path(args.data), sizes)
    started = time.time()
    train_demo_model(model, data, run_dir, overrides)
    minutes = (time.time() - started) / 60
    page = write_demo_page([(run_dir, f"trained here from random weights in {minutes:.1f} min "
                                      f"({run_dir}, configs/{model}_synthetic.yaml)")],
                           data, Path(args.out) / "train", args.gallery, start=start, trained=True)
    print(f"\ndemo finished in {time.time() - start:.0f} s; report: {page.resolve()}")
    return 0


# --- data ------------------------------------------------------------------------------------

def ensure_benchmark(root: Path, sizes: dict[str, int]) -> Path:
    """Make ``root`` hold the demo's benchmark (seed 0, 128 px) with at least ``sizes`` images
    per split (``{"val": 200}``, or every split for training), generating what is missing.

    A folder that is not there or empty is the demo's; one with files is the demo's when it holds
    :data:`MARKER` or its first val image is the demo's (a folder an earlier demo or ``groundkit
    generate --seed 0`` made); any other folder is an InputError and is not written into.
    Every image is a function of the seed and its index alone, so a benchmark extended in place
    rewrites its files with the same bytes.
    """
    import os

    from groundkit._io import write_json
    from groundkit.data.synthetic import generate_benchmark

    have = demo_benchmark_sizes(root)
    if all(have.get(split, 0) >= n for split, n in sizes.items()):
        print(f"benchmark: {root} (already there: {have})")
        return root
    target = {split: max(have.get(split, 0), sizes.get(split, 0))
              for split in DEMO_SIZES if split in have or split in sizes}
    marker = {"made_by": "groundkit demo", "seed": DEMO_SEED, "image_size": DEMO_IMAGE_SIZE}
    write_json(root / MARKER, {**marker, "sizes": have}, indent=2)  # claimed before it is written
    workers = min(4, os.cpu_count() or 1)
    print(f"benchmark: generating {root} (seed {DEMO_SEED}, {target}, {workers} processes)")
    generate_benchmark(root, seed=DEMO_SEED, sizes=target, image_size=DEMO_IMAGE_SIZE,
                       workers=workers)
    write_json(root / MARKER, {**marker, "sizes": target}, indent=2)
    return root


def demo_benchmark_sizes(root: Path) -> dict[str, int]:
    """The images per split of the demo's benchmark in ``root`` (``{}``: none yet); an InputError
    when ``root`` is something else."""
    from groundkit.errors import InputError

    if not root.exists():
        return {}
    if root.is_dir():
        made = _marker(root)
        if made is not None:
            return {split: n for split, n in made["sizes"].items() if _split_there(root, split, n)}
        if not any(root.iterdir()):
            return {}
        if _first_val_image_is_the_demos(root):
            counts = {split: len(list((root / "images" / split).glob("*.png")))
                      for split in DEMO_SIZES}
            return {split: n for split, n in counts.items() if _split_there(root, split, n)}
    raise InputError(f"--data {root}: exists and is not a synthetic benchmark made by groundkit "
                     f"demo (no {MARKER} in it, and its images are not the demo's); the demo never "
                     f"writes into a folder it did not make: pass a new or empty folder, e.g. "
                     f"--data data/demo")


def _marker(root: Path) -> dict[str, Any] | None:
    """The demo's record in ``root`` when it is there and says seed 0 at 128 px."""
    import json

    try:
        made = json.loads((root / MARKER).read_text())
        sizes = {str(k): int(v) for k, v in made["sizes"].items()}
        ours = (made["seed"], made["image_size"]) == (DEMO_SEED, DEMO_IMAGE_SIZE)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return {**made, "sizes": sizes} if ours else None


def _split_there(root: Path, split: str, n: int) -> bool:
    """The split's annotation files and its last image (index ``n - 1``) exist."""
    from groundkit.data.synthetic.writer import image_id

    ann = root / "annotations"
    return (n > 0 and (ann / f"png_coco_{split}.json").is_file()
            and (ann / f"panoptic_{split}.json").is_file()
            and (root / "refcoco" / "instances.json").is_file()
            and (root / "images" / split / f"{image_id(split, n - 1):012d}.png").is_file())


def _first_val_image_is_the_demos(root: Path) -> bool:
    import numpy as np

    from groundkit.data.images import read_image
    from groundkit.data.synthetic.scene import make_scene
    from groundkit.data.synthetic.writer import image_id, scene_rng
    from groundkit.errors import InputError

    path = root / "images" / "val" / f"{image_id('val', 0):012d}.png"
    if not path.is_file():
        return False
    try:
        found = read_image(path)
    except InputError:  # not an image: not the demo's
        return False
    scene = make_scene(scene_rng(DEMO_SEED, "val", 0), DEMO_IMAGE_SIZE)
    return found.shape == scene.image.shape and bool(np.array_equal(found, scene.image))


# --- models ----------------------------------------------------------------------------------

def bundled_checkpoints(model: str | None = None, task: str | None = None) -> list[str]:
    """The bundled checkpoints, in task-family order, of ``model`` / the family ``task`` names
    when given; an InputError when none is bundled."""
    from groundkit.engine.checkpoint import checkpoint_meta
    from groundkit.engine.tasks import FAMILIES
    from groundkit.errors import InputError
    from groundkit.hub import bundled_names, resolve_checkpoint
    from groundkit.models import model_spec_of

    family = demo_family(task) if task else None
    found = []
    for name in bundled_names():
        model_type = checkpoint_meta(resolve_checkpoint(name)).get("model_type")
        its_family = model_spec_of(model_type).family
        if model in (None, model_type) and family in (None, its_family):
            found.append((list(FAMILIES).index(its_family), name))
    if not found:
        wanted = " ".join(f"--{k} {v}" for k, v in (("model", model), ("task", task)) if v)
        raise InputError(f"no bundled checkpoint for {wanted} (bundled: "
                         f"{', '.join(bundled_names()) or 'none'}); train one from random weights "
                         f"with `groundkit demo --train {wanted}`")
    return [name for _, name in sorted(found)]


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


# --- the report ------------------------------------------------------------------------------

def write_demo_page(checkpoints: Sequence[tuple[str | Path, str]], data: Path, out: Path,
                    gallery: int, *, start: float | None = None, trained: bool = False) -> Path:
    """Evaluate every ``(checkpoint, where it comes from)`` on the val split of ``data`` into
    ``out/<name>/`` (what ``groundkit evaluate --pred-out`` writes, ``scores.json``, the curves
    and a gallery of the ``gallery`` worst items) and write ``out/index.html`` (and, unless
    ``trained``, ``out/train/index.html`` when no ``--train`` run wrote it: how to make it)."""
    from groundkit._io import write_bytes
    from groundkit.commands.demo_page import FamilySection, render_page
    from groundkit.engine.tasks import FAMILIES, get_task
    from groundkit.models.published import published

    by_family: dict[str, list[Any]] = {}
    for checkpoint, source in checkpoints:
        family, report = evaluate_for_page(checkpoint, source, data, out, gallery)
        by_family.setdefault(family, []).append(report)
    sections = []
    for family in (f for f in FAMILIES if f in by_family):
        task, models = get_task(family), by_family[family]
        papers: list[Any] = []
        for paper in (p for m in models for p in published(m.model_type)):
            papers += [paper] if paper not in papers else []
        sections.append(FamilySection(family, task.heading or family, task.metric_note,
                                      task.case_note, models, papers))
    seconds = None if start is None else time.time() - start
    title = "groundkit demo: trained from random weights" if trained else "groundkit demo"
    html = render_page(title, _intro(data, sections, seconds, trained), sections,
                       _outro(out, sections, trained))
    page = out / "index.html"
    write_bytes(page, html.encode("utf-8"))
    if not trained and not (out / "train" / "index.html").exists():  # the page links to it
        write_train_placeholder(out / "train" / "index.html")
    return page


def evaluate_for_page(checkpoint: str | Path, source: str, data: Path, out: Path,
                      gallery: int) -> tuple[str, Any]:
    """Evaluate one checkpoint into ``out/<name>/`` and draw its gallery; its family and
    :class:`~groundkit.commands.demo_page.ModelReport`."""
    from groundkit.commands.demo_page import GalleryEntry, ModelReport
    from groundkit.commands.evaluate import evaluate_checkpoint, write_gallery
    from groundkit.data.formats import write_scores

    name = Path(str(checkpoint)).name
    folder = out / name
    print(f"\n{name}: {source}")
    clock = time.time()
    report = evaluate_checkpoint(checkpoint, data, "val", folder)
    seconds = {"load, predict, score": time.time() - clock}
    print(report.table)
    write_scores(folder / "scores.json", report.evaluation.scores())
    clock = time.time()
    plot = folder / "recall_curves.png"
    drew = report.evaluation.plot(plot)
    seconds["curves"] = time.time() - clock
    clock = time.time()
    drawn, scored = [], None
    if gallery > 0:
        drawn, scored = write_gallery(report, folder, folder / "gallery", gallery, name)
    entries = [GalleryEntry(_relative(path, out), case.label, case.mean_iou, case.ious)
               for path, case in drawn]
    seconds["gallery"] = time.time() - clock
    files = [_relative(p, out) + ("/" if p.is_dir() else "")
             for p in [*report.files, folder / "scores.json"]]
    model_type = report.cfg.model_type
    return report.task.name, ModelReport(
        name, model_type, source, report.evaluation.log_metrics(), report.table, files,
        _relative(plot, out) if drew else None, entries, scored, report.task.unit, seconds)


def _relative(path: Path, out: Path) -> str:
    return Path(path).relative_to(out).as_posix()


def _intro(data: Path, sections: Sequence[Any], seconds: float | None, trained: bool) -> str:
    from html import escape

    models = sum(len(s.models) for s in sections)
    took = "" if seconds is None else f" This page took {seconds:.0f} s to make."
    times = "".join(f"<li>{escape(m.name)}: " + ", ".join(f"{k} {v:.1f} s"
                                                         for k, v in m.seconds.items()) + "</li>"
                    for s in sections for m in s.models)
    what = ("a model trained here from random weights" if trained
            else f"the {models} models bundled with the package")
    return (f"<p>What this is: {what}, run on the val split of the embedded synthetic benchmark "
            f"(<code>{escape(str(data))}</code>: shapes on textured stuff, 128 px, narratives and "
            f"referring expressions written from templates, seed {DEMO_SEED}) and scored with the "
            f"field's metrics, computed as the official code computes them. The models are small "
            f"(CPU-sized) and trained on this synthetic data only; every number in the "
            f"<i>ours</i> columns is on it. The papers' numbers beside them are on real data with "
            f"full-size models: for scale, not for comparison.{took}</p>"
            f"<details><summary>Where the time went</summary><ul class=\"note\">{times}</ul>"
            f"</details>")


def _outro(out: Path, sections: Sequence[Any], trained: bool) -> str:
    if trained:
        back = ('<p><a href="../index.html">The bundled models</a> (<code>groundkit demo'
                '</code>).</p>') if (out.parent / "index.html").exists() else ""
        return back
    return ('<h2 id="train">From random weights</h2>\n<p>Everything above uses the checkpoints '
            "bundled with the package. <code>groundkit demo --train</code> runs the first demo's "
            "recipe instead: it generates the full benchmark (12,000 training images), trains "
            "PPMN from random weights with <code>configs/ppmn_synthetic.yaml</code> (6 epochs), "
            f"evaluates it and writes <a href=\"train/index.html\">train/index.html</a>: "
            f"{TRAIN_TIME}. <code>--model drmn</code>, <code>--task panoptic</code> or "
            "<code>--task referring</code> train another recipe; <code>--train-images N</code> "
            "trains on fewer images.</p>")


def write_train_placeholder(path: Path) -> None:
    """``OUT/train/index.html`` before any ``--train`` run: what it would do."""
    from groundkit._io import write_bytes
    from groundkit.commands.demo_page import render_page

    text = ("<p>Not run yet. <code>groundkit demo --train</code> generates the full benchmark "
            "(12,000 training images), trains PPMN from random weights with "
            "<code>configs/ppmn_synthetic.yaml</code>, evaluates it and writes its report here: "
            f"{TRAIN_TIME}.</p>"
            '<p><a href="../index.html">The bundled models</a> (<code>groundkit demo</code>).</p>')
    write_bytes(path, render_page("groundkit demo: trained from random weights", text, [])
                .encode("utf-8"))
