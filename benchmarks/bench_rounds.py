"""PNG AR of the maps after each round of a grounding model (round 0: the first matching).

The prediction is the last round's maps; scoring every earlier round shows what each refinement
round (PPMN's LCPA, DRMN's deformable refinement) adds, per split of the AR table.

    python benchmarks/bench_rounds.py --checkpoint drmn-synthetic --data /tmp/unseen --split val
"""
from __future__ import annotations

import argparse

import torch

COLUMNS = ("overall", "things", "stuff", "singulars", "plurals")


def main() -> None:
    from groundkit.data.grounding import GroundingDataset
    from groundkit.engine.grounding import evaluate_split, load_grounding_model

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or bundled name")
    parser.add_argument("--data", required=True, help="data folder in the COCO/PNG layout")
    parser.add_argument("--split", default="val")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    model, cfg = load_grounding_model(args.checkpoint)
    dataset = GroundingDataset.from_root(args.data, args.split, cfg.data.resize)
    with torch.no_grad():  # the number of rounds: one logit map list on a dummy query
        features = model.encode_images(torch.zeros(1, 3, 64, 64))
        rounds = len(model.round_logits(features, model.encode_text(["a"], [[(0, 1)]])))
    print(f"{args.checkpoint} on {args.data} [{args.split}], AR of each round's maps")
    print(f"{'round':<7}" + "".join(f"{c:>11}" for c in COLUMNS))
    for r in range(rounds):
        model.predict_round = r
        scores = evaluate_split(model, dataset, args.batch_size, progress=False)[0].scores()
        print(f"{r:<7}" + "".join(f"{100 * scores[c]['ar']:11.2f}" for c in COLUMNS))


if __name__ == "__main__":
    main()
