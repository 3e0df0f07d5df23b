"""``groundkit evaluate --checkpoint CKPT --data DIR --split val``: run a model on a split and score it.

The checkpoint's task family decides the files and the table: grounding models (PPMN, DRMN)
print the PNG Average Recall table and draw the recall curves; panoptic models print PQ / SQ / RQ.
The scores printed are those of the prediction files; ``--pred-out`` keeps them in the project's
formats (grounding: ``predictions.json``; panoptic: COCO panoptic JSON + PNG folder), so
``groundkit score`` or any other tool can re-score them.

``--gallery N`` draws the N worst items (lowest mean IoU of their phrases, segments or box and
mask) as ground truth beside prediction, with a page ``index.html`` that lists each part's IoU,
into ``--gallery-out DIR``, else ``DIR/gallery/`` of ``--pred-out DIR``.

Nothing is written unless asked for: the curves go to ``--plot``, else beside ``--pred-out`` or
``--json``; a gallery needs one of its two folders; and every file written is printed.
"""
from __future__ import annotations

import argparse
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

MAX_LOADER_WORKERS = 64  # each is a process holding the dataset: a typo must not start thousands


def _loader_workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_LOADER_WORKERS:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {MAX_LOADER_WORKERS}, "
                                         f"got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="evaluate a checkpoint on a data split",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint folder/file or bundled name (ppmn-synthetic, ...)")
    parser.add_argument("--data", required=True, help="data folder in the COCO/PNG layout")
    parser.add_argument("--split", default="val", help="split name (default: val)")
    parser.add_argument("--json", metavar="OUT", help="write the scores (fractions) as JSON")
    parser.add_argument("--pred-out", metavar="DIR", help="write the predictions here")
    parser.add_argument("--plot", metavar="OUT.png",
                        help="recall curves, for families that draw them (default: "
                             "DIR/recall_curves.png with --pred-out, else OUT_recall_curves.png "
                             "beside --json OUT.json, else none)")
    parser.add_argument("--gallery", type=int, metavar="N",
                        help="draw the N worst items, ground truth beside prediction with each "
                             "part's IoU, into --gallery-out DIR, else DIR/gallery/ of --pred-out "
                             "DIR (one of the two is needed)")
    parser.add_argument("--gallery-out", metavar="DIR", help="where --gallery's pictures go")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=_loader_workers, default=0, metavar="N",
                        help="processes reading the images while the model runs (default 0: "
                             "in the main process; worth it beside a GPU)")
    parser.add_argument("--max-items", type=int, help="evaluate the first N narratives only")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--merge", choices=("argmax", "heuristic"),
                        help="panoptic only: argmax over P (the paper) or Panoptic FPN's heuristic "
                             "merge (default: the checkpoint's setting); short for model.merge=...")
    parser.add_argument("--proposals", metavar="gt|baseline|CKPT",
                        help="two-stage referring (matcher) only: the proposals the matcher "
                             "chooses among: the ground-truth boxes, the query-agnostic baseline, "
                             "or a VL-NMS checkpoint (e.g. vlnms-fc-synthetic); short for "
                             "model.proposals=...")
    parser.add_argument("--top-k", type=int, metavar="K",
                        help="two-stage referring (matcher, vlnms) only: proposals per "
                             "expression; short for model.top_k=K")
    parser.add_argument("--protocol", choices=("original", "ppmn"), default="original",
                        help="grounding only: IoUs at the original image resolution (default) or, "
                             "as PPMN and DRMN report, at 1/4 of the model's resized input (the "
                             "checkpoint's data.resize)")
    parser.add_argument("options", nargs="*", metavar="key=value",
                        help="inference options of the model config, e.g. threshold=0.4")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from groundkit._io import check_output_dir, check_output_file
    from groundkit.engine.distributed import resolve_device

    # Before the model runs: every output can be written, the device exists.
    if args.pred_out:
        check_output_dir(args.pred_out, "--pred-out")
    gallery = gallery_dir(args)
    if gallery is not None:
        check_output_dir(gallery, "--gallery-out" if args.gallery_out else "--gallery")
    if args.json:
        check_output_file(args.json, "--json")
    plot = plot_path(args)
    if plot is not None:
        check_output_file(plot, "--plot" if args.plot else "the recall curves (--plot)")
    resolve_device(args.device)
    options = list(args.options) + ([f"merge={args.merge}"] if args.merge else [])
    options += [f"proposals={args.proposals}"] if args.proposals else []
    options += [f"top_k={args.top_k}"] if args.top_k is not None else []
    keep = nullcontext(args.pred_out) if args.pred_out else tempfile.TemporaryDirectory()
    with keep as pred_dir:
        report = evaluate_checkpoint(args.checkpoint, args.data, args.split, pred_dir,
                                     batch_size=args.batch_size, max_items=args.max_items,
                                     device=args.device, options=options,
                                     protocol=args.protocol, workers=args.workers)
        print(report.table)
        if args.pred_out:
            print(f"predictions: {' and '.join(str(p) for p in report.files)}")
        if gallery is not None:  # inside: the cases are read back from the prediction files
            _print_gallery(write_gallery_page(report, pred_dir, gallery, args.gallery))
    if args.json:
        from groundkit.data.formats import write_scores
        write_scores(args.json, report.evaluation.scores())
        print(f"scores: {args.json}")
    if plot is not None and report.evaluation.plot(plot):
        print(f"recall curves: {plot}")
    return 0


