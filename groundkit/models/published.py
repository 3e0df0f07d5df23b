"""The papers' published numbers of each model type, for reports that show them beside ours.

They were measured on real data (COCO images, Localized Narratives, RefCOCO) with full-size models,
ours on the synthetic benchmark with small ones: a report shows them for scale, labelled as such,
never as comparable numbers. Sources: ``shared/reference/methods.md`` and the papers' tables.

``scores`` are percentages keyed as the family's ``Evaluation.log_metrics()`` (``ar``,
``ar_things``, ``pq``, ``acc@0.5``, ``oiou``, ...), so a report can put them in the same rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Published:
    """One row of a paper's results table."""

    method: str                  # the method's name in the paper ("PPMN", "PBREC-MT")
    paper: str                   # the paper's title
    data: str                    # the evaluation data ("PNG val", "COCO 2017 val")
    scores: Mapping[str, float]  # percentages, keyed as the family's log metrics


_PPMN = Published(
    "PPMN", "PPMN: Pixel-Phrase Matching Network for One-Stage Panoptic Narrative Grounding",
    "PNG val (COCO images, Localized Narratives), ResNet-101 FPN, BERT (Table 1)",
    {"ar": 59.4, "ar_things": 57.2, "ar_stuff": 62.5, "ar_singulars": 60.0, "ar_plurals": 54.0})
_DRMN = Published(
    "DRMN", "Context Does Matter: End-to-end Panoptic Narrative Grounding with Deformable "
            "Attention Refined Matching Network",
    "PNG val (COCO images, Localized Narratives), ResNet-101 FPN, BERT (Table II)",
    {"ar": 62.9, "ar_things": 60.3, "ar_stuff": 66.4, "ar_singulars": 63.6, "ar_plurals": 56.7})
_PANOPTIC = Published(
    "Unified panoptic (w/ mask)", "Unifying Training and Inference for Panoptic Segmentation",
    "COCO 2017 val, ResNet-50 (Tables 3 and J)",
    {"pq": 43.4, "sq": 79.6, "rq": 53.0, "pq_things": 48.6, "sq_things": 80.0, "rq_things": 59.2,
     "pq_stuff": 35.5, "sq_stuff": 78.9, "rq_stuff": 43.8})
_PBREC_TITLE = ("Rethinking Two-Stage Referring Expression Comprehension: A Novel Grounding and "
                "Segmentation Method Modulated by Point")
_PBREC = Published("PBREC", _PBREC_TITLE, "RefCOCO val, ResNet-101 (Tables 2 and 3)",
                   {"acc@0.5": 82.20, "oiou": 71.11})
_PBREC_MT = Published("PBREC-MT", _PBREC_TITLE, "RefCOCO val, ResNet-101 (Tables 2 and 3)",
                      {"acc@0.5": 82.94, "oiou": 71.44})

_VLNMS_TITLE = ("VL-NMS: Breaking Proposal Bottlenecks in Two-Stage Visual-Language Matching")
_VLNMS_DATA = "RefCOCO val, ResNet-101 Mask R-CNN proposals (Table 2)"
_MATTNET = Published("MAttNet (the paper's re-run)", _VLNMS_TITLE, _VLNMS_DATA,
                     {"acc@0.5": 76.92, "oiou": 57.14})
_MATTNET_FC = Published("MAttNet + VL-NMS FC (BCE)", _VLNMS_TITLE, _VLNMS_DATA,
                        {"acc@0.5": 78.82, "oiou": 59.75})
_MATTNET_TRANS = Published("MAttNet + VL-NMS Trans", _VLNMS_TITLE, _VLNMS_DATA,
                           {"acc@0.5": 79.16, "oiou": 59.73})

PUBLISHED: dict[str, tuple[Published, ...]] = {
    "ppmn": (_PPMN,),
    "drmn": (_DRMN,),
    "panoptic": (_PANOPTIC,),
    "pbrec": (_PBREC, _PBREC_MT),
    "matcher": (_MATTNET, _MATTNET_FC, _MATTNET_TRANS),
}


def published(model_type: str) -> tuple[Published, ...]:
    """The published results of ``model_type`` (none for a type without a paper)."""
    return PUBLISHED.get(model_type, ())
