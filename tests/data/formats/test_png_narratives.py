from __future__ import annotations

import json

import pytest

from groundkit.data.formats.coco_panoptic import load_panoptic
from groundkit.data.formats.png_narratives import check_narratives, load_narratives, locate, write_narratives
from groundkit.errors import FormatError


def phrase(narrative, text):
    return next(u for u in narrative.utterances if u.text == text)


def test_reads_the_real_sample(sample):
    narratives = load_narratives(sample / "png_narratives.json")
    assert [n.image_id for n in narratives] == [142238, 439180]
    first = narratives[0]
    assert first.annotator_id == 7
    for n in narratives:  # every span points at its utterance in the caption
        for u in n.utterances:
            assert n.caption[u.span[0]:u.span[1]].lower() == u.text
    assert first.caption[slice(*phrase(first, "group of people").span)] == "group of people"
    assert [u.text for _, u in first.grounded()] == ["group of people", "grass", "ball", "trees", "sky"]


def test_group_of_people_is_the_union_of_14_person_segments(sample):
    ds = load_panoptic(sample / "panoptic.json", sample / "panoptic")
    group = phrase(load_narratives(sample / "png_narratives.json")[0], "group of people")
    assert len(group.segment_ids) == 14
    assert {ds.annotations[142238].segment(s).category_id for s in group.segment_ids} == {1}
    persons = ds.id_map(142238)
    mask = ds.union_mask(142238, group.segment_ids)
    assert mask.sum() == sum((persons == s).sum() for s in group.segment_ids)


def test_trees_is_plural_but_one_segment(sample):
    trees = phrase(load_narratives(sample / "png_narratives.json")[0], "trees")
    assert trees.plural and trees.segment_ids == (2330219,)


def test_check_narratives_accepts_the_sample(sample):
    ds = load_panoptic(sample / "panoptic.json", sample / "panoptic")
    check_narratives(load_narratives(sample / "png_narratives.json"), ds, "png_narratives.json")


def test_round_trip_is_exact(sample, tmp_path):
    narratives = load_narratives(sample / "png_narratives.json")
    write_narratives(tmp_path / "n.json", narratives)
    assert load_narratives(tmp_path / "n.json") == narratives
    assert json.loads((tmp_path / "n.json").read_text()) == \
        json.loads((sample / "png_narratives.json").read_text())


def test_locate_is_case_insensitive_and_left_to_right():
    caption = "A dog. The dog. İstanbul dog"
    assert locate(caption, "a dog") == (0, 5)
    assert locate(caption, ".", 5) == (5, 6)
    assert locate(caption, "the dog", 6) == (7, 14)
    assert locate(caption, "dog", 15) == (25, 28)  # 'İ' lower-cases to 2 characters: kept as is
    assert locate(caption, "cat") is None


def test_utterance_not_in_caption(sample_copy, edit_json):
    path = sample_copy / "png_narratives.json"
    edit_json(path, lambda d: d[1]["segments"][3].update(utterance="zebras"))
    with pytest.raises(FormatError, match=r"narrative 1 \(image 439180\), utterance 3: "
                       r"field 'utterance': utterance 'zebras' not found in the caption"):
        load_narratives(path)


def test_utterances_out_of_order(sample_copy, edit_json):
    path = sample_copy / "png_narratives.json"
    edit_json(path, lambda d: d[0]["segments"].insert(3, d[0]["segments"][1]))  # repeats a phrase
    with pytest.raises(FormatError, match="utterance 3.*'group of people' not found"):
        load_narratives(path)


def test_missing_field_and_bad_id(sample_copy, edit_json):
    path = sample_copy / "png_narratives.json"
    edit_json(path, lambda d: d[0]["segments"][5].pop("noun"))
    with pytest.raises(FormatError,
                       match=r"narrative 0 \(image 142238\), utterance 5: field 'noun': missing"):
        load_narratives(path)
    edit_json(path, lambda d: (d[0]["segments"][5].update(noun=True), d[1].update(image_id="abc")))
    with pytest.raises(FormatError, match=r"narrative 1: field 'image_id': expected an integer id"):
        load_narratives(path)


def test_not_a_list_and_bad_json(sample_copy):
    path = sample_copy / "png_narratives.json"
    path.write_text('{"image_id": "1"}')
    with pytest.raises(FormatError, match="expected a JSON list of narratives"):
        load_narratives(path)
    path.write_text('[{"image_id": "1",]')
    with pytest.raises(FormatError, match="invalid JSON at line 1, column 19"):
        load_narratives(path)


def test_segment_id_absent_from_panoptic_json(sample, sample_copy, edit_json):
    path = sample_copy / "png_narratives.json"
    edit_json(path, lambda d: d[0]["segments"][15]["segment_ids"].append("12345"))
    ds = load_panoptic(sample / "panoptic.json", sample / "panoptic")
    with pytest.raises(FormatError, match=r"png_narratives.json: narrative 0 \(image 142238\), "
                       r"utterance 15 'trees': field 'segment_ids': segment id 12345 is not in"):
        check_narratives(load_narratives(path), ds, path)


def test_image_absent_from_panoptic_json(sample, sample_copy, edit_json):
    path = sample_copy / "png_narratives.json"
    edit_json(path, lambda d: d[1].update(image_id="1"))
    ds = load_panoptic(sample / "panoptic.json", sample / "panoptic")
    with pytest.raises(FormatError, match=r"narrative 1 \(image 1\): field 'image_id': image 1 has no"):
        check_narratives(load_narratives(path), ds, path)


# --- hostile values: each a FormatError naming file, item and field --------------------------------

@pytest.mark.parametrize("value", [-1, "-1", True, 1.5, "²", " 7 x", "9" * 30, 2**63, None])
def test_image_id_is_a_non_negative_integer(sample_copy, edit_json, raises_naming, value):
    path = sample_copy / "png_narratives.json"
    edit_json(path, lambda d: d[1].update(image_id=value))
    with raises_naming(path, "narrative 1", "image_id"):
        load_narratives(path)


@pytest.mark.parametrize("value", [-3, "-3", False, "1e3", str(256**3), 256**3])
def test_segment_ids_fit_a_png_rgb(sample_copy, edit_json, raises_naming, value):
    path = sample_copy / "png_narratives.json"
    edit_json(path, lambda d: d[0]["segments"][15]["segment_ids"].append(value))
    with raises_naming(path, "narrative 0 (image 142238), utterance 15", "segment_ids"):
        load_narratives(path)


@pytest.mark.parametrize("value", [-1, True, 2.0, "7"])
def test_annotator_id_is_a_non_negative_integer(sample_copy, edit_json, raises_naming, value):
    path = sample_copy / "png_narratives.json"
    edit_json(path, lambda d: d[0].update(annotator_id=value))
    with raises_naming(path, "narrative 0 (image 142238)", "annotator_id"):
        load_narratives(path)


def test_ids_written_as_padded_strings_still_read(sample_copy, edit_json):
    path = sample_copy / "png_narratives.json"
    edit_json(path, lambda d: d[1].update(image_id=" 0439180"))
    assert load_narratives(path)[1].image_id == 439180