def gallery_dir(args: argparse.Namespace) -> Path | None:
    """Where ``--gallery N`` draws: ``--gallery-out``, else ``DIR/gallery`` of ``--pred-out``;
    None without ``--gallery``. An InputError (before the model runs) for a gallery with
    nowhere to go (never the working directory), N < 1, or ``--gallery-out`` without N."""
    from groundkit.errors import InputError

    if args.gallery is None:
        if args.gallery_out:
            raise InputError("--gallery-out: say how many pictures with --gallery N")
        return None
    if args.gallery < 1:
        raise InputError(f"--gallery: expected N >= 1 pictures, got {args.gallery}")
    if args.gallery_out:
        return Path(args.gallery_out)
    if args.pred_out:
        return Path(args.pred_out) / "gallery"
    raise InputError("--gallery: say where the pictures go: --gallery-out DIR, or --pred-out DIR "
                     "(into DIR/gallery/); nothing is written into the working directory unasked")


def plot_path(args: argparse.Namespace) -> Path | None:
    """Where the curves go: ``--plot``, else beside ``--pred-out`` or ``--json``, else nowhere
    (the working directory gets nothing it was not asked for)."""
    if args.plot:
        return Path(args.plot)
    if args.pred_out:
        return Path(args.pred_out) / "recall_curves.png"
    if args.json:
        return Path(args.json).with_name(f"{Path(args.json).stem}_recall_curves.png")
    return None


@dataclass
class EvaluationReport:
    """What :func:`evaluate_checkpoint` found: the family, the model, its data and scores."""

    task: Any           # groundkit.engine.tasks.Task
    model: Any
    cfg: Any
    dataset: Any
    evaluation: Any     # groundkit.engine.tasks.Evaluation
    files: list[Path]   # the prediction files
    table: str


def evaluate_checkpoint(checkpoint: str, data: str | Path, split: str, pred_dir: str | Path, *,
                        batch_size: int | None = None, max_items: int | None = None,
                        device: str | None = None, options: Sequence[str] = (),
                        protocol: str = "original", workers: int = 0) -> EvaluationReport:
    """Load ``checkpoint``, predict ``split`` of ``data`` into ``pred_dir`` and score the files
    (``groundkit evaluate``, and the demo's report); ``batch_size`` defaults to the
    checkpoint's ``eval.batch_size``. ``protocol="ppmn"`` (grounding only): IoUs at 1/4 of the
    input the checkpoint's ``data.resize`` makes, as PPMN and DRMN report them."""
    from groundkit.engine.distributed import resolve_device
    from groundkit.engine.tasks import task_of_checkpoint
    from groundkit.errors import InputError

    task = task_of_checkpoint(checkpoint)
    if protocol not in task.protocols:
        raise InputError(f"--protocol {protocol}: {checkpoint} is a {task.name} model, scored "
                         f"with --protocol {' or '.join(task.protocols)} only (ppmn applies to "
                         f"grounding checkpoints: PPMN, DRMN)")
    model, cfg = task.load(checkpoint, resolve_device(device))
    task.set_inference_options(model, options)
    dataset = task.dataset(cfg, data, split, max_items=max_items)
    files = task.predict(model, dataset, pred_dir, batch_size or cfg.eval.batch_size,
                         workers=workers)
    if protocol == "original":
        evaluation = task.score(dataset, pred_dir)
    else:
        resize = cfg.data.resize
        evaluation = task.score(dataset, pred_dir, ppmn_size=(resize.short_side, resize.max_size))
    return EvaluationReport(task, model, cfg, dataset, evaluation, files,
                            evaluation.table(task.title(cfg, data, split, dataset)))


