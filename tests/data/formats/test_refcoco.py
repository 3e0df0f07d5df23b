from __future__ import annotations

import pickle

import numpy as np
import pytest

from groundkit.data.formats.coco_panoptic import load_panoptic
from groundkit.data.formats.refcoco import (
    Instance, instance_from_mask, load_instances, load_referring, load_refs, select_refs,
    write_instances, write_refs)
from groundkit.errors import FormatError, InputError
from groundkit.structures import Category, ImageRecord


def paths(root):
    return root / "refcoco" / "refs(unc).p", root / "refcoco" / "instances.json"


def load_instances_of(tmp_path, segmentation):
    """One 6x8 image with one car whose segmentation is given."""
    write_instances(tmp_path / "i.json", [ImageRecord(7, "a.jpg", 6, 8)],
                    [Instance(1, 7, 3, (2, 1, 3, 2), 6, False, segmentation)],
                    [Category(3, "car", True, supercategory="vehicle")])
    return load_instances(tmp_path / "i.json")


def test_refs_and_split_rule(sample):
    refs = load_refs(paths(sample)[0])
    assert [r["ref_id"] for r in refs] == [1, 2, 3]
    assert [r["ref_id"] for r in select_refs(refs, "val")] == [1]
    assert [r["ref_id"] for r in select_refs(refs, "test")] == [2, 3]
    # The refer API matches testA/testB on the last letter, so a 'testAB' ref is in both.
    refs.append({"ref_id": 4, "split": "testAB"})
    assert [r["ref_id"] for r in select_refs(refs, "testA")] == [2, 4]
    assert [r["ref_id"] for r in select_refs(refs, "testB")] == [3, 4]
    assert select_refs(refs, "train") == []
    with pytest.raises(InputError, match="unknown RefCOCO split 'tset'"):
        select_refs(refs, "tset")


def test_one_sample_per_sentence(sample):
    samples, instances = load_referring(*paths(sample), "val")
    assert [(s.ref_id, s.sent_id, s.sentence) for s in samples] == \
        [(1, 10, "the ball in the air"), (1, 11, "ball being caught")]
    first = samples[0]
    assert (first.ann_id, first.image_id, first.category_id, first.split) == (167578381, 142238, 37, "val")
    assert first.tokens == ("the", "ball", "in", "the", "air")
    assert first.file_name == "000000142238.jpg"  # the image to open, from instances.json
    assert len(load_referring(*paths(sample), "testB")[0]) == 1


def test_ground_truth_box_and_mask_match_the_panoptic_segment(sample):
    samples, instances = load_referring(*paths(sample), "val")
    box, mask = instances.gt_box(samples[0]), instances.gt_mask(samples[0])
    x, y, w, h = instances.annotations[samples[0].ann_id].bbox
    assert box.tolist() == [x, y, x + w, y + h]
    # The sample's instances are the panoptic sample's thing segments (ann id = segment id * 10 + 1).
    panoptic = load_panoptic(sample / "panoptic.json", sample / "panoptic")
    assert (mask == panoptic.segment_mask(142238, 16757838)).all()


def test_polygon_segmentation(tmp_path):
    image = load_instances_of(tmp_path, [[2, 1, 5, 1, 5, 3, 2, 3]])
    mask = image.mask(1)
    assert mask.shape == (6, 8) and mask[1:3, 2:5].all() and mask.sum() == 6


def test_instances_round_trip(sample, tmp_path):
    instances = load_instances(paths(sample)[1])
    write_instances(tmp_path / "i.json", instances.images.values(), instances.annotations.values(),
                    instances.categories.values())
    again = load_instances(tmp_path / "i.json")
    assert (again.images, again.annotations, again.categories) == \
        (instances.images, instances.annotations, instances.categories)


def test_instance_from_mask_matches_coco_conventions():
    mask = np.zeros((5, 6), dtype=bool)
    mask[1:4, 2:5] = True
    inst = instance_from_mask(9, 1, 2, mask)
    assert inst.bbox == (2.0, 1.0, 3.0, 3.0) and inst.area == 9
    assert inst.segmentation["size"] == [5, 6]


def test_refs_round_trip(sample, tmp_path):
    refs = load_refs(paths(sample)[0])
    write_refs(tmp_path / "refs(unc).p", refs)
    assert load_refs(tmp_path / "refs(unc).p") == refs
    with open(tmp_path / "refs(unc).p", "rb") as f:
        assert f.read(2) == b"\x80\x02"  # protocol 2: readable by Python 2 tools


def test_bad_refs_files(tmp_path):
    with pytest.raises(FormatError, match=r"refs\(unc\).p: file not found"):
        load_refs(tmp_path / "refs(unc).p")
    (tmp_path / "cut.p").write_bytes(pickle.dumps([{"ref_id": 1}], protocol=2)[:-3])
    with pytest.raises(FormatError, match="cut.p: not a readable refs pickle"):
        load_refs(tmp_path / "cut.p")
    (tmp_path / "dict.p").write_bytes(pickle.dumps({"ref_id": 1}))
    with pytest.raises(FormatError, match="expected a list of ref dicts"):
        load_refs(tmp_path / "dict.p")


def test_ref_missing_field_or_unknown_annotation(sample, tmp_path):
    refs = load_refs(paths(sample)[0])
    del refs[0]["sentences"][1]["sent"]
    write_refs(tmp_path / "r.p", refs)
    with pytest.raises(FormatError, match=r"r.p: ref 1, sentence 1: field 'sent': missing"):
        load_referring(tmp_path / "r.p", paths(sample)[1], "val")
    refs[0]["sentences"][1]["sent"] = "x"
    refs[0]["ann_id"] = 5
    write_refs(tmp_path / "r.p", refs)
    with pytest.raises(FormatError, match=r"r.p: ref 1: field 'ann_id': annotation 5 is not in"):
        load_referring(tmp_path / "r.p", paths(sample)[1], "val")


def test_bad_instances(sample, tmp_path, edit_json):
    path = tmp_path / "instances.json"
    path.write_text(paths(sample)[1].read_text())
    edit_json(path, lambda d: d["annotations"][2].update(category_id=999))
    with pytest.raises(FormatError, match=r"annotation 2 \(id 20359551\): field 'category_id'"):
        load_instances(path)
    edit_json(path, lambda d: (d["annotations"][2].update(category_id=1),
                               d["annotations"][0]["bbox"].pop()))
    with pytest.raises(FormatError, match=r"field 'bbox': expected a list of 4 numbers"):
        load_instances(path)
    with pytest.raises(FormatError, match="no annotation with id 5"):
        load_instances(paths(sample)[1]).box(5)


def test_malformed_segmentation(tmp_path):
    with pytest.raises(FormatError, match=r"annotation 1: field 'segmentation'"):
        load_instances_of(tmp_path, {"size": [6], "counts": ""}).mask(1)
    with pytest.raises(FormatError, match=r"annotation 1: field 'segmentation': missing"):
        load_instances_of(tmp_path, None).mask(1)
