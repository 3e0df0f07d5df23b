"""Every phrase and referring expression denotes exactly what it is grounded to.

The check is independent of ``describe.py``: a small parser reads the words back and evaluates
them on the scene with plain semantics ("left of" = centre further left, "leftmost" = smallest x).
"""
import re

import numpy as np
import pytest

from groundkit.data.synthetic.describe import Reference, SceneIndex
from groundkit.data.synthetic.language import (
    BODY_TEMPLATES,
    FILLER_TEMPLATES,
    INTRO_TEMPLATES,
    make_context_refs,
    make_narrative,
    make_refs,
    make_typed_refs,
)
from groundkit.data.synthetic.scene import COLOURS, SHAPES, Scene, make_scene

SIZE = {"small": "small", "little": "small", "large": "large", "big": "large"}
STUFF = {"sky": "sky", "grass": "grass", "water": "water", "sea": "water", "sand": "sand",
         "wall": "wall", "road": "road", "asphalt": "road", "floor": "floor"}
COUNTS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "both": 2}
SUFFIX = {"on the left": ("x", min), "on the right": ("x", max), "at the top": ("y", min),
          "at the bottom": ("y", max)}
PREFIX = {"leftmost": ("x", min), "rightmost": ("x", max), "topmost": ("y", min),
          "lowest": ("y", max)}
RELATION = {"left of": ("x", -1), "to the left of": ("x", -1), "right of": ("x", 1),
            "to the right of": ("x", 1), "above": ("y", -1), "below": ("y", 1), "under": ("y", 1)}
RELATION_THE = re.compile(r" (to the left of|left of|to the right of|right of|above|below|under) the ")
NOUN = re.compile(r"(?:(leftmost|rightmost|topmost|lowest) )?(?:(small|little|large|big) )?"
                  r"(?:(" + "|".join(COLOURS) + r") )?(\w+)")


def _things(text: str, scene: Scene) -> list[int]:
    """Indices of the things matching "[extreme] [size] [colour] noun"; plural nouns allowed."""
    m = NOUN.fullmatch(text)
    assert m, text
    extreme, size, colour, noun = m.groups()
    shape = next((s for s in SHAPES if noun in (s, s + "s", s + "es")), None)
    assert shape or noun in ("shape", "shapes", "object", "objects"), text
    out = [i for i, t in enumerate(scene.things)
           if (not shape or t.shape == shape) and (not colour or t.colour == colour)
           and (not size or t.size == SIZE[size])]
    return _extreme(out, PREFIX[extreme], scene) if extreme else out


def _centre(scene: Scene, i: int, axis: str) -> float:
    return scene.things[i].centre[0 if axis == "x" else 1]


def _extreme(candidates: list[int], rule: tuple[str, callable], scene: Scene) -> list[int]:
    axis, pick = rule
    assert len(candidates) >= 2, "an extreme needs someone to beat"
    return [pick(candidates, key=lambda i: _centre(scene, i, axis))]


def denote(text: str, scene: Scene) -> tuple[set[int], bool]:
    """Segment ids a phrase names, and whether they are several; asserts a count word is exact."""
    text = text.lower()
    words = text.split()
    if words[-1] in STUFF:
        return {s.segment_id for s in scene.stuff if s.name == STUFF[words[-1]]}, False
    det = re.match(r"(all the|the|an|a|both|two|three|four|five|six) ", text)
    body = text[det.end():] if det else text
    count = COUNTS.get(det.group(1)) if det else None
    rel = RELATION_THE.search(body)
    suffix = next((s for s in SUFFIX if body.endswith(" " + s)), None)
    if rel:
        anchor = _things(body[rel.end():], scene)
        assert len(anchor) == 1, f"{text}: the anchor must be unique"
        axis, sign = RELATION[rel.group(1)]
        found = [i for i in _things(body[:rel.start()], scene) if i != anchor[0] and
                 sign * (_centre(scene, i, axis) - _centre(scene, anchor[0], axis)) > 0]
    elif suffix:
        found = _extreme(_things(body[:-len(suffix) - 1], scene), SUFFIX[suffix], scene)
    else:
        found = _things(body, scene)
    if count is not None:
        assert len(found) == count, f"{text!r} counts {count}, the scene has {len(found)}"
    return {scene.things[i].segment_id for i in found}, len(found) > 1


SCENES = [(seed, make_scene(np.random.default_rng(seed), 128)) for seed in range(40)]


