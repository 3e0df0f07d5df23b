"""Two-stage referring on one split: the same matcher given K proposals from each source.

VL-NMS's claims in direction (its Tables 1-3): the referent and the contextual objects are more
often among K query-aware proposals (VL-NMS FC / Trans) than among the K most confident ones (the
query-agnostic baseline), and the same matcher grounds better with them, closer to its ceiling on
the ground-truth boxes. Every number comes from the prediction files, as ``groundkit evaluate``
scores them; ``--pred-out DIR`` keeps them (``DIR/<source>_k<K>/predictions.json``) for an
independent re-scoring.

    python benchmarks/two_stage_referring.py --data data/synthetic --split val \\
        --matcher matcher-synthetic --vlnms vlnms-fc-synthetic vlnms-trans-synthetic --ks 1 2 3 5

Columns: REC Acc@0.5 and RES oIoU of the matcher's choice; R@K the referent's recall among the
K proposals (IoU > 0.5), C@K the contextual objects' (the other objects the expression names, as
the data's refs give them; the synthetic benchmark knows them); mean K the proposals given.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from groundkit.engine.tasks import get_task
from groundkit.metrics.report import pct


def run_setting(task, model, dataset, source: str, k: int, pred_dir: Path, batch_size: int) -> dict:
    """The matcher's scores with ``k`` proposals from ``source`` (files written to ``pred_dir``)."""
    task.set_inference_options(model, {"proposals": source, "top_k": k})
    pred_dir.mkdir(parents=True, exist_ok=True)
    task.predict(model, dataset, pred_dir, batch_size, progress=False)
    return task.score(dataset, pred_dir).scores()


def row(name: str, k: int, group: str, s: dict) -> str:
    p = s.get("proposals", {})
    cells = [pct(s["rec"]["acc@0.5"]), pct(s["res"]["oiou"]),
             pct(p.get(f"recall@{k}", float("nan"))), pct(p.get(f"context_recall@{k}", float("nan"))),
             f"{p.get('mean_proposals', float('nan')):.2f}"]
    return f"{name:24} {k:>2} {group:11} " + " ".join(f"{c:>7}" for c in cells) + f" {s['rec']['n']:>6}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a RefCOCO-format folder (groundkit generate)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--matcher", default="matcher-synthetic", help="a matcher checkpoint")
    parser.add_argument("--vlnms", nargs="*", default=["vlnms-fc-synthetic", "vlnms-trans-synthetic"],
                        help="VL-NMS checkpoints to compare with the baseline")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3, 5])
    parser.add_argument("--no-gt", action="store_true", help="leave out the ground-truth ceiling")
    parser.add_argument("--max-items", type=int, help="the first N expressions only")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pred-out", type=Path, help="keep the prediction files here")
    parser.add_argument("--json", type=Path, help="write every score here")
    args = parser.parse_args(argv)

    task = get_task("referring")
    model, cfg = task.load(args.matcher)
    dataset = task.dataset(cfg, args.data, args.split, max_items=args.max_items)
    settings = [(source, k) for source in ["baseline", *args.vlnms] for k in sorted(set(args.ks))]
    if not args.no_gt:
        settings.append(("gt", 0))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.pred_out or Path(tmp)
        for source, k in settings:
            name = f"{Path(source).name}_k{k}" if source != "gt" else "gt"
            results[name] = run_setting(task, model, dataset, source, k or 1, root / name,
                                        args.batch_size)
            print(f"done: {name}", flush=True)

    print(f"\nthe matcher {args.matcher} on {args.data} [{args.split}], {len(dataset)} expressions")
    header = f"{'proposals':24} {'K':>2} {'expressions':11} " + " ".join(
        f"{c:>7}" for c in ("REC", "oIoU", "R@K", "C@K", "mean K")) + f" {'n':>6}"
    print(header)
    for (source, k), (name, scores) in zip(settings, results.items()):
        label = "ground-truth boxes" if source == "gt" else Path(source).name
        for group, s in scores.items():
            print(row(label, k, group, s) if source != "gt" else
                  row(label, 0, group, s).replace(" nan", "   -"))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
        print(f"scores: {args.json}")
    if args.pred_out:
        print(f"predictions: {args.pred_out}/<setting>/predictions.json")


if __name__ == "__main__":
    main()
