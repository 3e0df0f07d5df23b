"""The synthetic benchmark's referring sentences read back, and said again in other words.

The generator writes every referring expression with three templates
(:func:`groundkit.data.synthetic.language.reference_text`): "[the] [size] [colour] noun", then
"... left of / to the left of / right of / above / below / under the <anchor>" (relation) or
"leftmost / rightmost / topmost / lowest ..." and "... on the left / at the top ..." (extreme).
A model trained on them alone learns those three syntaxes as the only ones, and loses about 19
REC points on the same references phrased otherwise (``benchmarks/bench_free_expressions.py``).

- :class:`TemplateParser` reads a template sentence back into what it says (:class:`Parsed`);
  None for any other sentence.
- :class:`Paraphraser` says a :class:`Parsed` reference in another phrasing drawn at random: the
  ``rephrase`` training augmentation of :class:`groundkit.data.referring.ReferringDataset`.

The phrasings below are written apart from the rewrites of ``bench_free_expressions.py``, which
stay a held-out test: none of its frames ("the circle that is red", "..., which sits on the left
side of ...", "of all the squares, the one furthest to the left", ...) is used here, and
``tests/data/synthetic/test_phrasing.py`` checks that the two never write the same sentence. The
second version (1 December 2026: requests such as "show me ...", more relation and extreme words,
colours "drawn in") was written after the first two held-out sets had been read, so they no
longer test the idea of a request around a reference; the third set, committed before it, does.
The third version (2 December 2026) says relations from the anchor's side in five frames rather
than one ("the circle that has the star on its upper side"), after the third set had shown that
loss; it still writes none of the third set's sentences nor its word "neighbour". A fourth, with
half of those frames saying the direction before the anchor, was tried and reverted: it moved the
frames it named and cost others (step 11 in ``docs/referring.md``). The fifth (2 December 2026,
after the fourth held-out set, which it therefore no longer tests for these two ideas, and after
a fifth set was committed) adds the anchor as the subject ("the circle which the star is found
right of") and extremes by negation ("the circle that has no circles left of it"). The sixth
(2 December 2026, after the fifth set, which it no longer tests for quantifiers, and after a
sixth set was committed) adds extremes by a quantifier ("the circle with every other circle right
of it", "the circle which all the other circles lie right of"). The seventh (2 December 2026,
after the model trained with the sixth had read "other" as a mirrored direction, losing the
fourth set's "no other circle to its left" and the first set's "further left than every other
circle") says negation with "other" too and quantified comparisons in the extreme's own
direction ("the circle further left than all the other circles"). The eighth (2 December 2026,
after the model trained with the seventh still read the fourth set's "with no other circle to its
left" mirrored) negates the quantifier's own frame ("the circle with not a single other circle
left of it") and puts the anchor first ("relative to the star, the circle left of it"), in other
words than the first and fourth sets' "looking from the star, ..." and "beside the star, ...".
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from groundkit.data.synthetic.language import EXTREME_WORDS, RELATION_WORDS, SIZE_WORDS
from groundkit.data.synthetic.scene import COLOURS, SHAPES


@dataclass(frozen=True)
class Thing:
    """Attributes a description names: ``size`` "small" / "large", ``colour``, ``shape`` (None:
    not named, the generator's "shape" / "object")."""

    size: str | None = None
    colour: str | None = None
    shape: str | None = None


@dataclass(frozen=True)
class Parsed:
    """What a template sentence says: the target, and a relation with its anchor or an extreme."""

    target: Thing
    relation: str = ""    # a key of describe.RELATIONS ("left of", "right of", "above", "below"), or ""
    anchor: Thing | None = None
    extreme: str = ""     # a key of describe.EXTREMES ("left", "right", "top", "bottom"), or ""

    @property
    def kind(self) -> str:
        return "relation" if self.relation else "extreme" if self.extreme else "attributes"


class TemplateParser:
    """Regexes over ``language.reference_text``'s templates, built from the generator's word lists."""

    def __init__(self) -> None:
        self.size_of = {w: size for size, words in SIZE_WORDS.items() for w in words}
        self.relation_of = {w: rel for rel, words in RELATION_WORDS.items() for w in words}
        sizes, colours = _alternatives(self.size_of), _alternatives(COLOURS)
        nouns = _alternatives(list(SHAPES) + ["shape", "object"])

        def thing(p: str) -> str:
            return rf"(?:(?P<{p}size>{sizes}) )?(?:(?P<{p}colour>{colours}) )?(?P<{p}noun>{nouns})"

        self.patterns: list[tuple[re.Pattern, str]] = [(re.compile(
            rf"^(?:the )?{thing('t')} (?P<rel>{_alternatives(self.relation_of)}) the {thing('a')}$"), "")]
        for extreme, forms in EXTREME_WORDS.items():
            for form in forms:
                pattern = re.escape(form).replace(r"\{\}", "{}").format(thing("t"))
                self.patterns.append((re.compile(rf"^(?:the )?{pattern}$"), extreme))
        self.patterns.append((re.compile(rf"^(?:the )?{thing('t')}$"), ""))

    def parse(self, sentence: str) -> Parsed | None:
        """The reference a template sentence makes; None when no template produces it."""
        text = " ".join(sentence.lower().split())
        for pattern, extreme in self.patterns:
            m = pattern.match(text)
            if m is None:
                continue
            target = self._thing(m, "t")
            if "rel" in m.groupdict():
                return Parsed(target, self.relation_of[m["rel"]], self._thing(m, "a"))
            return Parsed(target, extreme=extreme)
        return None

    def _thing(self, m: re.Match, p: str) -> Thing:
        noun = m[f"{p}noun"]
        return Thing(self.size_of.get(m[f"{p}size"] or ""), m[f"{p}colour"],
                     None if noun in ("shape", "object") else noun)


def _alternatives(words) -> str:
    """A regex alternation, longest first ("to the left of" before "left of")."""
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


# --- other phrasings, for training ----------------------------------------------------------------

SIZES = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}
UNNAMED = ("shape", "object", "thing", "figure")   # nouns for a thing whose shape is not said
RELATIONS = {  # the target is <phrase> the anchor
    "left of": ("left of", "to the left of", "on the left of", "just left of", "located left of",
                "positioned to the left of", "lying left of", "at the left of", "directly left of",
                "resting to the left of", "a bit to the left of", "immediately left of"),
    "right of": ("right of", "to the right of", "on the right of", "just right of",
                 "located right of", "positioned to the right of", "lying right of", "at the right of",
                 "directly right of", "resting to the right of", "a bit to the right of",
                 "immediately right of"),
    "above": ("above", "over", "higher than", "up above", "located above", "positioned over",
              "sitting above", "directly above", "resting above", "a bit higher than",
              "immediately over"),
    "below": ("below", "under", "beneath", "underneath", "lower than", "located below",
              "sitting under", "directly below", "resting beneath", "a bit lower than",
              "immediately under"),
}
SEEN_FROM_ANCHOR = {  # "the circle having the star <phrase>": where the anchor is, from the target
    "left of": ("at its right", "right of it", "to the right of it", "on its right-hand side",
                "on its right side", "rightward of it", "at its right side"),
    "right of": ("at its left", "left of it", "to the left of it", "on its left-hand side",
                 "on its left side", "leftward of it", "at its left side"),
    "above": ("beneath it", "underneath it", "lower than it", "below it", "on its lower side",
              "at its bottom side", "down from it"),
    "below": ("over it", "higher than it", "on top of it", "above it", "on its upper side",
              "at its top side", "up from it"),
}
# Sentences that name the anchor's side of the target ("the circle that has the star below it"):
# the direction word says where the anchor is, the opposite of the relation's own word. A model
# that saw them only in one frame read "whose upper neighbour is the star" as "above the star".
SEEN_FROM_ANCHOR_FRAMES = ("the {t} having {a} {w}", "the {t} that has {a} {w}",
                           "the {t} such that {a} is {w}", "the {t} for which {a} is {w}",
                           "the {t}, and {a} is {w}")
