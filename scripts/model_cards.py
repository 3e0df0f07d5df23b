"""Write the model card (what it was trained on, its input size, its scores) into bundled models.

    python scripts/model_cards.py                       # every bundle listed in CARDS
    python scripts/model_cards.py vlnms-fc-synthetic    # one
    python scripts/model_cards.py --check               # list each bundle's card; 1 if one lacks it

A card lives in the checkpoint's header (``meta.trained_on``, ``meta.input_size``,
``meta.scores``) and in the JSON beside it; :func:`groundkit.hub.write_model_card` rewrites the
file with the same tensors (checked bit for bit). A new bundle gets one entry in CARDS, with the
scores of its line in README.md's model zoo (docs/models.md).
"""
from __future__ import annotations

import argparse
import json
import sys

from groundkit.hub import bundled_names, checkpoint_header, model_card, write_model_card

SHAPES = ("groundkit's synthetic benchmark (`groundkit generate`, seed 0): coloured shapes on "
          "textured stuff regions")
NARRATIVES = SHAPES + ", narratives from templates"


def synthetic(description: str, image_size: int = 128, **counts: int) -> dict:
    return {"data": "synthetic", "description": description, "image_size": image_size, **counts}


def proposal_card(val: list[float], unseen: list[float]) -> tuple[dict, int, dict]:
    """A VL-NMS bundle's card: its proposals' referent recall at 3, and REC / RES of
    matcher-synthetic given them (docs/two-stage.md)."""
    return (synthetic(SHAPES + ", referring expressions from templates (RefCOCO format); the first "
                      "23,000 training sentences; candidates from panoptic-synthetic's detector",
                      sentences=23000, epochs=1), 128,
            {"metric": "recall of the referent among 3 proposals / REC Acc@0.5 / RES oIoU of "
                       "matcher-synthetic given 3 of them",
             "val": val, "unseen_seed_7": unseen,
             "baseline_proposals_unseen_seed_7": [54.4, 50.7, 33.5], "input": "128 px letterbox",
             "source": "docs/two-stage.md"})


# name -> (trained_on, input_size, scores); scores in percent, from README.md's model zoo and
# docs/results.md / docs/referring.md ("unseen seed": a split generated with seed 7).
CARDS: dict[str, tuple[dict, int, dict]] = {
    "ppmn-synthetic": (
        synthetic(NARRATIVES, images=12000, epochs=10), 128,
        {"metric": "PNG AR with the bundled inference options (refine_radius=6 refine_eps=1e-5 "
                   "threshold=0.35; without them 72.9 / 73.3 / 75.8)",
         "val": 80.9, "unseen_seed_7": 81.8, "free_text_captions": 85.0,
         "source": "docs/results.md, The bundled checkpoints; masks refined on the image"}),
    "drmn-synthetic": (
        synthetic(NARRATIVES, images=12000, epochs=10), 128,
        {"metric": "PNG AR with the bundled inference options (refine_radius=6 refine_eps=1e-5 "
                   "threshold=0.35; without them 72.1 / 71.9 / 74.8)",
         "val": 81.0, "unseen_seed_7": 81.0, "free_text_captions": 84.3,
         "source": "docs/results.md, PPMN against DRMN; masks refined on the image"}),
    "panoptic-synthetic": (
        synthetic(SHAPES + " (9 thing and 7 stuff classes)", images=2000, epochs=24), 128,
        {"metric": "PQ", "val": 70.0, "unseen_seed_7": 70.0,
         "source": "docs/results.md, panoptic"}),
    "pbrec-synthetic": (
        synthetic(SHAPES + ", referring expressions from templates (RefCOCO format); one epoch "
                  "over all 92,282 training sentences, then one over the first 40,000 at a lower "
                  "learning rate (one GPU, bfloat16 autocast), then one over the first 25,600 at "
                  "a lower one still, one over the first 51,200 at the same, 450 steps of 64 "
                  "over all at a lower one, then 600 and 450 steps of 64 over all with half the "
                  "sentences said in other phrasings (data.rephrase=0.5; CPU), then 700 more with "
                  "the rephrasing's third version (relations also said from the anchor's side), then "
                  "420 more with the text encoder's top two layers trained too, then 240 more "
                  "with the rephrasing's eighth version (the anchor as the subject or named "
                  "first, extremes by negation and by quantifiers, in minimal pairs) and "
                  "low-rank adapters (rank 16) on the text encoder's lower four layers; stored "
                  "in float16",
                  sentences=92282, epochs=9), 128,
        {"metric": "REC Acc@0.5 / RES oIoU with the bundled inference options (top_k=1 "
                   "joint_ranking=true test_scales=[1.25] mask_points=8 refine_radius=6 "
                   "refine_eps=1e-5 mask_threshold=0.35 mask_box_margin=3)",
         "val": [87.4, 75.3], "unseen_seed_7": [84.9, 73.8],
         "free_text_expressions_val": [80.7, 66.2], "input": "128 px letterbox",
         "source": "docs/referring.md"}),
    "vlnms-fc-synthetic": proposal_card(val=[63.0, 59.8, 39.1], unseen=[61.9, 57.5, 38.4]),
    "vlnms-trans-synthetic": proposal_card(val=[69.0, 65.0, 39.9], unseen=[67.9, 63.2, 41.4]),
    "matcher-synthetic": (
        synthetic(SHAPES + ", referring expressions from templates (RefCOCO format); the first "
                  "46,000 training sentences, on the ground-truth boxes; region features from "
                  "panoptic-synthetic", sentences=46000, epochs=1), 128,
        {"metric": "REC Acc@0.5 / RES oIoU with 5 vlnms-trans-synthetic proposals (the bundled "
                   "inference options)",
         "val": [77.0, 48.5], "unseen_seed_7": [73.9, 48.8],
         "ground_truth_boxes_unseen_seed_7": [89.5, 65.3], "input": "128 px letterbox",
         "source": "docs/two-stage.md"}),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="bundles to describe (default: all in CARDS)")
    parser.add_argument("--check", action="store_true", help="only list the cards")
    args = parser.parse_args()
    if args.check:
        missing = []
        for name in bundled_names():
            card = model_card(checkpoint_header(name))
            print(f"{name}: {json.dumps(card) if card else 'NO CARD'}")
            missing += [] if card.get("trained_on") else [name]
        return 1 if missing else 0
    for name in args.names or list(CARDS):
        if name not in CARDS:
            raise SystemExit(f"{name}: no entry in CARDS ({', '.join(CARDS)}); add one first")
        trained_on, input_size, scores = CARDS[name]
        print(f"wrote the card of {name} into {write_model_card(name, trained_on, input_size, scores)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
