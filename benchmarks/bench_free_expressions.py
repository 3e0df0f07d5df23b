"""Refer with expressions written independently of the benchmark's templates and compare with its own.

The synthetic benchmark's referring expressions come from a few templates
(``groundkit.data.synthetic.language.reference_text``): "[the] [size] [colour] noun", then
"... left of / to the left of / right of / above / below / under the <anchor>" (relation) or
"leftmost / rightmost / topmost / lowest ..." and "... on the left / on the right / at the top /
at the bottom" (extreme). This script parses each of the split's sentences back into what it says
(target attributes, relation and anchor attributes, or extreme) with the library's
``groundkit.data.synthetic.phrasing.TemplateParser`` (regexes built from the generator's own word
lists), and writes the same reference in other phrasings, by hand, with the
same content words: "the red circle to the left of the star" -> "the circle that is red, which
sits on the left side of the star"; "the leftmost square" -> "of all the squares, the one
furthest to the left". Every rewrite is checked to fall outside the templates (the parser must
reject it) and stays paired with its sentence's referent. The model then refers with the
original sentences and with the rewrites, on the same images and referents, and both are scored
with REC Acc@0.5 and RES oIoU / mIoU in original pixels, overall and by expression type.

The phrasings here are a held-out test: the training augmentation ``data.rephrase`` (the
library's ``Paraphraser``) was written apart from them and never writes one of these sentences
(``tests/data/synthetic/test_phrasing.py``).

    python benchmarks/bench_free_expressions.py --checkpoint runs/pbrec_synthetic --data data/synthetic
    python benchmarks/bench_free_expressions.py --checkpoint /tmp/pb_overfit2 --data data/synthetic \
        --max-items 64
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from groundkit.data.synthetic.phrasing import Parsed, TemplateParser, Thing

# --- free phrasings, written by hand ---------------------------------------------------------------

SIZE = {"small": ("small", "little"), "large": ("large", "big")}
RELATION = {  # the target is <phrase> the anchor
    "left of": ("on the left side of", "further left than", "to the left of"),
    "right of": ("on the right side of", "further right than", "to the right of"),
    "above": ("higher up than", "above", "over"),
    "below": ("lower down than", "below", "under"),
}
INVERSE = {  # "the star with the circle <phrase>": the anchor seen from the target
    "left of": ("to its right", "on its right"), "right of": ("to its left", "on its left"),
    "above": ("below it", "under it"), "below": ("above it", "over it"),
}
EXTREME = {  # "of all the squares, the one <phrase>"
    "left": ("furthest to the left", "farthest left", "nearest the left edge"),
    "right": ("furthest to the right", "farthest right", "nearest the right edge"),
    "top": ("highest up", "nearest the top edge", "closest to the top"),
    "bottom": ("lowest down", "nearest the bottom edge", "closest to the bottom"),
}
MOST = {"left": "leftmost", "right": "rightmost", "top": "topmost", "bottom": "lowest"}
BEYOND = {"left": "further left", "right": "further right", "top": "higher up", "bottom": "lower down"}


class Rewriter:
    """Other phrasings of a :class:`Parsed` reference (one drawn per sentence by ``rng``)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def noun(self, t: Thing, plural: bool = False) -> str:
        noun = t.shape or self.pick(("shape", "object"))
        return noun + ("es" if noun.endswith("ss") else "s") if plural else noun

    def adjectives(self, t: Thing) -> list[str]:
        return ([self.pick(SIZE[t.size])] if t.size else []) + ([t.colour] if t.colour else [])

    def plain(self, t: Thing, plural: bool = False) -> str:
        """"red circle", "little red shapes": adjectives then the noun."""
        return " ".join(self.adjectives(t) + [self.noun(t, plural)])

    COLOUR_FORMS: tuple[str, ...] = ()   # a held-out set's own ways of saying a colour

    def thing(self, t: Thing) -> str:
        """"small red circle", or one of the set's ``COLOUR_FORMS`` for a thing with a colour."""
        return self.plain_or_coloured(t, *self.COLOUR_FORMS)

    def plain_or_coloured(self, t: Thing, *colour_forms: str) -> str:
        """"small red circle", or for a thing with a colour one of ``colour_forms`` filled in
        ("{size}{noun} of a {colour} hue"; ``{article}``: "a" or "an" before the colour)."""
        forms = [self.plain(t)]
        if t.colour:
            size = f"{self.pick(SIZE[t.size])} " if t.size else ""
            article = "an" if t.colour[0] in "aeiou" else "a"
            forms += [form.format(size=size, noun=self.noun(t), colour=t.colour, article=article)
                      for form in colour_forms]
        return self.pick(forms)

    def described(self, t: Thing, among: bool = True) -> str:
        """The thing by its attributes in one of several frames; the bare noun when it has none.
        ``among``: "the red one among the circles" may be used. It says the attributes alone pick
        the thing out: false of a relation's target, and nested in a relation it reads badly."""
        adjectives = self.adjectives(t)
        if not adjectives:
            return f"the {self.noun(t)}"
        noun = self.noun(t)
        forms = [f"the {noun} that is {' and '.join(adjectives)}",
                 f"the {noun} which is {' and '.join(adjectives)}"]
        if among:
            forms.append(f"the {' '.join(adjectives)} one among the {self.noun(t, plural=True)}")
        if t.colour:
            size = f"{adjectives[0]} " if t.size else ""
            forms += [f"the {size}{noun} coloured {t.colour}", f"the {size}{noun} whose colour is {t.colour}"]
        if t.size and not t.colour:
            forms.append(f"the {noun} of {adjectives[0]} size")
        return self.pick(forms)

    def rewrite(self, p: Parsed) -> str:
        if p.relation:
            anchor = self.pick((f"the {self.plain(p.anchor)}", self.described(p.anchor, among=False)))
            target = self.described(p.target, among=False)
            forms = [f"{target}, which sits {self.pick(RELATION[p.relation])} {anchor}",
                     f"{target} placed {self.pick(RELATION[p.relation])} {anchor}",
                     f"the {self.plain(p.target)} with {anchor} {self.pick(INVERSE[p.relation])}",
                     f"looking from {anchor}, the {self.plain(p.target)} "
                     f"{self.pick(RELATION[p.relation])} it"]
            return self.pick(forms)
        if p.extreme:
            many, one = self.plain(p.target, plural=True), self.plain(p.target)
            return self.pick((f"of all the {many}, the one {self.pick(EXTREME[p.extreme])}",
                              f"among the {many}, the {MOST[p.extreme]} one",
                              f"the {one} {self.pick(EXTREME[p.extreme])}",
                              f"the {one} that is {BEYOND[p.extreme]} than every other {one}"))
        return self.described(p.target)