def worst_cases(cases: Iterable[Any], n: int) -> tuple[list[Any], int]:
    """The ``n`` cases with the lowest mean IoU, lowest first (dataset order among equals), and
    the number of cases with a scored part; cases with none are left out."""
    import heapq

    scored = [0]

    def with_parts() -> Iterable[Any]:
        for case in cases:
            if case.ious:
                scored[0] += 1
                yield case

    worst = heapq.nsmallest(n, with_parts(), key=lambda c: c.mean_iou)
    return worst, scored[0]


def write_gallery(report: EvaluationReport, pred_dir: str | Path, out_dir: str | Path, n: int,
                  name: str = "") -> tuple[list[tuple[Path, Any]], int]:
    """Draw the ``n`` worst items of ``report``'s split (:func:`worst_cases` of the family's
    :meth:`~groundkit.engine.tasks.Task.cases`, read back from the prediction files in
    ``pred_dir``) into ``out_dir/001.png``, ``002.png``, ...: ground truth beside prediction.

    Returns ``(path, case)`` of every picture, worst first, and the number of scored items."""
    from tqdm import tqdm

    from groundkit.api import predictor_class
    from groundkit.visualize import contact_sheet, save_image

    prefix = f"{name}: " if name else ""
    items = tqdm(report.task.cases(report.dataset, pred_dir), total=len(report.dataset),
                 desc=f"{prefix}IoU per item", unit=report.task.unit, leave=False)
    worst, scored = worst_cases(items, n)
    predictor = predictor_class(report.task.name).from_model(report.model, report.cfg)
    drawn = []
    for rank, case in enumerate(tqdm(worst, desc=f"{prefix}gallery", unit="picture",
                                     leave=False), 1):
        sheet = contact_sheet([predictor.draw(case.image, case.truth),
                               predictor.draw(case.image, case.prediction)], columns=2,
                              titles=["ground truth", f"prediction: mean IoU {case.mean_iou:.2f}"])
        path = Path(out_dir) / f"{rank:03d}.png"
        save_image(sheet, path)
        drawn.append((path, case))
    return drawn, scored


def write_gallery_page(report: EvaluationReport, pred_dir: str | Path, out_dir: str | Path,
                       n: int) -> list[Path]:
    """:func:`write_gallery` and ``out_dir/index.html``, a page of the pictures with each part's
    IoU (the demo report's gallery); returns every file written, the page first."""
    from groundkit._io import write_bytes
    from groundkit.commands.demo_page import GalleryEntry, gallery_page

    out_dir = Path(out_dir)
    drawn, scored = write_gallery(report, pred_dir, out_dir, n)
    entries = [GalleryEntry(path.name, case.label, case.mean_iou, case.ious)
               for path, case in drawn]
    title = report.table.strip().splitlines()[0] if report.table.strip() else "gallery"
    html = gallery_page(title, report.cfg.model_type, entries, scored, report.task.unit,
                        report.task.case_note or "the IoU of each part")
    page = out_dir / "index.html"
    write_bytes(page, html.encode("utf-8"))
    return [page, *(path for path, _ in drawn)]


def _print_gallery(files: list[Path]) -> None:
    page, pictures = files[0], files[1:]
    print(f"gallery: {page} ({len(pictures)} picture{'s' * (len(pictures) != 1)}, the worst "
          f"first)")
    for path in pictures:
        print(f"  {path}")
