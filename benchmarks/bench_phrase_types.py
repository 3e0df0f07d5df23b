"""Where a grounding model loses AR on things: per phrase type, and against the stride-4 ceiling.

Thing phrases of a split are sorted by keywords into relations ("the star left of the circle"),
extremes ("the topmost diamond"), plurals (more than one segment) and plain phrases ("a small red
heart"); for each type it prints the count, PNG AR, acc@0.5 and the share scored below 0.1 IoU (the
wrong object or nothing). The ceiling row scores the ground truth itself, area-downsampled to the
stride-4 grid and post-processed like a prediction: what a perfect map on that grid would reach.

    python benchmarks/bench_phrase_types.py --checkpoint ppmn-synthetic --data data/synthetic
"""
from __future__ import annotations

import argparse
import re

import numpy as np

RELATION = re.compile(r"\b(left of|right of|above|below|next to|near|beside|under|on top)\b")
EXTREME = re.compile(r"(most\b|largest|smallest|biggest|lowest|highest)")


def phrase_type(text: str, num_segments: int) -> str:
    if RELATION.search(text):
        return "relation"
    if EXTREME.search(text):
        return "extreme"
    return "plural" if num_segments > 1 else "plain"


def row(name: str, ious: np.ndarray) -> str:
    """One line: count, PNG AR (the official area under recall over IoU thresholds), share < 0.1."""
    from groundkit.metrics.png_ar import accuracy_at_half, average_recall

    return (f"{name:<18}{len(ious):>6}{100 * average_recall(ious):>8.1f}"
            f"{100 * accuracy_at_half(ious):>10.1f}{100 * (ious < 0.1).mean():>10.1f}")


def ceiling_ious(dataset) -> np.ndarray:
    """IoU of each grounded phrase's own stride-4 target, post-processed as a prediction."""
    from groundkit.models.grounding import postprocess_grounding

    out = []
    for index, narrative in enumerate(dataset.narratives):
        item = dataset[index]
        masks, _ = postprocess_grounding(item["masks"], item["input_size"], item["orig_size"])
        truth = dataset.panoptic.union_masks(narrative.image_id,
                                             [u.segment_ids for _, u in narrative.grounded()])
        for pred, gt in zip(masks.numpy(), truth):
            out.append((pred & gt).sum() / max((pred | gt).sum(), 1))
    return np.array(out)


def main() -> None:
    from groundkit.data.grounding import GroundingDataset
    from groundkit.engine.grounding import evaluate_split, load_grounding_model

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or bundled name")
    parser.add_argument("--data", required=True, help="data folder in the COCO/PNG layout")
    parser.add_argument("--split", default="val")
    args = parser.parse_args()

    model, cfg = load_grounding_model(args.checkpoint)
    dataset = GroundingDataset.from_root(args.data, args.split, cfg.data.resize)
    phrases, _ = evaluate_split(model, dataset, 16, progress=False)
    texts = [n.caption[u.span[0]:u.span[1]].lower() for n in dataset.narratives
             for _, u in n.grounded()]
    kinds = np.array([phrase_type(t, n) for t, n in zip(texts, phrases.num_segments)])
    things = phrases.is_thing
    print(f"{args.checkpoint} on {args.data} [{args.split}]: thing phrases")
    print(f"{'type':<18}{'n':>6}{'AR':>8}{'acc@0.5':>10}{'% < 0.1':>10}")
    for kind in ("plain", "relation", "extreme", "plural"):
        print(row(kind, phrases.ious[things & (kinds == kind)]))
    print(row("all things", phrases.ious[things]))
    print(row("stride-4 ceiling", ceiling_ious(dataset)[things]))


if __name__ == "__main__":
    main()