class SecondRewriter(Rewriter):
    """A second held-out set (``--rewrites second``), written after the ``rephrase`` training
    augmentation and apart from it and from :class:`Rewriter`: other relation verbs ("found left
    of", "lying leftward of"), the anchor's possessive ("on the star's left"), extremes named by
    the image's edges ("closest to the image's left edge"), and attributes behind a lead-in
    ("look at the red circle", "the one that is a red circle")."""

    RELATION = {
        "left of": ("sitting to the left side of", "found left of", "lying leftward of", "placed left from"),
        "right of": ("sitting to the right side of", "found right of", "lying rightward of",
                     "placed right from"),
        "above": ("found above", "sitting higher up than", "placed over", "located up from"),
        "below": ("found below", "sitting lower down than", "placed beneath", "located down from"),
    }
    SIDE = {"left of": "left", "right of": "right", "above": "upper side", "below": "lower side"}
    EXTREME = {
        "left": ("closest to the image's left edge", "in the leftmost position", "all the way on the left"),
        "right": ("closest to the image's right edge", "in the rightmost position",
                  "all the way on the right"),
        "top": ("closest to the image's top edge", "in the topmost position", "all the way at the top"),
        "bottom": ("closest to the image's bottom edge", "in the lowest position",
                   "all the way at the bottom"),
    }

    def thing(self, t: Thing) -> str:
        """"large red circle", or "large circle which has a red colour"."""
        forms = [" ".join(([t.size] if t.size else []) + ([t.colour] if t.colour else [])
                          + [self.noun(t)])]
        if t.colour:
            forms.append(f"{t.size + ' ' if t.size else ''}{self.noun(t)} which has a {t.colour} colour")
        return self.pick(forms)

    def rewrite(self, p: Parsed) -> str:
        if p.relation:
            return self.pick((f"the {self.thing(p.target)} {self.pick(self.RELATION[p.relation])} "
                              f"the {self.thing(p.anchor)}",
                              f"the {self.thing(p.target)} on the {self.thing(p.anchor)}'s "
                              f"{self.SIDE[p.relation]}"))
        if p.extreme:
            where = self.pick(self.EXTREME[p.extreme])
            return f"the {self.thing(p.target)} {where}"
        return self.pick((f"look at the {self.thing(p.target)}",
                          f"the one that is a {self.thing(p.target)}"))


