from __future__ import annotations

import json

import numpy as np
import pytest

from groundkit.data.formats.coco_panoptic import load_panoptic
from groundkit.data.formats.png_narratives import load_narratives
from groundkit.data.formats.predictions import (
    grounding_record,
    read_grounding_predictions,
    read_referring_predictions,
    read_scores,
    write_grounding_predictions,
    write_panoptic_predictions,
    write_referring_predictions,
    write_scores,
)
from groundkit.errors import FormatError, InputError
from groundkit.ops.masks import decode_rle, encode_rle
from groundkit.structures import PanopticResult


@pytest.fixture
def gt(sample):
    return load_panoptic(sample / "panoptic.json", sample / "panoptic")


def perfect_records(sample, gt):
    """Grounding records that predict each grounded phrase's ground-truth mask."""
    records = []
    for n in load_narratives(sample / "png_narratives.json"):
        indices = [i for i, _ in n.grounded()]
        masks = gt.union_masks(n.image_id, [u.segment_ids for _, u in n.grounded()])
        records.append(grounding_record(n, indices, masks, np.linspace(0.5, 1, len(indices),
                                                                        dtype=np.float32)))
    return records


def test_grounding_round_trip(sample, gt, tmp_path):
    records = perfect_records(sample, gt)
    write_grounding_predictions(tmp_path / "g.json", records)
    again = read_grounding_predictions(tmp_path / "g.json")
    assert again == records
    first = again[0]
    assert first["image_id"] == "142238" and first["caption"].startswith("In this image")
    phrase = first["phrases"][0]
    assert (phrase["segment_index"], phrase["utterance"]) == (1, "group of people")
    assert isinstance(phrase["mask"]["counts"], str) and phrase["mask"]["size"] == [427, 640]
    people = load_narratives(sample / "png_narratives.json")[0].utterances[1].segment_ids
    assert (decode_rle(phrase["mask"]) == gt.union_mask(142238, people)).all()


def test_grounding_record_counts_must_agree(sample):
    n = load_narratives(sample / "png_narratives.json")[0]
    with pytest.raises(InputError, match="differ in number"):
        grounding_record(n, [1, 5], np.zeros((1, 2, 2), bool), [0.5])


def test_bad_grounding_files(tmp_path):
    path = tmp_path / "g.json"
    rle = encode_rle(np.ones((2, 2), bool))
    good = {"image_id": "1", "caption": "a dog",
            "phrases": [{"segment_index": 0, "utterance": "a dog", "score": 0.5, "mask": rle}]}
    bad = json.loads(json.dumps([good, good]))
    del bad[1]["phrases"][0]["score"]
    path.write_text(json.dumps(bad))
    with pytest.raises(FormatError, match=r"g.json: record 1 \(image 1\), phrase 0: field 'score': missing"):
        read_grounding_predictions(path)
    bad[1]["phrases"][0].update(score=0.5, mask={"size": [2], "counts": "x"})
    path.write_text(json.dumps(bad))
    with pytest.raises(FormatError, match=r"phrase 0, mask: field 'size': expected a list of 2"):
        read_grounding_predictions(path)
    bad[1]["phrases"][0]["mask"] = {"size": [3, 3], "counts": rle["counts"]}
    path.write_text(json.dumps(bad))
    with pytest.raises(FormatError, match=r"phrase 0, mask: field 'counts': RLE runs cover 4 pixels"):
        read_grounding_predictions(path)
    path.write_text(json.dumps(good))
    with pytest.raises(FormatError, match="expected a JSON list of records"):
        read_grounding_predictions(path)
    with pytest.raises(FormatError,
                       match=r"record 0 \(image 1\), phrase 0: field 'score': expected a number"):
        write_grounding_predictions(path, [{**good, "phrases": [{**good["phrases"][0], "score": np.nan}]}])
    assert json.loads(path.read_text()) == good  # a failed write leaves the old file alone


def test_panoptic_predictions_round_trip(gt, tmp_path):
    results = {i: PanopticResult(gt.id_map(i), [{"id": s.id, "category_id": s.category_id,
                                                 "isthing": True, "score": np.float32(0.75)}
                                                for s in gt.annotations[i].segments])
               for i in gt.images}
    write_panoptic_predictions(tmp_path / "pred.json", tmp_path / "pred", results, gt.images)
    pred = load_panoptic(tmp_path / "pred.json", tmp_path / "pred", reference=gt)
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == \
        ["000000142238.png", "000000439180.png"]
    for image_id, ann in gt.annotations.items():
        assert (pred.id_map(image_id) == gt.id_map(image_id)).all()
        for mine, official in zip(pred.annotations[image_id].segments, ann.segments):
            # area and box measured on the PNG agree with the official ground truth's
            assert (mine.id, mine.category_id, mine.area, mine.bbox, mine.score) == \
                (official.id, official.category_id, official.area, official.bbox, 0.75)
    write_panoptic_predictions(tmp_path / "p2.json", tmp_path / "pred", results, gt.images,
                               gt.categories.values())
    assert load_panoptic(tmp_path / "p2.json", tmp_path / "pred").categories == gt.categories


