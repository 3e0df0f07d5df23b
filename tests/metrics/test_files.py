"""The file-level helpers of `groundkit score`: prediction indexing and the batched mask paths."""
import json
from pathlib import Path

import numpy as np
import pytest

from groundkit.data.formats import grounding_record, load_narratives
from groundkit.errors import FormatError
from groundkit.metrics.files import (
    _predicted_masks,
    grounding_masks,
    referring_by_sentence,
    score_png_files,
    score_proposals,
)
from groundkit.metrics.panoptic_quality import union_masks
from groundkit.ops.masks import encode_rle
from groundkit.structures import PanopticAnnotation, Segment


def test_union_masks_equal_isin():
    rng = np.random.default_rng(0)
    ids = rng.choice([0, 5, 900, 70000, 3], size=(9, 11))  # 3 is not listed in the JSON
    ann = PanopticAnnotation(1, "x.png", (Segment(900, 1), Segment(5, 1), Segment(70000, 2)))
    groups = [(5,), (900, 70000), (70000, 5, 900)]
    expected = np.stack([np.isin(ids, g) for g in groups])
    assert np.array_equal(union_masks(ids, ann, groups), expected)


def test_predicted_masks_compressed_uncompressed_and_missing():
    rng = np.random.default_rng(1)
    masks = rng.random((3, 6, 5)) < 0.5
    rles = [encode_rle(m) for m in masks]
    rles[2] = {"size": [6, 5], "counts": [0, 30]}  # uncompressed: all ones
    out = _predicted_masks([rles[0], None, rles[2]], (6, 5))
    assert np.array_equal(out[0], masks[0]) and not out[1].any() and out[2].all()
    assert np.array_equal(_predicted_masks(rles[:2] + [None], (6, 5))[:2], masks[:2])


def test_duplicate_predictions_are_errors():
    rle = encode_rle(np.zeros((2, 2), bool))
    record = {"image_id": "7", "caption": "a cat", "phrases": [
        {"segment_index": 1, "mask": rle}, {"segment_index": 3, "mask": rle}]}
    assert grounding_masks([record]) == {(7, "a cat"): {1: rle, 3: rle}}
    record["phrases"].append({"segment_index": 1, "mask": rle})
    with pytest.raises(FormatError, match="segment_index 1 predicted twice"):
        grounding_masks([record], "pred.json")
    refs = [{"ref_id": 1, "sent_id": 2, "box": [0, 0, 1, 1]}]
    assert list(referring_by_sentence(refs)) == [(1, 2)]
    with pytest.raises(FormatError, match="ref 1, sentence 2: predicted twice"):
        referring_by_sentence(refs * 2, "pred.json")


@pytest.mark.parametrize("index", [19, 2**40])
def test_segment_index_past_the_narrative_is_an_error(tmp_path, index):
    sample = Path(__file__).parents[1] / "fixtures" / "coco_sample"
    n = load_narratives(sample / "png_narratives.json")[0]  # 19 utterances
    record = grounding_record(n, [1], np.zeros((1, 427, 640), bool), [0.5])
    record["phrases"][0]["segment_index"] = index
    (tmp_path / "pred.json").write_text(json.dumps([record]))
    with pytest.raises(FormatError) as e:
        score_png_files(sample / "png_narratives.json", sample / "panoptic.json",
                        sample / "panoptic", tmp_path / "pred.json")
    assert (e.value.file, e.value.field) == (str(tmp_path / "pred.json"), "segment_index")
    assert e.value.item.startswith("narrative (image 142238, caption 'In this image")
    assert f"0 to 18), got {index}" in str(e.value)


def test_proposal_recall_of_prediction_files_counts_records_without_proposals_as_misses():
    from types import SimpleNamespace

    boxes = {1: np.array([0, 0, 10, 10.0]), 2: np.array([20, 20, 30, 30.0])}
    instances = SimpleNamespace(gt_box=lambda s: boxes[s.ann_id])
    samples = [SimpleNamespace(ref_id=r, sent_id=10 * r, ann_id=r) for r in (1, 2)]
    hit = {"box": [0, 0, 1, 1], "score": 0.0, "proposals": [[40, 40, 50, 50], [0, 0, 10, 9]]}
    scores, missing = score_proposals(samples, instances, {(1, 10): hit, (2, 20): {"box": [0, 0, 1, 1]}})
    assert missing == 1
    assert scores == {"recall@1": 0.0, "recall@2": 0.5, "recall@3": 0.5, "recall@5": 0.5,
                      "mean_proposals": 1.0, "n": 2}
    assert score_proposals(samples, instances, {(1, 10): {"box": [0, 0, 1, 1]}}) == (None, 2)
