"""What a description of the scene's things denotes: attributes, relations, extremes, groups.

The language module only ever says what a :class:`Reference` or a group denotes here, so every
singular phrase picks out exactly one thing and every plural phrase exactly its group. Spatial
words need a clear margin (``RELATION_MARGIN`` of the image size): a relation holds, clearly fails,
or is ambiguous, and an ambiguous case is never used.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import product
from typing import Sequence

import numpy as np

from groundkit.data.synthetic.scene import Thing

Attrs = tuple[tuple[str, str], ...]  # sorted (attribute, value) pairs, e.g. (("colour", "red"),)

# Attribute sets a singular description may use, simplest first.
ATTRIBUTE_SETS = (("shape",), ("colour", "shape"), ("size", "shape"), ("colour",),
                  ("colour", "size", "shape"), ("colour", "size"))
# What the target of a relation or an extreme is called before the spatial words.
BASE_SETS = (("shape",), ("colour", "shape"), ("colour",))
# Attribute sets of plural groups; () is "the shapes", every thing.
GROUP_SETS = (("shape",), ("colour",), ("colour", "shape"), ("size", "shape"), ("colour", "size"),
              ("size",), ())
# (axis, sign): the target's centre minus the anchor's, times sign, must exceed the margin.
RELATIONS = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}
EXTREMES = {"left": (0, -1), "right": (0, 1), "top": (1, -1), "bottom": (1, 1)}
RELATION_MARGIN = 0.06


@dataclass(frozen=True)
class Reference:
    """How a phrase singles out thing ``target``.

    ``relation`` is "" (attributes alone), a key of ``RELATIONS`` (then ``anchor`` holds the
    attributes that pick out the anchor thing) or a key of ``EXTREMES``.
    """

    target: int
    attrs: Attrs
    relation: str = ""
    anchor: Attrs = ()

    @property
    def kind(self) -> str:
        """The sentence type of the reference: "attributes", "relation" or "extreme"."""
        if not self.relation:
            return "attributes"
        return "extreme" if self.relation in EXTREMES else "relation"


def attrs_of(thing: Thing, names: Sequence[str]) -> Attrs:
    """The values of ``thing`` for the attribute ``names``, as sorted pairs."""
    return tuple(sorted((n, getattr(thing, n)) for n in names))


class SceneIndex:
    """The things of one scene, with the geometry and the uniqueness tests descriptions need."""

    def __init__(self, things: Sequence[Thing], image_size: int) -> None:
        self.things = list(things)
        self.centres = np.array([t.centre for t in things], dtype=np.float64).reshape(-1, 2)
        # sides[axis][i][j]: +1 when i is clearly beyond j along the axis, -1 clearly before it,
        # 0 when they are too close to tell.
        d = self.centres[:, None, :] - self.centres[None, :, :]
        margin = RELATION_MARGIN * image_size
        self.sides = [(np.sign(d[..., a]) * (np.abs(d[..., a]) > margin)).astype(int).tolist()
                      for a in (0, 1)]
        self._selected: dict[Attrs, list[int]] = {}

    def select(self, attrs: Attrs) -> list[int]:
        """Indices of the things having every attribute value of ``attrs``."""
        if attrs not in self._selected:  # descriptions repeat a lot: cache their selections
            self._selected[attrs] = [i for i, t in enumerate(self.things)
                                     if all(getattr(t, k) == v for k, v in attrs)]
        return self._selected[attrs]

    def unique_attrs(self, i: int) -> list[Attrs]:
        """Attribute descriptions (from ``ATTRIBUTE_SETS``) that pick out thing ``i`` alone."""
        return self._unique[i]

    @cached_property
    def _unique(self) -> list[list[Attrs]]:
        out = []
        for i, t in enumerate(self.things):
            out.append([a for a in (attrs_of(t, names) for names in ATTRIBUTE_SETS)
                        if self.select(a) == [i]])
        return out

    def side(self, i: int, j: int, axis: int, sign: int) -> int:
        """+1 when thing ``i`` is clearly beyond ``j`` along ``axis * sign``, -1 when clearly not,
        0 when too close to tell."""
        return self.sides[axis][i][j] * sign

    def references(self, i: int) -> list[Reference]:
        """Every unambiguous reference to thing ``i``: attributes, relations, extremes."""
        refs = [Reference(i, a) for a in self.unique_attrs(i)]
        bases = {attrs_of(self.things[i], names) for names in BASE_SETS}
        for base in sorted(bases):
            for name in EXTREMES:
                ref = Reference(i, base, name)
                if self.denotes(ref) == [i]:
                    refs.append(ref)
            for j, (name, (axis, sign)) in product(range(len(self.things)), RELATIONS.items()):
                # Cheap test first: the relation must hold for i before it can single i out.
                if j != i and self.side(i, j, axis, sign) == 1 and self.unique_attrs(j):
                    ref = Reference(i, base, name, self.unique_attrs(j)[0])
                    if self.denotes(ref) == [i]:
                        refs.append(ref)
        return refs

    def denotes(self, ref: Reference) -> list[int]:
        """The things ``ref`` picks out; ``[]`` when it is ambiguous or false."""
        candidates = self.select(ref.attrs)
        if not ref.relation:
            return candidates
        if ref.relation in EXTREMES:  # beyond every other candidate; needs someone to beat
            axis, sign = EXTREMES[ref.relation]
            return [c for c in candidates if len(candidates) > 1
                    and all(self.side(c, o, axis, sign) == 1 for o in candidates if o != c)]
        anchors = self.select(ref.anchor)
        if len(anchors) != 1:
            return []
        axis, sign = RELATIONS[ref.relation]
        sides = {c: self.side(c, anchors[0], axis, sign) for c in candidates if c != anchors[0]}
        holds = [c for c, s in sides.items() if s == 1]
        # One candidate clearly holds, every other one clearly does not.
        return holds if len(holds) == 1 and all(s != 0 for s in sides.values()) else []

    def context(self, ref: Reference) -> tuple[int, ...]:
        """The things other than the target that ``ref`` names: the anchor of a relation (the
        circle of "the star left of the green circle"); none for attributes and extremes (an
        extreme compares its target with the other candidates but names none of them)."""
        if ref.kind != "relation":
            return ()
        return tuple(self.select(ref.anchor))

    def groups(self) -> list[tuple[Attrs, tuple[int, ...]]]:
        """Plural groups: ``(attrs, members)`` for every attribute description of two or more
        things, one description per distinct member set (the simplest)."""
        seen: set[tuple[int, ...]] = set()
        out = []
        for names in GROUP_SETS:
            for attrs in sorted({attrs_of(t, names) for t in self.things}):
                members = tuple(self.select(attrs))
                if len(members) >= 2 and members not in seen:
                    seen.add(members)
                    out.append((attrs, members))
        return out
