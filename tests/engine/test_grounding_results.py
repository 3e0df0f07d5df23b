"""GroundingTask.results: the predictions file's masks come back with their narratives (the
overlays of `groundkit demo` draw them)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from groundkit.data.formats import grounding_record, load_narratives, load_panoptic
from groundkit.engine.grounding import PREDICTIONS, GroundingTask
from groundkit.errors import FormatError

SAMPLE = Path(__file__).parents[1] / "fixtures" / "coco_sample"


@pytest.fixture
def case(tmp_path):
    panoptic = load_panoptic(SAMPLE / "panoptic.json", SAMPLE / "panoptic")
    narratives = load_narratives(SAMPLE / "png_narratives.json")
    records = []
    for n in narratives:
        grounded = n.grounded()
        masks = panoptic.union_masks(n.image_id, [u.segment_ids for _, u in grounded])
        records.append(grounding_record(n, [i for i, _ in grounded], masks, [0.5] * len(grounded)))
    (tmp_path / PREDICTIONS).write_text(json.dumps(records))
    image = {i: np.zeros((r.height, r.width, 3), np.uint8) for i, r in panoptic.images.items()}
    dataset = SimpleNamespace(narratives=narratives, load_image=image.__getitem__)
    return dataset, records, tmp_path


def test_results_carry_the_predicted_masks(case):
    dataset, records, pred_dir = case
    results = list(GroundingTask().results(dataset, pred_dir))
    assert len(results) == 2
    for (image, result), n in zip(results, dataset.narratives):
        grounded = n.grounded()
        assert result.masks.shape == (len(grounded), *image.shape[:2])
        assert result.masks.any(axis=(1, 2)).all()
        assert [tuple(s) for s in result.spans] == [u.span for _, u in grounded]


def test_results_refuse_a_segment_index_past_the_narrative(case):
    dataset, records, pred_dir = case
    records[1]["phrases"][0]["segment_index"] = 99
    (pred_dir / PREDICTIONS).write_text(json.dumps(records))
    with pytest.raises(FormatError, match=r"narrative \(image 439180, .*field 'segment_index'.*99"):
        list(GroundingTask().results(dataset, pred_dir))
