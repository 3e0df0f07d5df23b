"""Where a grounding model (PPMN or DRMN) gains and loses AR on a split; prints tables.

    python benchmarks/analyze_grounding.py rounds --checkpoint drmn-synthetic --data /tmp/unseen
    python benchmarks/analyze_grounding.py phrase-types --checkpoint ppmn-synthetic --data data/synthetic

``rounds``: PNG AR of the maps after each round (round 0: the first matching; the prediction is
the last round's maps), per split of the AR table: what each refinement round (PPMN's LCPA,
DRMN's deformable refinement) adds.

``phrase-types``: thing phrases sorted by keywords into relations ("the star left of the
circle"), extremes ("the topmost diamond"), plurals (more than one segment) and plain phrases ("a
small red heart"); for each type the count, PNG AR, acc@0.5 and the share scored below 0.1 IoU
(the wrong object or nothing). The ceiling row scores the ground truth itself, area-downsampled to
the stride-4 grid and post-processed like a prediction: what a perfect map on that grid reaches.
"""
from __future__ import annotations

import argparse
import re

import numpy as np
import torch

COLUMNS = ("overall", "things", "stuff", "singulars", "plurals")
RELATION = re.compile(r"\b(left of|right of|above|below|next to|near|beside|under|on top)\b")
EXTREME = re.compile(r"(most\b|largest|smallest|biggest|lowest|highest)")


def rounds(model, dataset, args: argparse.Namespace) -> None:
    from groundkit.engine.grounding import GroundingTask

    with torch.no_grad():  # count the rounds on a dummy image and phrase
        features = model.encode_images(torch.zeros(1, 3, 64, 64))
        count = len(model.round_logits(features, model.encode_text(["a"], [[(0, 1)]])))
    print(f"{args.checkpoint} on {args.data} [{args.split}], AR of each round's maps")
    print(f"{'round':<7}" + "".join(f"{c:>11}" for c in COLUMNS))
    for r in range(count):
        model.predict_round = r
        scores = GroundingTask().evaluate(model, dataset, args.batch_size, progress=False).scores()
        print(f"{r:<7}" + "".join(f"{100 * scores[c]['ar']:11.2f}" for c in COLUMNS))


def phrase_types(model, dataset, args: argparse.Namespace) -> None:
    from groundkit.engine.grounding import GroundingTask

    phrases = GroundingTask().evaluate(model, dataset, args.batch_size, progress=False).phrases
    texts = [n.caption[u.span[0]:u.span[1]].lower() for n in dataset.narratives
             for _, u in n.grounded()]
    kinds = np.array([phrase_type(t, n) for t, n in zip(texts, phrases.num_segments)])
    things = phrases.is_thing
    print(f"{args.checkpoint} on {args.data} [{args.split}]: thing phrases")
    print(f"{'type':<18}{'n':>6}{'AR':>8}{'acc@0.5':>10}{'% < 0.1':>10}")
    for kind in ("plain", "relation", "extreme", "plural"):
        print(type_row(kind, phrases.ious[things & (kinds == kind)]))
    print(type_row("all things", phrases.ious[things]))
    print(type_row("stride-4 ceiling", ceiling_ious(dataset)[things]))


def phrase_type(text: str, num_segments: int) -> str:
    if RELATION.search(text):
        return "relation"
    if EXTREME.search(text):
        return "extreme"
    return "plural" if num_segments > 1 else "plain"


def type_row(name: str, ious: np.ndarray) -> str:
    """Count, PNG AR (the official area under recall over IoU thresholds), acc@0.5, share < 0.1."""
    from groundkit.metrics.png_ar import accuracy_at_half, average_recall

    return (f"{name:<18}{len(ious):>6}{100 * average_recall(ious):>8.1f}"
            f"{100 * accuracy_at_half(ious):>10.1f}{100 * (ious < 0.1).mean():>10.1f}")


def ceiling_ious(dataset) -> np.ndarray:
    """IoU of each grounded phrase's own stride-4 target, post-processed as a prediction."""
    from groundkit.metrics.png_ar import mask_ious
    from groundkit.models.grounding import postprocess_grounding

    out = []
    for index, narrative in enumerate(dataset.narratives):
        item = dataset[index]
        masks, _ = postprocess_grounding(item["masks"], item["input_size"], item["orig_size"])
        truth = dataset.panoptic.union_masks(narrative.image_id,
                                             [u.segment_ids for _, u in narrative.grounded()])
        out.append(mask_ious(masks.numpy(), truth))
    return np.concatenate(out)


def main() -> None:
    from groundkit.engine.grounding import GroundingTask

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("analysis", choices=("rounds", "phrase-types"))
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or bundled name")
    parser.add_argument("--data", required=True, help="data folder in the COCO/PNG layout")
    parser.add_argument("--split", default="val")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    task = GroundingTask()
    model, cfg = task.load(args.checkpoint)
    dataset = task.dataset(cfg, args.data, args.split)
    {"rounds": rounds, "phrase-types": phrase_types}[args.analysis](model, dataset, args)


if __name__ == "__main__":
    main()