# The anchor as the subject ("the circle which the star is found right of"): the direction word
# is again the anchor's side of the target. Written after the fourth held-out set had shown the
# bundle losing "the circle that the star is right of"; in other verbs, with none of its sentences.
ANCHOR_AS_SUBJECT = {  # the target is <relation> the anchor; the anchor is <phrase> the target
    "left of": ("right of", "to the right of", "on the right of"),
    "right of": ("left of", "to the left of", "on the left of"),
    "above": ("below", "under", "beneath"),
    "below": ("above", "over", "higher than"),
}
ANCHOR_AS_SUBJECT_FRAMES = ("the {t} which {a} is found {w}", "the {t} that {a} is placed {w}",
                            "the {t} {a} sits {w}", "the {t} that {a} appears {w}")
# The anchor first, then the target with a pronoun for it ("relative to the star, the circle
# left of it"): the direction word is the relation's own. Eighth version, after the first held-out
# set's "looking from the star, the circle left of it" had stayed the frame lost most (56 REC).
ANCHOR_FIRST_FRAMES = ("relative to {a}, the {t} {w} it", "take {a}: the {t} {w} it",
                       "there is {a}, and the {t} {w} it", "with {a} as the reference, the {t} {w} it",
                       "as for {a}, the {t} {w} it is the one")