class ThirdRewriter(Rewriter):
    """A third held-out set (``--rewrites third``), written on 1 December 2026 before the second
    version of the ``rephrase`` augmentation and committed ahead of it, apart from it and from the
    two sets above: requests around the reference ("can you find the ...", "i'm looking for the
    ..."), colours as a fill ("the circle with a red fill"), relations with other verbs ("that you
    can see left of", "standing below") or the anchor as a neighbour ("whose right neighbour is the
    star"), and extremes as an end of the picture ("at the left end", "the last one on the left")."""

    REQUEST = ("can you find the {}", "i'm looking for the {}", "select the {} please",
               "the {} in this picture", "please pick the {}")
    RELATION = {
        "left of": ("that you can see left of", "standing left of", "that lies to the left of"),
        "right of": ("that you can see right of", "standing right of", "that lies to the right of"),
        "above": ("that you can see above", "standing above", "that lies over"),
        "below": ("that you can see below", "standing below", "that lies under"),
    }
    NEIGHBOUR = {"left of": "right", "right of": "left", "above": "lower", "below": "upper"}
    END = {"left": "left end", "right": "right end", "top": "top end", "bottom": "bottom end"}
    LAST = {"left": "on the left", "right": "on the right", "top": "at the top",
            "bottom": "at the bottom"}

    # "small circle with a red fill"
    COLOUR_FORMS = ("{size}{noun} with {article} {colour} fill",)

    def rewrite(self, p: Parsed) -> str:
        if p.relation:
            target, anchor = self.thing(p.target), self.thing(p.anchor)
            return self.pick((f"the {target} {self.pick(self.RELATION[p.relation])} the {anchor}",
                              f"the {target} whose {self.NEIGHBOUR[p.relation]} neighbour is the "
                              f"{anchor}"))
        if p.extreme:
            one = self.thing(p.target)
            return self.pick((f"the {one} at the {self.END[p.extreme]}",
                              f"the last {one} {self.LAST[p.extreme]}",
                              f"of the {self.plain(p.target, plural=True)}, pick the one at the "
                              f"{self.END[p.extreme]}"))
        return self.pick(self.REQUEST).format(self.thing(p.target))


