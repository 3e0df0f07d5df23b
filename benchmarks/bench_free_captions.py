"""Ground captions written independently of the benchmark's templates and compare with its own.

For every image of a split, this script writes its own captions — other sentence frames and
wording than ``groundkit.data.synthetic.language`` — with bracketed phrases naming categories:
each stuff region ("[the water]"), each thing whose colour and shape are unique in the image
("[the red star]", the colour read off the pixels), and each shape present two or more times
("[the stars]"). It grounds them through ``Grounder`` and scores them with the same PNG AR as the
benchmark's narratives of the same images.

    python benchmarks/bench_free_captions.py --checkpoint ppmn-synthetic --data /tmp/unseen --split val
"""
from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

FRAMES = [
    "Look closely and you will notice {}.",
    "Somebody has drawn {} here.",
    "In this picture one can find {}.",
    "{} can be seen as well.",
    "My eye goes first to {}.",
    "There also happens to be {} in view.",
]


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("s", "x", "ch", "sh")) else "s")


def phrases_of(image: np.ndarray, panoptic, image_id: int) -> list[tuple[str, tuple[int, ...]]]:
    """``(phrase, segment ids)`` of an image: stuff, unique colour+shape things, repeated shapes."""
    from groundkit.data.stats import colour_name

    ann = panoptic.annotation(image_id)
    id_map = panoptic.id_map(image_id)
    things: list[tuple[str, str, int]] = []
    phrases = []
    for seg in ann.segments:
        cat = panoptic.categories[seg.category_id]
        if cat.isthing:
            things.append((cat.name, colour_name(image, id_map == seg.id), seg.id))
        else:
            phrases.append((f"the {cat.name}", (seg.id,)))
    pairs = Counter((shape, colour) for shape, colour, _ in things)
    shapes = Counter(shape for shape, _, _ in things)
    for shape, colour, seg_id in things:
        if pairs[(shape, colour)] == 1:
            phrases.append((f"the {colour} {shape}", (seg_id,)))
    for shape, n in shapes.items():
        if n >= 2:
            phrases.append((f"the {plural(shape)}",
                            tuple(s for sh, _, s in things if sh == shape)))
    return phrases


def caption_of(phrases: list[str], rng: np.random.Generator) -> str:
    sentences = []
    for phrase in phrases:
        frame = FRAMES[rng.integers(len(FRAMES))]
        text = frame.format(f"[{phrase}]")
        sentences.append(text[0].upper() + text[1:] if text[0] != "[" else
                         "[" + text[1].upper() + text[2:])
    return " ".join(sentences)


def main() -> None:
    from groundkit.api import Grounder
    from groundkit.data.grounding import GroundingDataset
    from groundkit.engine.grounding import GroundingTask
    from groundkit.engine.tasks import get_task
    from groundkit.metrics.png_ar import mask_ious, png_average_recall
    from groundkit.metrics.report import png_table

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="ppmn-synthetic")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--max-phrases", type=int, default=6, help="phrases per caption")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("options", nargs="*", metavar="key=value",
                        help="inference options of the model config, as for groundkit evaluate "
                             "(e.g. refine_radius=6 refine_eps=1e-5 threshold=0.35)")
    args = parser.parse_args()

    grounder = Grounder.from_pretrained(args.checkpoint, device="cpu")
    get_task("grounding").set_inference_options(grounder.model, args.options)
    data = GroundingDataset.from_root(args.data, args.split, grounder.resize)
    rng = np.random.default_rng(args.seed)
    ious, is_thing, counts = [], [], []
    for image_id in sorted(data.panoptic.images):
        image = data.load_image(image_id)
        found = phrases_of(image, data.panoptic, image_id)
        order = rng.permutation(len(found))[:args.max_phrases]
        chosen = [found[i] for i in order]
        grounder.set_image(image)
        out = grounder.ground(caption_of([p for p, _ in chosen], rng))
        gts = data.panoptic.union_masks(image_id, [ids for _, ids in chosen])
        ious.extend(mask_ious(out["masks"], gts))
        ann = data.panoptic.annotation(image_id)
        is_thing.extend(data.panoptic.categories[ann.segment(ids[-1]).category_id].isthing
                        for _, ids in chosen)
        counts.extend(len(ids) for _, ids in chosen)
    free = png_average_recall(np.array(ious), np.array(is_thing), np.array(counts))
    own = GroundingTask().evaluate(grounder.model, data, progress=False)
    print(png_table(own.scores(), f"the benchmark's own narratives ({args.data} [{args.split}])"))
    print()
    print(png_table(free, "captions written independently of the templates, same images"))
    print(f"\nexample caption: {caption_of([p for p, _ in found[:3]], np.random.default_rng(1))}")


if __name__ == "__main__":
    main()
