"""VL-NMS's pseudo ground truth of contextual objects: the text-similarity method (paper, 3.3).

RefCOCO annotates the referent of an expression only, while VL-NMS wants every object the
expression mentions among its positives ("a cat on a white towel next to some keys": the towel and
the keys too). The paper's pseudo ground truth: the nouns of the expression against the category
names of the image's annotated objects; an object whose category name has a word-vector cosine of
at least ``gamma`` (0.4 in the paper) with one of the nouns is a contextual object. A proposal is
then a positive when its IoU with the referent or a contextual object is above 0.5.

Here:

- nouns come from :func:`expression_nouns` (the data's category names plus a small heuristic)
  instead of spaCy's tagger, an optional extra of this project;
- word vectors are injected, ``embed(list[str]) -> (n, D)`` tensor (e.g.
  :func:`groundkit.text.words.word_embedder`, the text encoder standing in for GloVe, which is not
  available offline), so this data module imports neither models nor the text encoder;
- **an expression with no noun** ("the one on the left") **has no contextual object**: its ground
  truth is the referent alone;
- the referent is never its own contextual object, and crowd annotations are never contextual
  objects (the referring dataset's object lists leave them out);
- the match is by category, as in the paper: "the star left of the circle" makes every other star
  and every circle of the image contextual, not only the circle the relation names.

The synthetic benchmark records the object a relation names in each sentence's
``"context_ann_ids"`` (:attr:`groundkit.structures.ReferringSample.context_ann_ids`), against which
``benchmarks/contextual_pseudo_gt.py`` measures this pseudo ground truth's precision and recall.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import torch
from torch import Tensor

from groundkit.errors import InputError

GAMMA = 0.4  # the paper's cosine threshold

Embed = Callable[[list[str]], Tensor]  # n words -> (n, D) vectors


class Annotation(Protocol):
    """What :func:`contextual_objects` reads of an annotation (e.g. a RefCOCO ``Instance``);
    an ``iscrowd`` attribute, when present and true, leaves the annotation out."""

    id: int
    category_id: int


# Closed-class words: determiners, pronouns, prepositions, conjunctions, auxiliaries, numerals
# and a few adverbs. None of them is a noun.
FUNCTION_WORDS = frozenset("""
a an the this that these those some any all both each every either neither no none another other
others such i me my mine you your yours he him his she her hers it its we us our they them their
theirs one ones who whom whose which what where when why how of in on at to from by for with without
within into onto upon off out over under above below behind beside besides between among near next
across along around through toward towards against beneath underneath inside outside about via like
than as and or but nor so yet is are was were be been being am has have had do does did not can
could will would should may might must very too also just only almost quite really more most less
least much many few lot lots there here up down away two three four five six seven eight nine ten
first second third fourth fifth last
""".split())
# Words that modify or place an object rather than name one: colours, sizes, positions and
# places ("the man on the left": "left" is where, not what) and frequent adjectives of RefCOCO.
MODIFIERS = frozenset("""
red orange yellow green blue purple pink brown black white gray grey tan beige silver gold golden
dark light bright pale navy maroon teal small smaller little large larger big bigger huge tiny giant
tall taller short shorter long longer wide fat thin skinny left right top bottom middle center
centre front back side corner edge far farther further near close closer upper lower background
foreground half part end row partial whole full empty open closed old young new same different
visible blurry
""".split())
# Nouns the suffix rules below would take for verb forms, superlatives or adverbs.
SUFFIX_NOUNS = frozenset("""
building ceiling painting clothing railing awning string wedding pudding frosting topping forest
butterfly
""".split())
_WORD = re.compile(r"[a-z]+")


def _suffix_says_not_noun(word: str) -> bool:
    """Verb forms ("holding", "striped"), superlatives ("closest", "leftmost"), adverbs
    ("partially"): a word this long with this ending is rarely a noun in a referring expression."""
    if word in SUFFIX_NOUNS:
        return False
    return (word.endswith("most") or (len(word) >= 6 and word.endswith(("ing", "est", "ly")))
            or (len(word) >= 5 and word.endswith("ed")))


def _plural_forms(word: str) -> tuple[str, ...]:
    forms = (word, word + "s", word + "es")
    return forms + ((word[:-1] + "ies",) if word.endswith("y") else ())


def expression_nouns(expression: str, vocabulary: Iterable[str] = ()) -> list[str]:
    """The nouns of a short referring expression, in order of appearance, each once.

    A simple extraction for the field's short expressions (RefCOCO: 3.5 words on average), not a
    tagger. The lower-cased expression is cut into words of letters (so "man's" -> "man", "s");
    then, left to right:

    1. a category name of ``vocabulary`` (e.g. the data's categories; several words allowed,
       "traffic light"), matched on whole words with the last one singular or plural ("rings",
       "boxes", "ponies"), is a noun, returned as the category name. A name that is also a
       modifier word ("orange") is a noun only when the next word is not a noun ("the orange on
       the left", not "the orange shirt");
    2. any other word is a noun unless it has one letter, is a closed-class word
       (:data:`FUNCTION_WORDS`), a modifier or place word (:data:`MODIFIERS`: colours, sizes,
       "left", "top", "background", ...) or has the ending of a verb form, superlative or adverb
       ("holding", "striped", "closest", "leftmost", "partially"; :data:`SUFFIX_NOUNS` lists the
       exceptions). Plurals stay as written ("keys").

    Generic nouns stay nouns ("shape", "object", "thing"): whether one matches a category is the
    word vectors' call. An expression with no noun gives ``[]``.
    """
    if not isinstance(expression, str):
        raise InputError(f"expression: expected a string, got {type(expression).__name__}")
    words = _WORD.findall(expression.lower())
    names = sorted({tuple(_WORD.findall(n.lower())) for n in vocabulary} - {()},
                   key=lambda n: (-len(n), n))  # longest first: "hot dog" before "dog"
    # Per position: (noun, words it covers, from the vocabulary) or None.
    found: list[tuple[str, int, bool] | None] = []
    i = 0
    while i < len(words):
        match = next((n for n in names if i + len(n) <= len(words)
                      and tuple(words[i:i + len(n) - 1]) == n[:-1]
                      and words[i + len(n) - 1] in _plural_forms(n[-1])), None)
        if match:
            found.append((" ".join(match), len(match), True))
            i += len(match)
            continue
        w = words[i]
        noun = len(w) > 1 and w not in FUNCTION_WORDS and w not in MODIFIERS and not _suffix_says_not_noun(w)
        found.append((w, 1, False) if noun else None)
        i += 1
    out: list[str] = []
    for k, entry in enumerate(found):
        if entry is None:
            continue
        noun, span, named = entry
        if named and span == 1 and noun in MODIFIERS and k + 1 < len(found) and found[k + 1]:
            continue  # "orange shirt": the colour of the shirt
        if noun not in out:
            out.append(noun)
    return out


def similar_names(nouns: Sequence[str], names: Sequence[str], embed: Embed,
                  gamma: float = GAMMA) -> set[str]:
    """The ``names`` whose vector has a cosine of at least ``gamma`` with one of ``nouns``'.

    ``embed(list[str]) -> (n, D)`` gives the vectors (one call, nouns then names). A name equal to
    a noun always counts (their cosine is 1; rounding must not decide), so ``gamma = 1`` keeps
    exact category-name matches only.
    """
    if not nouns or not names:
        return set()
    vectors = embed([*nouns, *names])
    if not isinstance(vectors, Tensor) or vectors.dim() != 2 or vectors.shape[0] != len(nouns) + len(names):
        shape = tuple(vectors.shape) if isinstance(vectors, Tensor) else type(vectors).__name__
        raise InputError(f"embed: expected a ({len(nouns) + len(names)}, D) tensor for "
                         f"{len(nouns) + len(names)} words, got {shape}")
    unit = torch.nn.functional.normalize(vectors.float(), dim=1)
    cosine = unit[:len(nouns)] @ unit[len(nouns):].T  # (nouns, names)
    best = cosine.max(0).values.tolist()
    return {n for n, c in zip(names, best) if c >= gamma or n in nouns}


def contextual_objects(expression: str, referent_ann_id: int, annotations: Iterable[Annotation],
                       category_names: Mapping[int, str], embed: Embed,
                       gamma: float = GAMMA) -> list[int]:
    """The pseudo ground truth of contextual objects of one expression: the ids of the image's
    other annotated objects whose category name has a cosine of at least ``gamma`` with a noun of
    ``expression`` (:func:`expression_nouns`, with the category names as vocabulary).

    Args:
        expression: the referring expression.
        referent_ann_id: the referent's annotation id; it is never returned.
        annotations: the annotated objects of the expression's image (objects with ``id`` and
            ``category_id``, e.g. ``Instances.annotations`` values of that image); crowds
            (``iscrowd`` true) are left out.
        category_names: ``{category id: name}`` of the data's categories.
        embed: ``embed(list[str]) -> (n, D)`` word vectors
            (:func:`groundkit.text.words.word_embedder`).
        gamma: the cosine threshold (the paper's 0.4).

    Returns:
        annotation ids in the order of ``annotations``; ``[]`` when the expression has no noun
        (the referent alone is then the ground truth).
    """
    names = {int(k): str(v).lower() for k, v in category_names.items()}
    nouns = expression_nouns(expression, names.values())
    others = [a for a in annotations if a.id != referent_ann_id and not getattr(a, "iscrowd", False)]
    if not nouns or not others:
        return []
    unknown = sorted({a.category_id for a in others} - names.keys())
    if unknown:
        raise InputError(f"category ids {unknown} of the image's annotations have no name in "
                         "category_names")
    close = similar_names(nouns, sorted({names[a.category_id] for a in others}), embed, gamma)
    return [a.id for a in others if names[a.category_id] in close]


def samples_contextual_objects(samples: Sequence, instances: object, embed: Embed,
                               gamma: float = GAMMA) -> list[list[int]]:
    """:func:`contextual_objects` of every referring sample (``sentence``, ``ann_id``,
    ``image_id``, e.g. :class:`~groundkit.structures.ReferringSample`), in order: the pseudo ground
    truth of a whole split, computed once. ``instances``: ``annotations`` ``{id: annotation}`` and
    ``categories`` ``{id: category with a name}`` (a RefCOCO ``Instances``)."""
    by_image: dict[int, list] = {}
    for ann in instances.annotations.values():
        by_image.setdefault(ann.image_id, []).append(ann)
    names = {c.id: c.name for c in instances.categories.values()}
    return [contextual_objects(s.sentence, s.ann_id, by_image.get(s.image_id, []), names, embed, gamma)
            for s in samples]