class FourthRewriter(Rewriter):
    """A fourth held-out set (``--rewrites fourth``), written on 2 December 2026 after the third
    set had driven the rephrasing's third and fourth versions (so the third no longer tests the
    anchor's side) and committed before the model trained with the fourth version was scored:
    the anchor as the subject ("the circle that the star is right of"), comparisons with an edge
    ("nearer the left than the star"), the anchor first and the target last ("beside the star, on
    its left, the circle"), extremes as nothing beyond ("the circle with no other circle to its
    left", "hugging the left edge"), colours as a hue and other requests ("highlight the ...")."""

    REQUEST = ("highlight the {}", "i need the {}", "the {} here", "where's the {}")
    ANCHOR_IS = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
    NEARER = {"left of": "the left", "right of": "the right", "above": "the top", "below": "the bottom"}
    ITS_SIDE = {"left of": "left", "right of": "right", "above": "upper side", "below": "lower side"}
    BEYOND = {"left": "to its left", "right": "to its right", "top": "above it", "bottom": "below it"}

    # "small circle of a red hue" / "small red-hued circle"
    COLOUR_FORMS = ("{size}{noun} of a {colour} hue", "{size}{colour}-hued {noun}")

    def rewrite(self, p: Parsed) -> str:
        if p.relation:
            target, anchor = self.thing(p.target), self.thing(p.anchor)
            return self.pick((f"the {target} that the {anchor} is {self.ANCHOR_IS[p.relation]}",
                              f"the {target} nearer {self.NEARER[p.relation]} than the {anchor}",
                              f"beside the {anchor}, on its {self.ITS_SIDE[p.relation]}, the {target}"))
        if p.extreme:
            one = self.thing(p.target)   # "no other red shape": the extreme is among its kind
            return self.pick((f"the {one} hugging the {p.extreme} edge",
                              f"the {one} with no other {self.plain(p.target)} {self.BEYOND[p.extreme]}"))
        return self.pick(self.REQUEST).format(self.thing(p.target))


class FifthRewriter(Rewriter):
    """A fifth held-out set (``--rewrites fifth``), written on 2 December 2026 after the fourth
    set had shown where the bundle still loses and committed before the rephrasing's fifth
    version, which says some of the fourth set's ideas in its own words: this set says them in
    others. Extremes as a quantifier ("the circle that every other circle is right of"), an
    ordinal, which no version of the rephrasing says ("the first circle from the left"), or a
    count from an edge ("the circle closest to the left, counting all circles"); relations with
    the anchor as the subject in other words ("the circle which the star lies to the right of")
    and the anchor first ("to the left of the star you can see the circle"); colours as a tint or
    a shade and other requests ("find me the ...", "that ... over there")."""

    REQUEST = ("find me the {}", "that {} over there", "the {}, please", "go for the {}")
    ANCHOR_LIES = {"left of": "to the right of", "right of": "to the left of", "above": "beneath",
                   "below": "on top of"}
    SEEN = {"left of": "to the left of", "right of": "to the right of", "above": "up above",
            "below": "down below"}
    OTHERS_ARE = {"left": "right of", "right": "left of", "top": "below", "bottom": "above"}
    FROM = {"left": "from the left", "right": "from the right", "top": "from the top",
            "bottom": "from the bottom"}

    # "small red-tinted circle" / "small circle shaded red"
    COLOUR_FORMS = ("{size}{colour}-tinted {noun}", "{size}{noun} shaded {colour}")

    def rewrite(self, p: Parsed) -> str:
        if p.relation:
            target, anchor = self.thing(p.target), self.thing(p.anchor)
            return self.pick((f"the {target} which the {anchor} lies {self.ANCHOR_LIES[p.relation]}",
                              f"{self.SEEN[p.relation]} the {anchor} you can see the {target}"))
        if p.extreme:
            one, kind = self.thing(p.target), self.plain(p.target)
            return self.pick((f"the {one} that every other {kind} is {self.OTHERS_ARE[p.extreme]}",
                              f"the first {one} {self.FROM[p.extreme]}",
                              f"counting all {self.plain(p.target, plural=True)}, the one nearest "
                              f"the {p.extreme}"))
        return self.pick(self.REQUEST).format(self.thing(p.target))


