"""Readers and writers of the field's data formats (see docs on formats): COCO panoptic, PNG
narratives, RefCOCO, and the project's own prediction and score files.

Every reader turns bad input into a :class:`groundkit.errors.FormatError` naming file, item, field.
"""
from groundkit.data.formats.coco_panoptic import (
    PanopticDataset, id_to_rgb, load_panoptic, read_segment_png, rgb_to_id, write_panoptic_json,
    write_segment_png)
from groundkit.data.formats.png_narratives import (
    check_narratives, load_narratives, locate, narrative_json, write_narratives)
from groundkit.data.formats.refcoco import write_refs

__all__ = [
    "PanopticDataset", "id_to_rgb", "load_panoptic", "read_segment_png", "rgb_to_id",
    "write_panoptic_json", "write_segment_png",
    "check_narratives", "load_narratives", "locate", "narrative_json", "write_narratives",
    "write_refs",
]
