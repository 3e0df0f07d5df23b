"""Panoptic Narrative Grounding narratives: ``png_coco_<split>.json``, a JSON list of narratives.

A narrative is ``{"image_id": "226461", "annotator_id": int, "caption": str, "segments": [...]}``
whose ``segments`` cut the caption, in order, into utterances ``{"utterance", "segment_ids" (strings),
"plural", "noun"}``. Ids are read as ints and written back as strings, so a round trip is exact.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from groundkit._io import write_json
from groundkit.data.formats._fields import MAX_SEGMENT_ID, get, get_int, get_list, int_id, read_json
from groundkit.data.formats.coco_panoptic import PanopticDataset
from groundkit.errors import FormatError
from groundkit.structures import Narrative, Utterance


def load_narratives(path: str | Path) -> list[Narrative]:
    """Read a PNG narratives file; each utterance gets its ``[start, end)`` span in the caption."""
    data = read_json(path)
    if not isinstance(data, list):
        raise FormatError(path, f"expected a JSON list of narratives, got {type(data).__name__}")
    return [_narrative(x, path, i) for i, x in enumerate(data)]


def _narrative(x: Any, file: str | Path, index: int) -> Narrative:
    item = f"narrative {index}"
    image_id = int_id(get(x, "image_id", "id", file, item), file, item, "image_id")
    item = f"narrative {index} (image {image_id})"
    caption = get(x, "caption", "str", file, item)
    utterances, start = [], 0
    for j, seg in enumerate(get(x, "segments", "list", file, item)):
        utterance = _utterance(seg, caption, start, file, f"{item}, utterance {j}")
        utterances.append(utterance)
        start = utterance.span[1]
    return Narrative(image_id=image_id, caption=caption, utterances=tuple(utterances),
                     annotator_id=get_int(x, "annotator_id", file, item, default=0))


def _utterance(x: Any, caption: str, start: int, file: str | Path, item: str) -> Utterance:
    text = get(x, "utterance", "str", file, item)
    span = locate(caption, text, start)
    if span is None:
        raise FormatError(file, f"utterance {text!r} not found in the caption {caption!r} after "
                          f"character {start}", item=item, field="utterance")
    ids = get_list(x, "segment_ids", "id", file, item)
    return Utterance(text=text, span=span,
                     segment_ids=tuple(int_id(s, file, item, "segment_ids", MAX_SEGMENT_ID)
                                       for s in ids),
                     plural=get(x, "plural", "bool", file, item),
                     noun=get(x, "noun", "bool", file, item))


def locate(caption: str, utterance: str, start: int = 0) -> tuple[int, int] | None:
    """``[start, end)`` of the first case-insensitive match of ``utterance`` at or after ``start``.

    Utterances are lower-cased pieces of the caption, so this search (not concatenation) finds them.
    """
    at = _lower(caption).find(_lower(utterance), start)
    return None if at < 0 else (at, at + len(utterance))


def _lower(text: str) -> str:
    """Lower case with positions kept: a character whose lower case is longer (e.g. 'İ') stays."""
    lowered = text.lower()
    if len(lowered) == len(text):  # no character changed length (lower() never drops one)
        return lowered
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def check_narratives(narratives: Iterable[Narrative], panoptic: PanopticDataset,
                     file: str | Path | None = None) -> None:
    """FormatError unless every narrative's image and segment ids are in ``panoptic``'s JSON."""
    for i, n in enumerate(narratives):
        item = f"narrative {i} (image {n.image_id})"
        ann = panoptic.annotations.get(n.image_id)
        if ann is None:
            raise FormatError(file, f"image {n.image_id} has no annotation in {panoptic.json_path}",
                              item=item, field="image_id")
        known = {s.id for s in ann.segments}
        for j, u in enumerate(n.utterances):
            missing = [s for s in u.segment_ids if s not in known]
            if missing:
                raise FormatError(file, f"segment id {missing[0]} is not in the annotation of image "
                                  f"{n.image_id} in {panoptic.json_path}",
                                  item=f"{item}, utterance {j} {u.text!r}", field="segment_ids")


def narrative_json(n: Narrative) -> dict[str, Any]:
    """One narrative in the file's own form (ids as strings)."""
    return {"image_id": str(n.image_id), "annotator_id": n.annotator_id, "caption": n.caption,
            "segments": [{"utterance": u.text, "segment_ids": [str(s) for s in u.segment_ids],
                          "plural": u.plural, "noun": u.noun} for u in n.utterances]}


def write_narratives(path: str | Path, narratives: Iterable[Narrative]) -> None:
    """Write narratives in the ``png_coco_<split>.json`` format, atomically."""
    write_json(path, [narrative_json(n) for n in narratives])