class SixthRewriter(Rewriter):
    """A sixth held-out set (``--rewrites sixth``), written on 2 December 2026 after the fifth set
    had shown its quantifier frame read as its opposite, and committed before the rephrasing's
    sixth version, which says quantifiers in its own words: this set says them in others.
    Extremes with "the rest" beyond the thing ("the circle with the rest of the circles to its
    right") or as a comparison with any other ("the circle closer to the left side than any other
    circle"); relations as a comparison ("the circle, more to the left compared with the star"),
    from the anchor's point of view ("the circle that the star has on its left") or as a path
    ("starting from the star and going left, the circle"); colours "of red colour" or "done in red", and
    other requests ("look for the ...", "mark the ...")."""

    REQUEST = ("look for the {}", "mark the {}", "the {} is what i'm after", "could you outline the {}")
    COMPARED = {"left of": "more to the left", "right of": "more to the right", "above": "higher up",
                "below": "further down"}
    HAS_ON = {"left of": "left", "right of": "right", "above": "top side", "below": "bottom side"}
    GOING = {"left of": "left", "right of": "right", "above": "up", "below": "down"}
    REST_ARE = {"left": "to its right", "right": "to its left", "top": "below it", "bottom": "above it"}
    EDGE = {"left": "left side", "right": "right side", "top": "top", "bottom": "bottom"}

    # "small circle of red colour" / "small circle done in red"
    COLOUR_FORMS = ("{size}{noun} of {colour} colour", "{size}{noun} done in {colour}")

    def rewrite(self, p: Parsed) -> str:
        if p.relation:
            target, anchor = self.thing(p.target), self.thing(p.anchor)
            return self.pick((f"the {target}, {self.COMPARED[p.relation]} compared with the {anchor}",
                              f"the {target} that the {anchor} has on its {self.HAS_ON[p.relation]}",
                              f"starting from the {anchor} and going {self.GOING[p.relation]}, "
                              f"the {target}"))
        if p.extreme:
            one, kind = self.thing(p.target), self.plain(p.target)
            return self.pick((f"the {one} with the rest of the {self.plain(p.target, plural=True)} "
                              f"{self.REST_ARE[p.extreme]}",
                              f"the {one} closer to the {self.EDGE[p.extreme]} than any other {kind}"))
        return self.pick(self.REQUEST).format(self.thing(p.target))


# --- scoring --------------------------------------------------------------------------------------


REWRITERS = {"first": Rewriter, "second": SecondRewriter, "third": ThirdRewriter,
             "fourth": FourthRewriter, "fifth": FifthRewriter, "sixth": SixthRewriter}


