"""``groundkit evaluate --checkpoint CKPT --data DIR --split val``: run a model on a split and score it.

Grounding models (PPMN, DRMN) print the PNG Average Recall table and draw the recall curves;
panoptic models print PQ / SQ / RQ. ``--pred-out`` keeps the predictions in the project's formats
(grounding: ``predictions.json``; panoptic: COCO panoptic JSON + PNG folder), so
``groundkit score`` or any other tool can re-score them.
"""
from __future__ import annotations

import argparse
from pathlib import Path


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
                        help="recall curves (default: DIR/recall_curves.png with --pred-out, "
                             "else recall_curves_<split>.png)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-items", type=int, help="evaluate the first N narratives only")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--merge", choices=("argmax", "heuristic"),
                        help="panoptic only: argmax over P (the paper) or Panoptic FPN's heuristic "
                             "merge (default: the checkpoint's setting)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from groundkit.engine.checkpoint import load_checkpoint
    from groundkit.hub import resolve_checkpoint

    _, meta = load_checkpoint(resolve_checkpoint(args.checkpoint))
    if meta.get("model_type") == "panoptic":
        from groundkit.engine.panoptic import evaluate_command
        return evaluate_command(args)
    return _evaluate_grounding(args)


def _evaluate_grounding(args: argparse.Namespace) -> int:
    from groundkit.api import default_device
    from groundkit.data.formats import write_grounding_predictions, write_scores
    from groundkit.data.grounding import GroundingDataset
    from groundkit.engine.grounding import evaluate_split, load_grounding_model
    from groundkit.metrics.report import plot_png_recall, png_table

    device = args.device or default_device()
    model, cfg = load_grounding_model(args.checkpoint, device)
    dataset = GroundingDataset.from_root(args.data, args.split, cfg.data.resize,
                                         max_items=args.max_items)
    phrases, records = evaluate_split(model, dataset, args.batch_size)
    scores = phrases.scores()
    print(png_table(scores, f"{cfg.model_type.upper()} on {args.data} [{args.split}], "
                            f"{len(dataset)} narratives; IoU at the original image resolution"))
    if args.pred_out:
        write_grounding_predictions(Path(args.pred_out) / "predictions.json", records)
        print(f"predictions: {Path(args.pred_out) / 'predictions.json'}")
    plot = args.plot or (Path(args.pred_out) / "recall_curves.png" if args.pred_out
                         else f"recall_curves_{args.split}.png")
    plot_png_recall(phrases, plot)
    print(f"recall curves: {plot}")
    if args.json:
        write_scores(args.json, scores)
    return 0
