"""The few typed records that cross layers.

Readers in ``groundkit.data.formats`` produce these; models, metrics and writers consume them.
Boxes are ``xyxy`` absolute pixels everywhere in Python; ``xywh`` only inside COCO files.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Iterator

import numpy as np

# --- COCO panoptic -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Category:
    """A COCO panoptic category; ``isthing`` separates countable things from amorphous stuff."""

    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int] = (0, 0, 0)
    supercategory: str = ""


@dataclass(frozen=True)
class ImageRecord:
    """One image of a split: ``file_name`` is relative to the split's image folder."""

    id: int
    file_name: str
    height: int
    width: int


@dataclass(frozen=True)
class Segment:
    """One segment of a panoptic annotation. ``bbox`` is COCO ``[x, y, w, h]``."""

    id: int
    category_id: int
    area: int = 0
    bbox: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    iscrowd: bool = False
    score: float | None = None  # predictions only


@dataclass(frozen=True)
class PanopticAnnotation:
    """The segments of one image; ``file_name`` is the segment PNG inside the panoptic folder."""

    image_id: int
    file_name: str
    segments: tuple[Segment, ...]

    def segment(self, segment_id: int) -> Segment | None:
        """The segment with this id, or None."""
        for s in self.segments:
            if s.id == segment_id:
                return s
        return None


# --- Panoptic narrative grounding ---------------------------------------------------------------

@dataclass(frozen=True)
class Utterance:
    """One piece of a narrative's caption.

    ``span`` is the ``[start, end)`` character range of the utterance in the caption, found by the
    case-insensitive left-to-right search of formats.md. A noun phrase is *grounded* when it has
    segment ids; ``plural`` is the annotator's flag, which metrics do not use.
    """

    text: str
    span: tuple[int, int]
    segment_ids: tuple[int, ...] = ()
    plural: bool = False
    noun: bool = False

    @property
    def grounded(self) -> bool:
        return self.noun and len(self.segment_ids) > 0


@dataclass(frozen=True)
class Narrative:
    """A caption of one image cut into utterances, as in ``png_coco_<split>.json``."""

    image_id: int
    caption: str
    utterances: tuple[Utterance, ...]
    annotator_id: int = 0

    def grounded(self) -> list[tuple[int, Utterance]]:
        """``(segment_index, utterance)`` of every grounded noun phrase, in caption order."""
        return [(i, u) for i, u in enumerate(self.utterances) if u.grounded]

    @property
    def key(self) -> tuple[int, str]:
        """A narrative is identified by (image id, caption) in prediction files."""
        return (self.image_id, self.caption)


# --- Referring expressions ------------------------------------------------------------------------

@dataclass(frozen=True)
class ReferringSample:
    """One evaluation sample of RefCOCO: a sentence that refers to one annotated object.

    ``context_ann_ids``: the other annotated objects the sentence names (a relation's anchor), as
    the synthetic refs record them in a sentence's ``"context_ann_ids"``; ``()`` when the refs do
    not say (real RefCOCO files never do).
    """

    ref_id: int
    sent_id: int
    ann_id: int
    image_id: int
    category_id: int
    split: str
    sentence: str
    tokens: tuple[str, ...] = ()
    file_name: str = ""
    context_ann_ids: tuple[int, ...] = ()


# --- Results (one per image, as DETR / Hugging Face post-processors return) ------------------

class Result:
    """Mapping-style access to a result dataclass, as Hugging Face's ``ModelOutput``:
    ``result.masks`` and ``result["masks"]`` are the same array; ``keys()`` lists the fields.
    ``image_fields`` names the fields that are maps at the image's size (``(..., H, W)``)."""

    image_fields: ClassVar[tuple[str, ...]] = ()

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def keys(self) -> list[str]:
        return [f.name for f in fields(self)]  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


@dataclass
class GroundingResult(Result):
    """Grounding of one caption on one image.

    caption: the grounded text (phrase brackets removed); phrases: N phrase strings; spans: N
    ``(start, end)`` character spans in the caption; masks: ``(N, H, W) bool`` at image size;
    scores: ``(N,) float`` mean probability inside the mask; probs: ``(N, H, W) float32`` each
    phrase's probability map at image size (``masks == probs > model.cfg.threshold``), only when
    asked for (``return_logits=True``), else None.
    """

    image_fields: ClassVar[tuple[str, ...]] = ("masks",)

    caption: str
    phrases: list[str]
    spans: list[tuple[int, int]]
    masks: np.ndarray
    scores: np.ndarray
    probs: np.ndarray | None = None


@dataclass
class ReferringResult(Result):
    """The referent of one expression on one image.

    box: ``(4,)`` xyxy pixels; score: float; mask: ``(H, W) bool`` at image size (RES models);
    proposals: ``(k, 4)`` xyxy pixels, best ranked first: the boxes the choice was made among
    (a point-based model adds the next best up to the paper's 12 when its vote takes fewer);
    expression: the text it refers to.
    """

    image_fields: ClassVar[tuple[str, ...]] = ("mask",)

    box: np.ndarray
    score: float
    mask: np.ndarray | None = None
    proposals: np.ndarray | None = None
    expression: str = ""


@dataclass
class PanopticResult(Result):
    """detectron2's panoptic output: ``id_map (H, W) int64`` (0 = void) and one info dict a segment.

    ``segments_info`` items: ``{"id", "category_id", "isthing", "score"}``. ``probs``, only when
    asked for (``return_logits=True``), else None: ``(S, H, W) float32`` at image size, row k the
    probability of segment ``segments_info[k]`` at each pixel (the softmax over the model's
    panoptic channels, whose argmax is ``id_map``).
    """

    image_fields: ClassVar[tuple[str, ...]] = ("id_map",)

    id_map: np.ndarray
    segments_info: list[dict[str, Any]] = field(default_factory=list)
    probs: np.ndarray | None = None