def refer_all(model, dataset, index: list[int], expressions: list[str], batch_size: int,
              device: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``model.predict`` on the items ``index`` with their expressions replaced by
    ``expressions``: box IoUs, mask intersections and unions against the ground truth."""
    import torch

    from groundkit.data.referring import collate_referring
    from groundkit.metrics.referring import box_iou, mask_intersection_union

    ious, inter, union = [], [], []
    for start in range(0, len(index), batch_size):
        chunk = index[start:start + batch_size]
        batch = collate_referring([dataset[i] for i in chunk])
        batch["images"] = batch["images"].to(device)
        batch["expressions"] = expressions[start:start + batch_size]
        with torch.no_grad():
            results = model.predict(batch)
        for i, r in zip(chunk, results):
            sample = dataset.samples[i]
            ious.append(box_iou(r.box[None], dataset.instances.gt_box(sample)[None])[0])
            counts = mask_intersection_union(r.mask, dataset.instances.gt_mask(sample))
            inter.append(counts[0])
            union.append(counts[1])
    return np.array(ious), np.array(inter), np.array(union)


def score_table(title: str, groups: dict[str, np.ndarray], ious: np.ndarray, inter: np.ndarray,
                union: np.ndarray) -> str:
    from groundkit.metrics.referring import res_scores

    lines = [title, f"{'expressions':<12}{'n':>6}{'Acc@0.5':>9}{'oIoU':>8}{'mIoU':>8}"]
    for name, g in groups.items():
        res = res_scores(inter[g], union[g])
        acc = float(np.mean(ious[g] >= 0.5)) if len(g) else float("nan")
        lines.append(f"{name:<12}{len(g):>6}{100 * acc:>9.2f}{100 * res['oiou']:>8.2f}"
                     f"{100 * res['miou']:>8.2f}")
    return "\n".join(lines)


def examples(kinds: list[str], count: int) -> list[int]:
    """``count`` positions taken in turn from each type, in order of appearance."""
    by_kind: dict[str, list[int]] = {}
    for k, kind in enumerate(kinds):
        by_kind.setdefault(kind, []).append(k)
    out: list[int] = []
    queues = list(by_kind.values())
    while len(out) < count and any(queues):
        for q in queues:
            if q and len(out) < count:
                out.append(q.pop(0))
    return sorted(out)


def main() -> None:
    from groundkit.engine.tasks import get_task

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or bundled name")
    parser.add_argument("--data", required=True, help="data folder with refcoco/refs(unc).p")
    parser.add_argument("--split", default="val")
    parser.add_argument("--max-items", type=int, default=None, help="first N sentences only")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="draws of the phrasings")
    parser.add_argument("--top-k", type=int, default=None,
                        help="the inference option top_k (default: the checkpoint's own)")
    parser.add_argument("options", nargs="*", metavar="key=value",
                        help="inference options of the model config, as for groundkit evaluate "
                             "(e.g. joint_ranking=true)")
    parser.add_argument("--rewrites", choices=tuple(REWRITERS), default="first",
                        help="which held-out set of phrasings (Rewriter, SecondRewriter, "
                             "ThirdRewriter, FourthRewriter, FifthRewriter or SixthRewriter)")
    parser.add_argument("--examples", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    task = get_task("referring")
    model, cfg = task.load(args.checkpoint, device=args.device)
    cfg = replace(cfg, data=replace(cfg.data, max_items=None, cache=False))  # not the training limit
    dataset = task.dataset(cfg, args.data, args.split, max_items=args.max_items)
    if args.top_k is not None:
        model.cfg = replace(model.cfg, top_k=args.top_k)
    task.set_inference_options(model, args.options)

    kind = REWRITERS[args.rewrites]
    templates, rewriter = TemplateParser(), kind(np.random.default_rng(args.seed))
    index, originals, free, kinds = [], [], [], []
    unparsed, type_mismatch, shape_mismatch = [], 0, 0
    for i, sample in enumerate(dataset.samples):
        parsed = templates.parse(sample.sentence)
        if parsed is None:
            unparsed.append(sample.sentence)
            continue
        ann = dataset.instances.annotations[sample.ann_id]
        shape_mismatch += (parsed.target.shape is not None
                           and parsed.target.shape != dataset.instances.categories[ann.category_id].name)
        type_mismatch += bool(dataset.types[i]) and dataset.types[i] != parsed.kind
        text = rewriter.rewrite(parsed)
        if templates.parse(text) is not None or text == sample.sentence.lower():
            raise AssertionError(f"rewrite {text!r} of {sample.sentence!r} is a template sentence")
        index.append(i)
        originals.append(sample.sentence)
        free.append(text)
        kinds.append(dataset.types[i] or parsed.kind)

    own = refer_all(model, dataset, index, originals, args.batch_size, args.device)
    other = refer_all(model, dataset, index, free, args.batch_size, args.device)
    kinds_a = np.array(kinds)
    groups = {"all": np.arange(len(index))}
    groups.update({k: np.nonzero(kinds_a == k)[0] for k in ("attributes", "relation", "extreme")
                   if (kinds_a == k).any()})

    print(f"{args.checkpoint} on {args.data} [{args.split}]: {len(dataset)} sentences, "
          f"{len(index)} rewritten, {len(unparsed)} left out (no template matches them)")
    print(f"checks: {type_mismatch} parsed types differ from the refs' types, {shape_mismatch} parsed "
          "target shapes differ from the referent's category\n")
    print(score_table("the benchmark's own sentences", groups, *own))
    print()
    print(score_table("the same references, rewritten outside the templates", groups, *other))
    print(f"\n{'type':<11} {'own IoU':>7} {'free IoU':>8}  own sentence -> rewritten")
    for k in examples(kinds, args.examples):
        print(f"{kinds[k]:<11} {own[0][k]:>7.2f} {other[0][k]:>8.2f}  {originals[k]!r} -> {free[k]!r}")
    if unparsed:
        print(f"\nleft out, e.g.: {unparsed[:3]}")


if __name__ == "__main__":
    main()
