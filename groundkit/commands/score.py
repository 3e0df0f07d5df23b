"""``groundkit score png|panoptic|rec|res``: score prediction files written by any tool.

Tables print percentages; ``--json`` writes fractions in [0, 1] (formats.md section 4).
"""
from __future__ import annotations

import argparse
import os
import sys

# More processes than this rarely pay for their start on a split of a few thousand images.
MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    """The cores this process may use (its affinity mask, as a container or taskset sets it), at
    most MAX_DEFAULT_WORKERS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, MAX_DEFAULT_WORKERS))


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("score", help="score prediction files against the ground truth",
                                   description=__doc__)
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)

    png = tasks.add_parser("png", help="panoptic narrative grounding: Average Recall")
    png.add_argument("--narratives", required=True, help="png_coco_<split>.json")
    png.add_argument("--panoptic-json", required=True, help="COCO panoptic JSON of the split")
    png.add_argument("--panoptic-dir", required=True, help="folder of its segment PNGs")
    png.add_argument("--pred", required=True, help="grounding predictions JSON")
    png.add_argument("--plot", metavar="OUT.png", help="also draw the recall-vs-IoU curves")
    png.add_argument("--protocol", choices=("original", "ppmn"), default="original",
                     help="IoUs at the original image resolution (default) or, as PPMN and DRMN "
                          "report, at 1/4 of the input resized by --ppmn-size")
    png.add_argument("--ppmn-size", default="800,1333", metavar="SHORT,MAX",
                     help="--protocol ppmn: the model's resize, short side and longest side "
                          "(default 800,1333, the papers')")

    pan = tasks.add_parser("panoptic", help="panoptic segmentation: PQ / SQ / RQ")
    pan.add_argument("--gt-json", required=True)
    pan.add_argument("--gt-dir", required=True)
    pan.add_argument("--pred-json", required=True)
    pan.add_argument("--pred-dir", required=True)
    pan.add_argument("--workers", type=_positive_int, default=default_workers(),
                     help="processes that score the images (default: the usable cores, at most "
                          f"{MAX_DEFAULT_WORKERS}); a small split is scored in one")

    for name, what in (("rec", "referring expression comprehension: Acc@0.5"),
                       ("res", "referring expression segmentation: oIoU, mIoU, Pr@X")):
        ref = tasks.add_parser(name, help=what)
        ref.add_argument("--refs", required=True,
                         help="refs(<splitBy>).p (a pickle, read as plain data only: a file "
                              "naming any class or function is refused)")
        ref.add_argument("--instances", required=True, help="instances.json")
        ref.add_argument("--split", required=True, help="val, test, testA, testB, ...")
        ref.add_argument("--pred", required=True, help="referring predictions JSON")

    for sub in tasks.choices.values():
        sub.add_argument("--json", metavar="OUT", help="write the scores (fractions) as JSON")
        sub.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from groundkit._io import check_output_file
    from groundkit._malloc import keep_freed_memory

    keep_freed_memory()  # per-image arrays reuse freed pages instead of faulting new ones in
    if args.json:
        check_output_file(args.json, "--json")
    if getattr(args, "plot", None):
        check_output_file(args.plot, "--plot")
    scores, missing = {"png": _png, "panoptic": _panoptic, "rec": _referring,
                       "res": _referring}[args.task](args)
    if missing:
        print(f"warning: {missing} samples have no prediction and count as failures (IoU 0)",
              file=sys.stderr)
    if args.json:
        from groundkit.data.formats import write_scores
        write_scores(args.json, scores)
    return 0


def _png(args: argparse.Namespace) -> tuple[dict, int]:
    from groundkit.metrics.files import score_png_files
    from groundkit.metrics.png_protocol import protocol_note
    from groundkit.metrics.report import plot_png_recall, png_table

    size = None if args.protocol == "original" else _ppmn_size(args.ppmn_size)
    phrases = score_png_files(args.narratives, args.panoptic_json, args.panoptic_dir, args.pred,
                              ppmn_size=size)
    scores = phrases.scores()
    print(png_table(scores, f"PNG Average Recall ({protocol_note(args.protocol, size)})"))
    if args.plot:
        plot_png_recall(phrases, args.plot)
        print(f"recall curves written to {args.plot}")
    return scores, phrases.missing


def _ppmn_size(text: str) -> tuple[int, int]:
    from groundkit.errors import InputError

    try:
        short, longest = (int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--ppmn-size: expected SHORT,MAX such as 800,1333, got {text!r}") from None
    if not 0 < short <= longest:
        raise InputError(f"--ppmn-size: expected 0 < SHORT <= MAX, got {text!r}")
    return short, longest


def _panoptic(args: argparse.Namespace) -> tuple[dict, int]:
    from groundkit.metrics.files import score_panoptic_files
    from groundkit.metrics.report import pq_table

    scores = score_panoptic_files(args.gt_json, args.gt_dir, args.pred_json, args.pred_dir,
                                  workers=args.workers)
    print(pq_table(scores))
    return scores, 0


def _referring(args: argparse.Namespace) -> tuple[dict, int]:
    from groundkit.metrics.files import score_referring_files
    from groundkit.metrics.report import pct

    scores, missing = score_referring_files(args.task, args.refs, args.instances, args.split,
                                            args.pred)
    names = [k for k in scores if k != "n"]
    print(f"{args.task.upper()} on {args.split} (original image resolution)")
    print(" ".join(f"{k:>7}" for k in names) + f" {'n':>7}")
    print(" ".join(f"{pct(scores[k]):>7}" for k in names) + f" {scores['n']:>7}")
    return scores, missing
