"""Words for a scene: PNG-style narratives (grounded noun phrases in template sentences) and
RefCOCO-style referring expressions.

Every grounded phrase is built from what :mod:`describe` says it denotes, so its segment ids are
exactly the instances it describes. A narrative is cut into utterances as in the real benchmark:
noun phrases (grounded or not) and the non-noun pieces between them, all lower-case.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from groundkit.data.synthetic.describe import Attrs, Reference, SceneIndex
from groundkit.data.synthetic.scene import Scene, StuffRegion
from groundkit.structures import Narrative, Utterance

SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
RELATION_WORDS = {"left of": ("left of", "to the left of"),
                  "right of": ("right of", "to the right of"),
                  "above": ("above",), "below": ("below", "under")}
EXTREME_WORDS = {"left": ("{} on the left", "leftmost {}"),
                 "right": ("{} on the right", "rightmost {}"),
                 "top": ("{} at the top", "topmost {}"),
                 "bottom": ("{} at the bottom", "lowest {}")}
NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
STUFF_PHRASES = {
    "sky": ("the sky", "the blue sky"), "grass": ("the grass", "green grass", "some grass"),
    "water": ("the water", "the sea", "some water"), "sand": ("the sand", "some sand"),
    "wall": ("the wall", "a brick wall", "the brick wall"),
    "road": ("the road", "a road", "the asphalt"),
    "floor": ("the floor", "a wooden floor", "the wooden floor"),
}
# Ungrounded nouns by slot: nothing in the panoptic annotation matches them.
UNGROUNDED = {
    "U": ("this image", "the image", "the picture", "this picture", "the scene"),
    "P": ("a picture", "an image", "a drawing", "a scene"),
    "F": ("the foreground", "the front"),
    "N": ("a part", "a large part", "some part"),
    "Q": ("a rough texture", "a noisy pattern", "a pattern", "a texture"),
}
# Slots: {X1} any grounded phrase, {T1} a thing phrase, {S1} a stuff phrase, {U}/{P}/... an
# ungrounded noun, {~words} a fixed ungrounded noun, {be:X1} is/are, {where:S1} where S1 lies.
INTRO_TEMPLATES = (
    "in {U} we can see {X1}.", "in {U} there {be:X1} {X1}.", "this is {P} of {X1} and {X2}.",
    "{U} shows {X1} and {X2}.", "in {U} i can see {X1}, {X2} and {X3}.", "{U} contains {X1}.",
    "this is {P} of {X1}.",
)
BODY_TEMPLATES = (
    "we can see {X1} in {U}.", "{X1} {be:X1} visible in {U}.", "we can also see {X1}.",
    "there {be:X1} also {X1}.", "besides {X1}, there {be:X2} {X2}.",
    "{T1} {be:T1} drawn over {S1}.",
    "{T1} and {T2} are in front of {S1}.", "{where:S1} of {U} there is {S1}.",
    "{where:S1} we can see {S1}.", "{S1} covers {N} of {U}.", "{S1} has {Q}.",
    "in {F} there {be:T1} {T1}.", "{~the colors} of {U} are bright and {X1} {be:X1} easy to see.",
    "{X1} and {X2} are also there.", "i can also notice {X1} in {U}.",
    "in {~the background} there is {S1}.", "{X1}, {X2} and {X3} can be seen in {U}.",
    "finally, there {be:X1} {X1}.",
)
# Sentences with ungrounded nouns only, as real narratives also talk about the picture itself.
FILLER_TEMPLATES = ("{U} has {~bright colors}.", "{U} looks like {P}.",
                    "{~the style} of {U} is simple.", "{~the lighting} in {U} is even.")
_SLOT = re.compile(r"(\{[^}]+\})")
_SENTENCE = re.compile(r"([.] )([a-z])")
_PRONOUN_I = re.compile(r"\bi\b")
MAX_NOUNS = 9


@dataclass(frozen=True)
class Phrase:
    """A grounded noun phrase: lower-case ``text`` and the segments it denotes."""

    text: str
    segment_ids: tuple[int, ...]
    plural: bool
    stuff: StuffRegion | None = None  # set for stuff phrases


# --- phrases --------------------------------------------------------------------------------------

def thing_words(attrs: Attrs, plural: bool, rng: np.random.Generator) -> str:
    """"small red circle", "red shapes", ...: attribute words then the noun."""
    a = dict(attrs)
    words = [str(rng.choice(SIZE_WORDS[a["size"]]))] if "size" in a else []
    words += [a["colour"]] if "colour" in a else []
    noun = a.get("shape") or str(rng.choice(("shape", "object")))
    if plural:
        noun += "es" if noun.endswith("ss") else "s"
    return " ".join(words + [noun])


def reference_text(ref: Reference, article: str, rng: np.random.Generator) -> str:
    """The words of a singular reference, e.g. "the star left of the green circle"."""
    words = thing_words(ref.attrs, False, rng)
    if ref.relation in EXTREME_WORDS:
        words = str(rng.choice(EXTREME_WORDS[ref.relation])).format(words)
    elif ref.relation:
        rel = str(rng.choice(RELATION_WORDS[ref.relation]))
        words = f"{words} {rel} the {thing_words(ref.anchor, False, rng)}"
    if article == "a" and words[0] in "aeiou":
        article = "an"
    return f"{article} {words}".strip()


def group_text(attrs: Attrs, n: int, rng: np.random.Generator) -> str:
    """A plural phrase for a group of exactly ``n`` things: "the triangles", "three blue squares".

    Count words and "both" are only used when they are the exact size of the group."""
    words = thing_words(attrs, True, rng)
    dets = ["the", "all the"] + ([NUMBERS[n]] if n in NUMBERS else []) + ["both"] * (n == 2)
    return f"{rng.choice(dets)} {words}"


def _singular_phrase(index: SceneIndex, i: int, rng: np.random.Generator) -> Phrase | None:
    """A phrase for thing ``i``: attributes alone mostly, a relation or extreme sometimes."""
    refs = index.references(i)
    if not refs:
        return None
    plain = [r for r in refs if not r.relation]
    spatial = [r for r in refs if r.relation]
    if plain and (not spatial or rng.random() < 0.7):
        ref = plain[0] if rng.random() < 0.5 else plain[int(rng.integers(len(plain)))]
    else:
        ref = spatial[int(rng.integers(len(spatial)))]
    text = reference_text(ref, str(rng.choice(("the", "the", "a"))), rng)
    return Phrase(text, (index.things[i].segment_id,), False)


def plan_phrases(scene: Scene, rng: np.random.Generator) -> list[Phrase]:
    """2-6 grounded phrases: 1-2 stuff, 0-2 plural groups, 1-2 single things, shuffled."""
    index = SceneIndex(scene.things, scene.image.shape[0])
    phrases = []
    for k in rng.permutation(len(scene.stuff))[:int(rng.integers(1, 3))]:
        region = scene.stuff[k]
        phrases.append(Phrase(str(rng.choice(STUFF_PHRASES[region.name])), (region.segment_id,),
                              False, region))
    groups = index.groups()
    for k in rng.permutation(len(groups))[:int(rng.choice(3, p=[0.2, 0.5, 0.3]))]:
        attrs, members = groups[k]
        ids = tuple(index.things[m].segment_id for m in members)
        phrases.append(Phrase(group_text(attrs, len(members), rng), ids, True))
    wanted = int(rng.integers(1, 3))
    for i in rng.permutation(len(scene.things)):
        single = _singular_phrase(index, int(i), rng) if wanted else None
        if single is not None:
            phrases.append(single)
            wanted -= 1
    return [phrases[k] for k in rng.permutation(len(phrases))]


# --- narratives -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Piece:
    text: str
    noun: bool
    phrase: Phrase | None = None

    @property
    def plural(self) -> bool:  # ungrounded nouns of the lists above are plural when ending in s
        return self.phrase.plural if self.phrase else self.noun and self.text.endswith("s")


def _fill(template: str, phrases: dict[str, Phrase], rng: np.random.Generator) -> list[_Piece]:
    """Cut a filled template into pieces: noun phrases and the text between them."""
    pieces = []
    for part in _SLOT.split(template):
        if not part.startswith("{"):
            if part.strip():
                pieces.append(_Piece(part.strip(), False))
            continue
        slot = part[1:-1]
        if slot in phrases:
            pieces.append(_Piece(phrases[slot].text, True, phrases[slot]))
        elif slot.startswith("~"):
            pieces.append(_Piece(slot[1:], True))
        elif slot in UNGROUNDED:
            pieces.append(_Piece(str(rng.choice(UNGROUNDED[slot])), True))
        elif slot.startswith("be:"):
            pieces.append(_Piece("are" if phrases[slot[3:]].plural else "is", False))
        elif slot.startswith("where:"):
            pieces.append(_Piece(phrases[slot[6:]].stuff.where, False))
        else:
            raise ValueError(f"unknown slot {part} in template {template!r}")
    return pieces


def _assign(template: str, queue: list[Phrase]) -> dict[str, Phrase] | None:
    """Take phrases for the template's slots from the front of ``queue`` (stuff slots take the
    first stuff phrase, thing slots the first thing phrase); None when they cannot be filled."""
    taken: dict[str, Phrase] = {}
    slots = set(re.findall(r"\{([XTS]\d)\}", template))
    for slot in sorted(slots, key=lambda s: ("STX".index(s[0]), s)):  # specific kinds first
        free = [p for p in queue if all(p is not q for q in taken.values())]
        kind = {"S": [p for p in free if p.stuff], "T": [p for p in free if not p.stuff]}
        pool = kind.get(slot[0], free)
        if not pool:
            return None
        taken[slot] = pool[0]
    return taken


def _sentence(templates: tuple[str, ...], queue: list[Phrase], budget: int,
              rng: np.random.Generator) -> list[_Piece]:
    """Fill one random template that fits ``queue`` and the noun ``budget``; pop its phrases."""
    for k in rng.permutation(len(templates)):
        slots = _assign(templates[k], queue)
        nouns = len(_SLOT.findall(re.sub(r"\{(be|where):\w+\}", "", templates[k])))
        if slots is not None and nouns <= budget:
            for p in slots.values():
                queue.remove(p)
            return _fill(templates[k], slots, rng)
    return []


def narrative_pieces(phrases: list[Phrase], rng: np.random.Generator) -> list[_Piece]:
    """Sentences that place every phrase once: an introduction, then body sentences."""
    queue = list(phrases)
    # A scene with nothing to ground (all stuff hidden, no describable thing) still gets a text.
    pieces = (_sentence(INTRO_TEMPLATES, queue, MAX_NOUNS, rng)
              or _sentence(FILLER_TEMPLATES, queue, MAX_NOUNS, rng))
    filler_at = int(rng.integers(len(queue) + 1)) if rng.random() < 0.9 else -1
    while queue:
        budget = MAX_NOUNS - sum(p.noun for p in pieces)
        more = _sentence(BODY_TEMPLATES, queue, budget, rng)
        if not more:  # no room for another noun phrase: leave the rest unsaid
            break
        pieces += more
        if len(queue) == filler_at:
            budget = MAX_NOUNS - sum(p.noun for p in pieces)
            pieces += _sentence(FILLER_TEMPLATES, queue, budget, rng)
    return pieces


def _cased(text: str, sentence_start: bool) -> str:
    """A piece as the caption writes it: sentences start upper-case, and so does the pronoun I."""
    if sentence_start:
        text = text[0].upper() + text[1:]
    text = _SENTENCE.sub(lambda m: m.group(1) + m.group(2).upper(), text)
    return _PRONOUN_I.sub("I", text)


def _caption(pieces: list[_Piece]) -> tuple[str, list[tuple[int, int]]]:
    """Join pieces into sentence-cased text, no space before punctuation; the span of each."""
    caption, spans = "", []
    for p in pieces:
        starts = not caption or caption.endswith(".")
        if caption and p.text[0] not in ".,":
            caption += " "
        spans.append((len(caption), len(caption) + len(p.text)))
        caption += _cased(p.text, starts)
    return caption, spans


def _merge(pieces: list[_Piece]) -> list[_Piece]:
    """Join neighbouring non-noun pieces (". in the"), as the real utterances are cut."""
    out: list[_Piece] = []
    for p in pieces:
        if out and not p.noun and not out[-1].noun:
            out[-1] = _Piece(f"{out[-1].text} {p.text}", False)
        else:
            out.append(p)
    return out


def make_narrative(scene: Scene, image_id: int, rng: np.random.Generator) -> Narrative:
    """One narrative of ``scene``, as read from a ``png_coco_<split>.json`` file."""
    pieces = _merge(narrative_pieces(plan_phrases(scene, rng), rng))
    caption, spans = _caption(pieces)
    utterances = tuple(Utterance(p.text, span, p.phrase.segment_ids if p.phrase else (), p.plural,
                                 p.noun) for p, span in zip(pieces, spans))
    return Narrative(image_id, caption, utterances, annotator_id=int(rng.integers(1, 50)))


# --- referring expressions ------------------------------------------------------------------------

def make_refs(scene: Scene, rng: np.random.Generator, max_refs: int = 4
              ) -> list[tuple[int, list[str]]]:
    """Up to ``max_refs`` ``(thing index, raw sentences)``: 1-3 expressions per referred thing.

    Expressions need an attribute or a relation: a bare shape name ("the star") is not used.
    """
    return [(i, [text for text, _ in typed]) for i, typed in make_typed_refs(scene, rng, max_refs)]


def make_typed_refs(scene: Scene, rng: np.random.Generator, max_refs: int = 4
                    ) -> list[tuple[int, list[tuple[str, str]]]]:
    """:func:`make_refs` with the type of each sentence: ``(thing index, [(raw sentence, type)])``,
    type being :attr:`Reference.kind` ("attributes", "relation" or "extreme").

    The random draws are exactly those of :func:`make_refs` (the benchmark files depend on them).
    """
    return [(i, [(text, kind) for text, kind, _ in sentences])
            for i, sentences in make_context_refs(scene, rng, max_refs)]


def make_context_refs(scene: Scene, rng: np.random.Generator, max_refs: int = 4
                      ) -> list[tuple[int, list[tuple[str, str, tuple[int, ...]]]]]:
    """:func:`make_typed_refs` with the things each sentence names besides its referent:
    ``(thing index, [(raw sentence, type, context thing indices)])``; the context is the anchor
    of a relation sentence (:meth:`SceneIndex.context`), ``()`` for the other types.

    The random draws are exactly those of :func:`make_refs` (the benchmark files depend on them).
    """
    index = SceneIndex(scene.things, scene.image.shape[0])
    out = []
    for i in rng.permutation(len(scene.things)):
        refs = [r for r in index.references(int(i)) if r.relation or len(r.attrs) > 1
                or r.attrs[0][0] != "shape"]
        if not refs:
            continue
        chosen = rng.permutation(len(refs))[:int(rng.integers(1, 4))]
        typed = [(reference_text(refs[k], str(rng.choice(("the", ""))), rng), refs[k].kind,
                  index.context(refs[k])) for k in chosen]
        typed = [(s[0].upper() + s[1:] if rng.random() < 0.3 else s, kind, context)
                 for s, kind, context in typed]
        # A repeated sentence is kept once, with the type and context of its first occurrence
        # (the same words name the same anchor: it is the only thing its attributes fit).
        out.append((int(i), _first(typed)))
        if len(out) == max_refs:
            break
    return out


def _first(typed: list[tuple[str, str, tuple[int, ...]]]) -> list[tuple[str, str, tuple[int, ...]]]:
    """``(sentence, type, context)`` triples without repeated sentences, first occurrences in
    order."""
    seen: dict[str, tuple[str, str, tuple[int, ...]]] = {}
    for entry in typed:
        seen.setdefault(entry[0], entry)
    return list(seen.values())