# Extremes by negation ("the circle that has no circles left of it"): nothing of its kind lies
# beyond it. Written after the fourth held-out set's "with no other circle to its left" had lost
# the most of any frame; "no other" itself is not said here.
NOTHING_BEYOND = {
    "left": ("left of it", "to the left of it", "on its left", "further left"),
    "right": ("right of it", "to the right of it", "on its right", "further right"),
    "top": ("above it", "over it", "higher up", "further up"),
    "bottom": ("below it", "under it", "lower down", "further down"),
}
NOTHING_BEYOND_FRAMES = ("the {one} that has no {many} {w}", "the {one} without any {many} {w}",
                         "the {one} such that no {kind} is {w}",
                         "the {one}, and not a single {kind} is {w}",
                         # "other" here too: with the quantifiers below alone, a model read
                         # "other" as the sign of a mirrored direction (step 17, docs/referring.md)
                         "the {one} without any other {kind} {w}",
                         "the {one} that has none of the other {many} {w}",
                         # the quantifier's own frame ("with every other circle right of it")
                         # negated, so that the two differ in the one word that flips the
                         # direction (eighth version: steps 17-18 read "no other ... left" mirrored)
                         "the {one} with not a single other {kind} {w}",
                         "the {one} with zero other {many} {w}",
                         "the {one} having not one other {kind} {w}")
# Extremes by a quantifier ("the circle with every other circle right of it"): the direction word
# says where all the others are, the opposite of the extreme's own. Written after the fifth
# held-out set's "the circle that every other circle is right of" had been read as its opposite
# by every model; in other verbs and frames, with none of its sentences.
OTHERS_BEYOND = {  # where the others are, seen from the extreme thing
    "left": ("right of it", "to the right of it", "on its right"),
    "right": ("left of it", "to the left of it", "on its left"),
    "top": ("below it", "under it", "lower down"),
    "bottom": ("above it", "over it", "higher up"),
}
OTHERS_ARE = {"left": ("right of", "to the right of"), "right": ("left of", "to the left of"),
              "top": ("below", "beneath"), "bottom": ("above", "over")}
# ... and compared with every other one, where the direction word is the extreme's own ("the
# circle further left than all the other circles"): the quantifier does not mirror by itself.
BEYOND_THE_OTHERS = {"left": ("further left", "more to the left"),
                     "right": ("further right", "more to the right"),
                     "top": ("higher up", "further up"), "bottom": ("lower down", "further down")}
COMPARED_FRAMES = ("the {one} {w} than all the other {many}", "the {one} lying {w} than each other {kind}",
                   "the {one} which is {w} than all other {many}")
QUANTIFIED_FRAMES = ("the {one} with every other {kind} {w}",
                     "the {one} that has all the other {many} {w}",
                     "the {one} such that each other {kind} is {w}",
                     "the {one}, and all other {many} are {w}",
                     "the {one} which all the other {many} lie {v}",
                     "the {one} that each other {kind} sits {v}")
EXTREMES = {  # "{}" is the thing, "{s}" the thing in the plural
    "left": ("the {} most to the left", "the left-most {}", "the {} at the far left",
             "the {} on the far left", "the {} closest to the left border", "the most left {}",
             "the leftmost of the {s}", "the {} more to the left than the others",
             "the most leftward {}", "the {} at the left-hand extreme", "the {} positioned leftmost"),
    "right": ("the {} most to the right", "the right-most {}", "the {} at the far right",
              "the {} on the far right", "the {} closest to the right border", "the most right {}",
              "the rightmost of the {s}", "the {} more to the right than the others",
              "the most rightward {}", "the {} at the right-hand extreme",
              "the {} positioned rightmost"),
    "top": ("the {} at the very top", "the uppermost {}", "the top-most {}",
            "the {} highest in the picture", "the {} closest to the top border", "the highest {}",
            "the topmost of the {s}", "the {} higher than the others", "the most upward {}",
            "the {} at the top extreme", "the {} positioned topmost"),
    "bottom": ("the {} at the very bottom", "the bottom-most {}", "the bottommost {}",
               "the {} lowest in the picture", "the {} closest to the bottom border",
               "the lowest of the {s}", "the {} lower than the others", "the most downward {}",
               "the {} at the bottom extreme", "the {} positioned lowest"),
}
# Requests around a whole reference ("show me the red circle"): what people type to a grounding
# model, and what a model trained on bare noun phrases reads as part of the description.
REQUESTS = ("show me {}", "point to {}", "where is {}", "i mean {}", "it is {}", "the one i want is {}",
            "choose {}", "give me {}", "tap {}", "{}, that one", "spot {}", "the answer is {}",
            "we want {}", "{} is the one")


