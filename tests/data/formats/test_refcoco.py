from __future__ import annotations

import builtins
import copyreg
import pickle
import tracemalloc
from collections import OrderedDict

import numpy as np
import pytest

from groundkit._io import safe_load_pickle
from groundkit.cli import main
from groundkit.data.formats.coco_panoptic import load_panoptic
from groundkit.data.formats.refcoco import (
    Instance,
    instance_from_mask,
    load_instances,
    load_referring,
    load_refs,
    select_refs,
    write_instances,
    write_refs,
)
from groundkit.errors import FormatError, InputError
from groundkit.structures import Category, ImageRecord


def paths(root):
    return root / "refcoco" / "refs(unc).p", root / "refcoco" / "instances.json"


class Payload:
    """Unpickled by plain ``pickle``, this calls ``open(target, "w")``: it creates ``target``."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return builtins.open, (self.target, "w")


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


def test_context_ann_ids_are_read_when_a_sentence_has_them(sample, tmp_path):
    samples, _ = load_referring(*paths(sample), "test")
    assert [s.context_ann_ids for s in samples] == [(), (), ()]  # real RefCOCO: no such key
    refs = load_refs(paths(sample)[0])
    refs[2]["sentences"][0]["context_ann_ids"] = [60948482]  # the red truck of "behind the red one"
    write_refs(tmp_path / "r.p", refs)
    samples, _ = load_referring(tmp_path / "r.p", paths(sample)[1], "test")
    assert [s.context_ann_ids for s in samples] == [(), (), (60948482,)]
    refs[2]["sentences"][0]["context_ann_ids"] = ["60948482"]
    write_refs(tmp_path / "r.p", refs)
    with pytest.raises(FormatError, match=r"ref 3, sentence 0: field 'context_ann_ids'"):
        load_referring(tmp_path / "r.p", paths(sample)[1], "test")


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


@pytest.mark.parametrize("side", [2**31, 0, -5, 2**16])
def test_image_size_out_of_range(sample, tmp_path, edit_json, side):
    # 2**31 with a polygon segfaulted in pycocotools; 0 and -5 raised OverflowError there
    path = tmp_path / "instances.json"
    path.write_text(paths(sample)[1].read_text())
    edit_json(path, lambda d: d["images"][1].update(height=side))
    with pytest.raises(FormatError, match=rf"instances.json: image 1: field 'height': .*got {side}"):
        load_instances(path)
    edit_json(path, lambda d: d["images"][1].update(height=360, width=side))
    with pytest.raises(FormatError, match=rf"instances.json: image 1: field 'width': .*got {side}"):
        load_instances(path)


def test_malformed_segmentation(tmp_path):
    with pytest.raises(FormatError, match=r"annotation 1: field 'segmentation'"):
        load_instances_of(tmp_path, {"size": [6], "counts": ""}).mask(1)
    with pytest.raises(FormatError, match=r"annotation 1: field 'segmentation': missing"):
        load_instances_of(tmp_path, None).mask(1)


# --- hostile refs pickles: refused, nothing runs --------------------------------------------------

REFUSED = r"evil.p: refused to load: the refs pickle refers to the global 'io.open'"


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_payload_refs_pickle_is_refused_and_runs_nothing(tmp_path, protocol):
    target = tmp_path / "pwned"
    data = pickle.dumps(Payload(target), protocol=protocol)
    (tmp_path / "evil.p").write_bytes(data)
    with pytest.raises(FormatError, match=REFUSED):
        load_refs(tmp_path / "evil.p")
    assert not target.exists()
    pickle.loads(data).close()  # the control: a plain pickle.load does run it
    assert target.exists()


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_payload_inside_valid_refs_is_refused_and_runs_nothing(sample, tmp_path, protocol):
    target = tmp_path / "pwned"
    refs = load_refs(paths(sample)[0])
    refs[1]["sentences"][0]["tokens"] = ["the", Payload(target)]
    (tmp_path / "evil.p").write_bytes(pickle.dumps(refs, protocol=protocol))
    with pytest.raises(FormatError, match=REFUSED):
        load_refs(tmp_path / "evil.p")
    with pytest.raises(FormatError, match=REFUSED):
        load_referring(tmp_path / "evil.p", paths(sample)[1], "val")
    assert not target.exists()


def test_score_cli_refuses_a_payload_refs_file(sample, tmp_path, capsys):
    target = tmp_path / "pwned"
    (tmp_path / "evil.p").write_bytes(pickle.dumps([{"ref_id": 1, "x": Payload(target)}], 2))
    (tmp_path / "pred.json").write_text("[]")
    rc = main(["score", "rec", "--refs", str(tmp_path / "evil.p"), "--instances",
               str(paths(sample)[1]), "--split", "val", "--pred", str(tmp_path / "pred.json")])
    assert rc == 2 and "refused to load" in capsys.readouterr().err
    assert not target.exists()


def test_every_global_is_refused_however_it_is_named(tmp_path):
    # os.system by GLOBAL (protocol 0), by STACK_GLOBAL (protocol 4) and through the copyreg
    # extension registry (EXT1), and a harmless-looking class: none is imported or called.
    touch = f"touch {tmp_path / 'pwned'}".encode()
    cases = {"global.p": b"cposix\nsystem\n(S'" + touch + b"'\ntR.",
             "stack.p": b"\x80\x04\x8c\x05posix\x8c\x06system\x93\x8c\x04echo\x85R.",
             "ext.p": b"\x80\x02\x82\xf0U\x04echo\x85R.",
             "odict.p": pickle.dumps(OrderedDict(a=1), protocol=2)}
    copyreg.add_extension("posix", "system", 240)
    try:
        for name, data in cases.items():
            (tmp_path / name).write_bytes(data)
            with pytest.raises(FormatError, match=rf"{name}: refused to load: the refs pickle "
                                                  r"refers to the global '(posix.system|"
                                                  r"collections.OrderedDict)'"):
                load_refs(tmp_path / name)
    finally:
        copyreg.remove_extension("posix", "system", 240)
    (tmp_path / "pid.p").write_bytes(b"\x80\x02]q\x00U\x01xQa.")  # BINPERSID
    with pytest.raises(FormatError, match=r"pid.p: refused to load: .* persistent id"):
        load_refs(tmp_path / "pid.p")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, pickle.HIGHEST_PROTOCOL])
def test_valid_refs_load_identically_at_every_protocol(sample, tmp_path, protocol):
    with open(paths(sample)[0], "rb") as f:
        expected = pickle.load(f, encoding="latin1")
    (tmp_path / "r.p").write_bytes(pickle.dumps(expected, protocol=protocol))
    assert load_refs(tmp_path / "r.p") == expected == load_refs(paths(sample)[0])


def test_python2_refs_pickles_load_with_latin1(tmp_path):
    # Python 2's pickle.dump: protocol 0 with STRING (a py2 str, i.e. bytes) and UNICODE opcodes,
    # and protocol 2 with SHORT_BINSTRING. Bytes strings decode as latin-1, byte for byte.
    (tmp_path / "p0.p").write_bytes(
        b"(lp0\n(dp1\nS'split'\np2\nS'val'\np3\nsS'ref_id'\np4\nI1\nsS'sentences'\np5\n"
        b"(lp6\n(dp7\nS'sent'\np8\nS'caf\\xc3\\xa9'\np9\nsVraw\np10\nVcaf\\u00e9\np11\nsasa.")
    assert load_refs(tmp_path / "p0.p") == [
        {"split": "val", "ref_id": 1, "sentences": [{"sent": "caf\xc3\xa9", "raw": "caf\xe9"}]}]
    (tmp_path / "p2.p").write_bytes(b"\x80\x02]q\x00}q\x01(U\x05splitq\x02U\x03valq\x03"
                                    b"U\x06ref_idq\x04K\x01U\x04sentq\x05U\x02\xc3\xa9q\x06ua.")
    refs = load_refs(tmp_path / "p2.p")
    assert refs == [{"split": "val", "ref_id": 1, "sent": "\xc3\xa9"}]
    assert refs[0]["sent"].encode("latin1").decode("utf-8") == "\xe9"  # the bytes are all kept


def test_unreadable_refs_pickles_name_the_file(tmp_path):
    valid = pickle.dumps([{"ref_id": 1, "split": "val"}], protocol=2)
    cases = {"truncated.p": valid[: len(valid) // 2], "empty.p": b"", "text.p": b"not a pickle",
             "protocol9.p": b"\x80\x09]." , "nostop.p": valid[:-1]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(FormatError, match=rf"{name}: not a readable refs pickle: \w+"):
            load_refs(tmp_path / name)
    (tmp_path / "dir.p").mkdir()
    with pytest.raises(FormatError, match=r"dir.p: not a readable refs pickle: IsADirectoryError"):
        load_refs(tmp_path / "dir.p")


def test_safe_load_pickle_allow_list(tmp_path):
    (tmp_path / "o.p").write_bytes(pickle.dumps(OrderedDict(a=1), protocol=2))
    with pytest.raises(FormatError, match=r"o.p: refused to load: the pickle refers to the "
                                          r"global 'collections.OrderedDict'"):
        safe_load_pickle(tmp_path / "o.p")
    assert safe_load_pickle(tmp_path / "o.p", allowed=[("collections", "OrderedDict")]) == {"a": 1}
    # Matched exactly as the file names it: a pair naming something else does not admit it.
    with pytest.raises(FormatError, match="'collections.OrderedDict'"):
        safe_load_pickle(tmp_path / "o.p", allowed=[("collections", "defaultdict")])


# --- hostile values: each a FormatError naming file, item and field --------------------------------

def instances_copy(sample, tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(paths(sample)[1].read_text())
    return path


ANNOTATION = "annotation 2 (id 20359551)"


@pytest.mark.parametrize("field, value", [
    ("bbox", [float("nan"), 0, 1, 1]), ("bbox", [0, float("-inf"), 1, 1]), ("bbox", [-5, 0, 1, 1]),
    ("bbox", [0, 0, -1, 1]), ("bbox", [0, 0, 1, 10**400]), ("area", float("nan")),
    ("area", float("inf")), ("area", -0.5)])
def test_bbox_and_area_must_be_finite_and_non_negative(sample, tmp_path, edit_json, raises_naming,
                                                       field, value):
    path = instances_copy(sample, tmp_path)
    edit_json(path, lambda d: d["annotations"][2].update({field: value}))
    with raises_naming(path, ANNOTATION, field):
        load_instances(path)


@pytest.mark.parametrize("value", [-1, -2**70, 2**63, 2.5, float("nan"), True, False, "7", None])
@pytest.mark.parametrize("where, field, item", [
    (lambda d: d["images"][1], "id", "image 1"),
    (lambda d: d["categories"][3], "id", "category 3"),
    (lambda d: d["annotations"][2], "id", "annotation 2"),
    (lambda d: d["annotations"][2], "image_id", ANNOTATION),
    (lambda d: d["annotations"][2], "category_id", ANNOTATION)])
def test_instance_ids_are_non_negative_integers(sample, tmp_path, edit_json, raises_naming, where,
                                                field, item, value):
    path = instances_copy(sample, tmp_path)
    edit_json(path, lambda d: where(d).update({field: value}))
    with raises_naming(path, item, field):
        load_instances(path)


@pytest.mark.parametrize("value", [-1, 2**63, 2.0, True, "1"])
@pytest.mark.parametrize("edit, field, item", [
    (lambda r: r[0], "ref_id", "ref"),
    (lambda r: r[0], "ann_id", "ref 1"),
    (lambda r: r[0], "image_id", "ref 1"),
    (lambda r: r[0], "category_id", "ref 1"),
    (lambda r: r[0]["sentences"][1], "sent_id", "ref 1, sentence 1")])
def test_ref_ids_are_non_negative_integers(sample, tmp_path, raises_naming, edit, field, item, value):
    refs = load_refs(paths(sample)[0])
    edit(refs)[field] = value
    (tmp_path / "r.p").write_bytes(pickle.dumps(refs, protocol=2))
    with raises_naming(tmp_path / "r.p", item, field):
        load_referring(tmp_path / "r.p", paths(sample)[1], "val")


@pytest.mark.parametrize("polygons", [
    [[0, 0, 1e9, 0, 1e9, 1e9]],  # past 2**31 / 5: pycocotools' int coordinates overflow (segfault)
    [[0, 0, float("nan"), 0, 4, 4]], [[0, 0, float("inf"), 0, 4, 4]], [[0, 0, 10**400, 0, 4, 4]],
    [[0, 0, 17, 0, 4, 4]],  # beyond one image width (8) right of the image
    [[0, 0, 8, 6, 0, 6, 8, 0] * 200],  # 800 diagonals: 1600 pixels of outline on a 6x8 image
    [[0, 0, True, 0, 4, 4]], [[0, 0, "1", 0, 4, 4]], ["123456"], [7], 7])
def test_hostile_polygons_are_refused_before_pycocotools(tmp_path, polygons):
    instances = load_instances_of(tmp_path, polygons)
    with pytest.raises(FormatError) as e:
        instances.mask(1)
    assert (e.value.file, e.value.item, e.value.field) == \
        (str(tmp_path / "i.json"), "annotation 1", "segmentation")


def test_polygons_just_outside_the_image_are_kept(tmp_path):
    mask = load_instances_of(tmp_path, [[-1, -1, 9, -1, 9, 7, -1, 7]]).mask(1)
    assert mask.all()


@pytest.mark.parametrize("counts", [[2**62, 2**62, 2**62, 2**62 + 48], [10**30, 48]])
def test_rle_runs_that_overflow_are_refused(tmp_path, counts):
    # four runs of 2**62 wrap an int64 sum around to the image's 48 pixels
    with pytest.raises(FormatError, match=r"annotation 1: field 'segmentation': RLE"):
        load_instances_of(tmp_path, {"size": [6, 8], "counts": counts}).mask(1)


@pytest.mark.parametrize("field, item", [("ref_id", "ref"), ("split", "ref 1")])
def test_values_too_large_to_print_are_named_briefly(sample, tmp_path, raises_naming, field, item):
    # a few hundred bytes of pickle: one list shared at every level of a 100-level tree (2**100
    # items to print), a list nested 100,000 deep, an int of 5,000 digits (past max-str-digits)
    shared = [1]
    for _ in range(100):
        shared = [shared, shared]
    for value in (shared, "@deep@", 10**5000):
        refs = load_refs(paths(sample)[0])
        refs[0][field] = value
        data = pickle.dumps(refs, protocol=2)  # pickle.dumps itself would recurse too deep:
        data = data.replace(b"X\x06\x00\x00\x00@deep@", b"]" * 100_000 + b"a" * 99_999)
        (tmp_path / "r.p").write_bytes(data)
        assert len(data) < 250_000
        with raises_naming(tmp_path / "r.p", item, field) as e:
            load_referring(tmp_path / "r.p", paths(sample)[1], "val")
        assert len(str(e.value)) < 300


def test_a_refs_pickle_claiming_gigabytes_is_not_allocated(tmp_path):
    # BINUNICODE of 4 GB holding 3 bytes: read from the file, the unpickler allocated the 4 GB
    (tmp_path / "big.p").write_bytes(b"\x80\x02X" + (2**32 - 100).to_bytes(4, "little") + b"abc")
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match=r"big.p: not a readable refs pickle: .*truncated"):
            load_refs(tmp_path / "big.p")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20