@pytest.mark.parametrize("seed,scene", SCENES[:20])
def test_every_grounded_phrase_denotes_exactly_its_segments(seed, scene):
    narrative = make_narrative(scene, seed, np.random.default_rng([seed, 1]))
    for _, u in narrative.grounded():
        ids, _ = denote(u.text, scene)
        assert ids == set(u.segment_ids), u.text
        assert u.plural == (len(u.segment_ids) > 1)


@pytest.mark.parametrize("seed,scene", SCENES)
def test_every_referring_expression_picks_out_its_thing_alone(seed, scene):
    for thing, sentences in make_refs(scene, np.random.default_rng([seed, 2])):
        assert sentences
        for s in sentences:
            ids, plural = denote(s, scene)
            assert ids == {scene.things[thing].segment_id} and not plural, s
            bare = re.sub(r"^the ", "", s.lower()) in SHAPES
            assert not bare, f"{s!r} has neither an attribute nor a relation"


def test_narrative_shape_matches_the_benchmark():
    nouns, grounded, plural = [], [], 0
    for seed, scene in SCENES:
        n = make_narrative(scene, seed, np.random.default_rng([seed, 3]))
        assert n.caption[0].isupper() and n.caption.endswith(".")
        for u in n.utterances:  # utterances are lower-case pieces of the caption, in order
            assert u.text == u.text.lower() and n.caption[u.span[0]:u.span[1]].lower() == u.text
        assert [u.span for u in n.utterances] == sorted(u.span for u in n.utterances)
        nouns.append(sum(u.noun for u in n.utterances))
        grounded.append(len(n.grounded()))
        plural += sum(len(u.segment_ids) > 1 for _, u in n.grounded())
    assert 3 <= min(nouns) and max(nouns) <= 9
    assert 0.4 <= sum(grounded) / sum(nouns) <= 0.7  # about half the noun phrases are grounded
    assert plural / sum(grounded) >= 0.15


def test_at_least_twenty_templates_and_all_of_them_fill():
    assert len(INTRO_TEMPLATES) + len(BODY_TEMPLATES) >= 20
    used = set()
    for seed, scene in SCENES:
        n = make_narrative(scene, seed, np.random.default_rng([seed, 4]))
        used.add(n.caption)
    assert len(used) == len(SCENES)  # no two narratives alike
    assert FILLER_TEMPLATES


def test_ambiguous_relations_are_refused():
    # Pretend every pair of things is too close to tell apart along both axes.
    scene = SCENES[0][1]
    index = SceneIndex(scene.things, 128)
    index.sides = [[[0] * len(scene.things) for _ in scene.things] for _ in range(2)]
    for i in range(len(scene.things)):
        for ref in index.references(i):
            assert not ref.relation, "no relation may hold when every pair is too close to tell"
    assert index.denotes(Reference(0, (("shape", scene.things[0].shape),), "left")) == []


def test_a_scene_with_nothing_to_ground_still_gets_a_sentence():
    scene = make_scene(np.random.default_rng(0), 128)
    scene.stuff, scene.things = [], []
    n = make_narrative(scene, 0, np.random.default_rng(0))
    assert n.caption.endswith(".") and not n.grounded() and any(u.noun for u in n.utterances)


@pytest.mark.parametrize("seed,scene", SCENES)
def test_a_relation_sentence_names_its_anchor_as_context(seed, scene):
    for thing, sentences in make_context_refs(scene, np.random.default_rng([seed, 2])):
        for text, kind, context in sentences:
            rel = RELATION_THE.search(text.lower())
            if kind != "relation":
                assert context == () and rel is None, text
                continue
            anchor = _things(text.lower()[rel.end():], scene)  # the words after "left of the"
            assert context == tuple(anchor) and len(anchor) == 1 and thing not in context, text


def test_context_refs_draw_exactly_as_typed_refs():
    for seed, scene in SCENES[:8]:
        a, b = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 1])
        described = make_context_refs(scene, a)
        assert make_typed_refs(scene, b) == [(i, [(t, k) for t, k, _ in s]) for i, s in described]
        assert a.random() == b.random()  # the generator is left in the same state
    kinds = {k for _, scene in SCENES[:8] for _, s in make_context_refs(scene, np.random.default_rng(0))
             for _, k, _ in s}
    assert kinds == {"attributes", "relation", "extreme"}