def test_bad_panoptic_results(gt, tmp_path):
    id_map = gt.id_map(142238)
    infos = [{"id": s.id, "category_id": s.category_id} for s in gt.annotations[142238].segments]
    with pytest.raises(InputError, match=r"image 142238: id map \(427, 639\) differs"):
        write_panoptic_predictions(tmp_path / "p.json", tmp_path, {142238: PanopticResult(
            id_map[:, :-1], infos)}, gt.images)
    with pytest.raises(InputError, match=r"ids \[3937500\] that segments_info does not list"):
        write_panoptic_predictions(tmp_path / "p.json", tmp_path, {142238: PanopticResult(
            id_map, infos[1:])}, gt.images)
    with pytest.raises(InputError, match=r"segments_info\[0\] needs numeric 'id'"):
        write_panoptic_predictions(tmp_path / "p.json", tmp_path, {142238: PanopticResult(
            id_map, [{"category_id": 1}])}, gt.images)
    with pytest.raises(InputError, match="image 5, which is not in"):
        write_panoptic_predictions(tmp_path / "p.json", tmp_path, {5: PanopticResult(id_map)},
                                   gt.images)


def test_referring_round_trip_and_errors(tmp_path):
    mask = np.zeros((3, 4), bool)
    mask[1, 1:3] = True
    records = [{"ref_id": 1, "sent_id": 10, "box": np.array([1.0, 2.0, 3.5, 4.0]), "score": 0.9},
               {"ref_id": 1, "sent_id": 11, "box": [0, 0, 4, 3], "score": np.float64(0.1),
                "mask": encode_rle(mask)}]
    write_referring_predictions(tmp_path / "r.json", records)
    again = read_referring_predictions(tmp_path / "r.json")
    assert again[0] == {"ref_id": 1, "sent_id": 10, "box": [1.0, 2.0, 3.5, 4.0], "score": 0.9}
    assert (decode_rle(again[1]["mask"]) == mask).all() and again[1]["box"] == [0, 0, 4, 3]
    with pytest.raises(FormatError, match=r"record 0: field 'box': expected a list of 4 numbers"):
        write_referring_predictions(tmp_path / "r.json", [{**records[1], "box": [1, 2, 3]}])


def test_referring_proposals_are_optional_boxes(tmp_path):
    records = [{"ref_id": 1, "sent_id": 10, "box": [1, 2, 3, 4], "score": 0.5,
                "proposals": np.array([[1, 2, 3, 4], [0, 0, 2.5, 2]], np.float32)},
               {"ref_id": 1, "sent_id": 11, "box": [0, 0, 4, 3], "score": 0.1, "proposals": []},
               {"ref_id": 2, "sent_id": 20, "box": [0, 0, 4, 3], "score": 0.1}]
    write_referring_predictions(tmp_path / "r.json", records)
    again = read_referring_predictions(tmp_path / "r.json")
    assert again[0]["proposals"] == [[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 2.5, 2.0]]
    assert again[1]["proposals"] == [] and "proposals" not in again[2]
    (tmp_path / "bad.json").write_text(json.dumps([{**records[2], "proposals": [[1, 2, 3, 4], [1, 2]]}]))
    with pytest.raises(FormatError, match=r"record 0, proposal 1: field 'proposals': expected a list "
                                          r"of 4 numbers"):
        read_referring_predictions(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text(json.dumps([{**records[2], "proposals": {"a": 1}}]))
    with pytest.raises(FormatError, match=r"field 'proposals'"):
        read_referring_predictions(tmp_path / "bad.json")


def test_scores(tmp_path):
    scores = {"overall": {"ar": np.float64(0.5), "acc@0.5": np.float32(0.25), "n": np.int64(7)},
              "plurals": {"ar": float("nan"), "n": 0}}
    write_scores(tmp_path / "s.json", scores)
    assert read_scores(tmp_path / "s.json") == {"overall": {"ar": 0.5, "acc@0.5": 0.25, "n": 7},
                                                "plurals": {"ar": None, "n": 0}}
    (tmp_path / "s.json").write_text("[1]")
    with pytest.raises(FormatError, match="expected a JSON object of scores"):
        read_scores(tmp_path / "s.json")


# --- hostile values: each a FormatError naming file, item and field --------------------------------

GOOD_PHRASE = {"segment_index": 0, "utterance": "a dog", "score": 0.5,
               "mask": {"size": [2, 2], "counts": "04"}}


@pytest.mark.parametrize("field, value", [
    ("segment_index", -1), ("segment_index", True), ("segment_index", 1.0), ("segment_index", "0"),
    ("segment_index", 2**63), ("score", float("nan")), ("score", float("inf")), ("score", 10**400)])
def test_grounding_phrase_values(tmp_path, raises_naming, field, value):
    path = tmp_path / "g.json"
    path.write_text(json.dumps([{"image_id": "1", "caption": "a dog",
                                 "phrases": [{**GOOD_PHRASE, field: value}]}]))
    with raises_naming(path, "record 0 (image 1), phrase 0", field):
        read_grounding_predictions(path)


@pytest.mark.parametrize("size", [[0, 4], [65536, 1], [-2, -2], [2, True]])
def test_grounding_mask_size_is_an_image_size(tmp_path, raises_naming, size):
    path = tmp_path / "g.json"
    phrase = {**GOOD_PHRASE, "mask": {"size": size, "counts": "04"}}
    path.write_text(json.dumps([{"image_id": "1", "caption": "a dog", "phrases": [phrase]}]))
    with raises_naming(path, "record 0 (image 1), phrase 0, mask", "size"):
        read_grounding_predictions(path)


@pytest.mark.parametrize("field, value", [
    ("ref_id", -1), ("sent_id", -7), ("sent_id", True), ("ref_id", 2**64), ("score", float("nan")),
    ("box", [0, 0, float("nan"), 1]), ("box", [0, float("-inf"), 1, 1])])
def test_referring_record_values(tmp_path, raises_naming, field, value):
    path = tmp_path / "r.json"
    path.write_text(json.dumps([{"ref_id": 1, "sent_id": 2, "box": [0, 0, 1, 1], "score": 0.5,
                                 field: value}]))
    with raises_naming(path, "record 0", field):
        read_referring_predictions(path)
