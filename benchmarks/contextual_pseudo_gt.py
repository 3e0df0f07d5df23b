"""Precision and recall of VL-NMS's pseudo ground truth of contextual objects on the synthetic split.

The synthetic refs name, for every relation sentence, the object the relation names
(``"context_ann_ids"``: "the star left of the green circle" -> the green circle); attribute and
extreme sentences name none. ``groundkit.data.contextual.contextual_objects`` guesses them as the
paper does (nouns of the expression against the category names of the image's objects, cosine of
word vectors >= gamma; vectors from the text encoder, ``groundkit.text.words``). Per gamma, micro
precision (true guesses / guesses) and recall (true guesses / true context objects) over the
relation sentences and over all sentences (the others have no context: every guess there is
false), and the false guesses by cause: another object of the referent's category, of a named
object's category (the match is by category, as in the paper), or of a category merely similar to a
noun. gamma = 1 keeps exact category-name matches only.

    groundkit generate --out /tmp/x --seed 0 --train 0 --val 200 --test 0
    python benchmarks/contextual_pseudo_gt.py --data /tmp/x
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from groundkit.data.contextual import GAMMA, contextual_objects, expression_nouns
from groundkit.data.formats.refcoco import load_referring
from groundkit.text.encoder import TextEncoder
from groundkit.text.words import word_embedder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a folder written by `groundkit generate`")
    parser.add_argument("--split", default="val")
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.2, 0.3, GAMMA, 0.5, 1.0])
    parser.add_argument("--encoder", default=None, help="a local text encoder folder (default: bundled)")
    args = parser.parse_args(argv)

    refcoco = Path(args.data) / "refcoco"
    samples, instances = load_referring(refcoco / "refs(unc).p", refcoco / "instances.json", args.split)
    by_image: dict[int, list] = defaultdict(list)
    for ann in instances.annotations.values():
        by_image[ann.image_id].append(ann)
    names = {c.id: c.name for c in instances.categories.values()}
    embed = word_embedder(TextEncoder(args.encoder))
    relation = [s for s in samples if s.context_ann_ids]
    no_noun = sum(not expression_nouns(s.sentence, names.values()) for s in samples)
    print(f"{args.data} {args.split}: {len(samples)} sentences, {len(relation)} naming a context "
          f"object ({sum(len(s.context_ann_ids) for s in relation)} objects), {no_noun} without a noun")
    print(f"{'gamma':>5}  {'sentences':<9}  {'guesses/sent':>12}  {'precision':>9}  {'recall':>6}  "
          f"{'false: referent cat.':>20}  {'context cat.':>12}  {'other cat.':>10}")
    category = {a.id: a.category_id for a in instances.annotations.values()}
    for gamma in args.gammas:
        guesses = {s.sent_id: set(contextual_objects(s.sentence, s.ann_id, by_image[s.image_id], names,
                                                     embed, gamma)) for s in samples}
        for label, rows in (("relation", relation), ("all", samples)):
            found = sum(len(guesses[s.sent_id]) for s in rows)
            right = sum(len(guesses[s.sent_id] & set(s.context_ann_ids)) for s in rows)
            truth = sum(len(s.context_ann_ids) for s in rows)
            # Why a guess is false: another object of the referent's category ("the star ..." makes
            # every other star contextual), of a named object's category (the other circles of
            # "... left of the circle"), or of a category only similar to a noun.
            why = [0, 0, 0]
            for s in rows:
                context_categories = {category[c] for c in s.context_ann_ids}
                for a in guesses[s.sent_id] - set(s.context_ann_ids):
                    why[0 if category[a] == s.category_id else 1 if category[a] in context_categories
                        else 2] += 1
            precision = right / found if found else float("nan")
            recall = right / truth if truth else float("nan")
            print(f"{gamma:>5.2f}  {label:<9}  {found / max(len(rows), 1):>12.2f}  {precision:>9.3f}  "
                  f"{recall:>6.3f}  {why[0]:>20}  {why[1]:>12}  {why[2]:>10}")

if __name__ == "__main__":
    main()
