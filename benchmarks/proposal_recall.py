"""Recall of the referent among the first K proposals: the query-agnostic baseline against VL-NMS.

The paper's Fig. 2 / Table 1 question on one split: how often is the referent (IoU > 0.5) among
the K proposals a second-stage matcher would see? Both rows rank the same candidates (the frozen
panoptic model's points above delta, per-class NMS 0.3): the baseline by the detector's
confidence (``rank_by=confidence``), VL-NMS by relatedness x confidence. The numbers come from
the prediction files, as ``groundkit evaluate`` scores them (``metrics.files.score_proposals``).

    groundkit generate --out /tmp/vt --seed 0 --train 20 --val 10 --test 0
    python benchmarks/proposal_recall.py --data /tmp/vt --split val                  # baseline only
    python benchmarks/proposal_recall.py --data /tmp/vt --checkpoint runs/vlnms_fc_synthetic

Without ``--checkpoint`` only the baseline of ``--proposal-source`` is measured (an untrained
relatedness module is built but not used for the ranking).
"""
from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace

from groundkit.config import load_config
from groundkit.data.formats import read_referring_predictions
from groundkit.engine.referring import PREDICTIONS, VLNMSExperiment
from groundkit.engine.tasks import get_task
from groundkit.metrics.files import referring_by_sentence, score_proposals
from groundkit.metrics.report import pct


def recall_rows(task, model, dataset, ks, batch_size):
    """``{group: recall_at_k scores}`` of ``model``'s prediction files on ``dataset``."""
    with tempfile.TemporaryDirectory() as tmp:
        task.predict(model, dataset, tmp, batch_size, progress=False)
        path = f"{tmp}/{PREDICTIONS}"
        predictions = referring_by_sentence(read_referring_predictions(path), path)
    groups = {"all": dataset.samples}
    for sample, kind in zip(dataset.samples, dataset.types):
        if kind:
            groups.setdefault(kind, []).append(sample)
    return {g: score_proposals(samples, dataset.instances, predictions, ks)[0]
            for g, samples in groups.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a RefCOCO-format folder (groundkit generate)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--checkpoint", help="a VL-NMS checkpoint (groundkit train, model_type vlnms)")
    parser.add_argument("--proposal-source", default="panoptic-synthetic",
                        help="the panoptic checkpoint of the baseline without --checkpoint")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3, 5, 10])
    parser.add_argument("--max-items", type=int, help="the first N expressions only")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)

    task = get_task("referring")
    if args.checkpoint:
        model, cfg = task.load(args.checkpoint)
    else:
        cfg = load_config(VLNMSExperiment, None, [f"model.proposal_source={args.proposal_source}"])
        model = task.build_model(cfg)
    dataset = task.dataset(cfg, args.data, args.split, max_items=args.max_items)
    ks = tuple(sorted(set(args.ks)))
    rows = {}
    for name, rank_by in (("baseline (c)", "confidence"), ("VL-NMS (r x c)", "relatedness")):
        if rank_by == "relatedness" and not args.checkpoint:
            continue
        model.cfg = replace(model.cfg, rank_by=rank_by, top_k=max(ks), masks=False)
        rows[name] = recall_rows(task, model, dataset, ks, args.batch_size)

    print(f"recall of the referent (IoU > 0.5) among the first K proposals: {args.data} "
          f"[{args.split}], {len(dataset)} expressions, candidates of {cfg.model.proposal_source} "
          f"above delta {cfg.model.delta}, per-class NMS {cfg.model.nms_thresh}")
    print(f"{'ranking':16} {'expressions':12} " + " ".join(f"{'R@' + str(k):>7}" for k in ks)
          + f" {'mean K':>7} {'n':>6}")
    for name, groups in rows.items():
        for group, r in groups.items():
            print(f"{name:16} {group:12} " + " ".join(f"{pct(r[f'recall@{k}']):>7}" for k in ks)
                  + f" {r['mean_proposals']:>7.2f} {r['n']:>6}")


if __name__ == "__main__":
    main()
