"""Readers and writers of the data formats of formats.md: COCO panoptic, PNG
narratives, RefCOCO, and the project's own prediction and score files.

Every reader turns bad input into a :class:`groundkit.errors.FormatError` naming file, item, field.
"""
from groundkit.data.formats.coco_panoptic import (
    PanopticDataset,
    id_to_rgb,
    load_panoptic,
    read_segment_png,
    rgb_to_id,
    write_panoptic_json,
    write_segment_png,
)
from groundkit.data.formats.png_narratives import (
    check_narratives,
    load_narratives,
    locate,
    narrative_json,
    write_narratives,
)
from groundkit.data.formats.predictions import (
    grounding_record,
    panoptic_segments_json,
    phrase_record,
    read_grounding_predictions,
    read_referring_predictions,
    read_scores,
    write_grounding_predictions,
    write_panoptic_predictions,
    write_referring_predictions,
    write_scores,
)
from groundkit.data.formats.refcoco import (
    SPLITS,
    Instance,
    Instances,
    instance_from_mask,
    load_instances,
    load_referring,
    load_refs,
    select_refs,
    write_instances,
    write_refs,
)

__all__ = [
    "PanopticDataset", "id_to_rgb", "load_panoptic", "read_segment_png", "rgb_to_id",
    "write_panoptic_json", "write_segment_png",
    "check_narratives", "load_narratives", "locate", "narrative_json", "write_narratives",
    "grounding_record", "panoptic_segments_json", "phrase_record", "read_grounding_predictions",
    "read_referring_predictions", "read_scores",
    "write_grounding_predictions", "write_panoptic_predictions", "write_referring_predictions",
    "write_scores",
    "SPLITS", "Instance", "Instances", "instance_from_mask", "load_instances", "load_referring",
    "load_refs", "select_refs", "write_instances", "write_refs",
]