class Paraphraser:
    """Another phrasing of a :class:`Parsed` reference, every choice drawn from ``rng``."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def noun(self, t: Thing, plural: bool = False) -> str:
        noun = t.shape or self.pick(UNNAMED)
        return noun + ("es" if noun.endswith("ss") else "s") if plural else noun

    def plain(self, t: Thing, plural: bool = False) -> str:
        """"red circle", "tiny red shapes": adjectives then the noun."""
        size = [self.pick(SIZES[t.size])] if t.size else []
        return " ".join(size + ([t.colour] if t.colour else []) + [self.noun(t, plural)])

    def described(self, t: Thing) -> str:
        """The thing by its attributes, without its determiner: "circle in red", "big star"."""
        forms = [self.plain(t)]
        size = f"{self.pick(SIZES[t.size])} " if t.size else ""
        noun = self.noun(t)
        if t.colour:
            forms += [f"{size}{noun} in {t.colour}", f"{size}{t.colour}-coloured {noun}",
                      f"{size}{noun} painted {t.colour}", f"{size}{noun} that's {t.colour}",
                      f"{size}{noun} drawn in {t.colour}", f"{size}{noun} having the colour {t.colour}"]
            if t.size:
                forms.append(f"{t.colour} {noun}, the {size.strip()} one")
            if t.shape is None:
                forms.append(f"{size}{t.colour} one")
        elif t.size:
            forms += [f"{size.strip()}-sized {noun}", f"{noun} that looks {size.strip()}"]
        return self.pick(forms)

    def rephrase(self, p: Parsed) -> str:
        """``p`` in a phrasing drawn at random (lower case, no final stop)."""
        if p.relation:
            target, anchor = self.described(p.target), f"the {self.described(p.anchor)}"
            where = self.pick(RELATIONS[p.relation])
            return self.pick((f"the {target} {where} {anchor}",
                              f"the {target} that's {where} {anchor}",
                              f"the {target}, {where} {anchor}",
                              f"{where} {anchor} is the {target}",
                              self._seen_from_anchor(p, target, anchor),
                              self._seen_from_anchor(p, target, anchor),
                              self.pick(ANCHOR_AS_SUBJECT_FRAMES).format(
                                  t=target, a=anchor, w=self.pick(ANCHOR_AS_SUBJECT[p.relation])),
                              self.pick(ANCHOR_FIRST_FRAMES).format(t=target, a=anchor, w=where)))
        if p.extreme:
            one, many = self.plain(p.target), self.plain(p.target, plural=True)
            draw = self.rng.random()
            if draw < 0.25:
                return self.pick(NOTHING_BEYOND_FRAMES).format(
                    one=one, many=many, kind=self.plain(p.target), w=self.pick(NOTHING_BEYOND[p.extreme]))
            if draw < 0.40:
                return self.pick(QUANTIFIED_FRAMES).format(
                    one=one, many=many, kind=self.plain(p.target), w=self.pick(OTHERS_BEYOND[p.extreme]),
                    v=self.pick(OTHERS_ARE[p.extreme]))
            if draw < 0.50:
                return self.pick(COMPARED_FRAMES).format(
                    one=one, many=many, kind=self.plain(p.target), w=self.pick(BEYOND_THE_OTHERS[p.extreme]))
            return self.pick(EXTREMES[p.extreme]).replace("{s}", many).format(one)
        return f"{self.pick(('the', 'the', 'a', ''))} {self.described(p.target)}".strip()

    def _seen_from_anchor(self, p: Parsed, target: str, anchor: str) -> str:
        """"the red circle that has the star on its upper side": the relation from the anchor's
        side (two of the six relation frames above)."""
        where = self.pick(SEEN_FROM_ANCHOR[p.relation])
        return self.pick(SEEN_FROM_ANCHOR_FRAMES).format(t=target, a=anchor, w=where)

    def sentence(self, p: Parsed) -> str:
        """:meth:`rephrase`, at times inside a request ("show me ..."), capitalised and with a
        full stop, as people type."""
        text = self.rephrase(p)
        if self.rng.random() < 0.3:
            text = self.pick(REQUESTS).format(text)
        if self.rng.random() < 0.2:
            text = text[0].upper() + text[1:]
        return text + "." if self.rng.random() < 0.2 else text
