"""The referring dataset: letterboxed items, one per sentence, their targets and augmentation."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from groundkit.data.formats.refcoco import load_instances, load_refs, select_refs, sentence_types, write_refs
from groundkit.data.referring import ReferringDataConfig, ReferringDataset, collate_referring, swap_left_right
from groundkit.data.synthetic.language import make_refs, make_typed_refs
from groundkit.data.synthetic.scene import make_scene
from groundkit.errors import ConfigError, FormatError, InputError

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "coco_sample"
KEYS = {"image", "expression", "box", "mask", "boxes", "classes", "category_ids", "masks", "referent",
        "context_boxes", "ref_id", "sent_id", "image_id", "type", "orig_size", "input_size", "scale"}
EXTREME_WORDS = re.compile(r"on the (left|right)|at the (top|bottom)|(left|right|top)most|lowest")
RELATION_WORDS = re.compile(r"left of|right of|above|below|under")


def sample_cfg(**kw) -> ReferringDataConfig:
    """The real RefCOCO sample: refs and instances under refcoco/, the images under images/."""
    return ReferringDataConfig(root=str(SAMPLE), image_dirs=("images",), **kw)


def synthetic_cfg(root, **kw) -> ReferringDataConfig:
    return ReferringDataConfig(root=str(root), **kw)


@pytest.fixture
def edited(tmp_path):
    """``edited(change_refs=None, change_instances=None)``: a root with edited copies of the
    sample's refs / instances (the images stay in the fixture folder)."""
    def make(change_refs=None, change_instances=None) -> ReferringDataConfig:
        (tmp_path / "refcoco").mkdir(exist_ok=True)
        refs = load_refs(SAMPLE / "refcoco" / "refs(unc).p")
        if change_refs:
            change_refs(refs)
        write_refs(tmp_path / "refcoco" / "refs(unc).p", refs)
        instances = json.loads((SAMPLE / "refcoco" / "instances.json").read_text())
        if change_instances:
            change_instances(instances)
        (tmp_path / "refcoco" / "instances.json").write_text(json.dumps(instances))
        return ReferringDataConfig(root=str(tmp_path), image_dirs=(str(SAMPLE / "images"),))
    return make


def check_item(item, ds):
    """The contract of an item, whatever the image and augmentation."""
    S = ds.cfg.input_size
    assert set(item) == KEYS
    assert item["image"].shape == (3, S, S) and item["image"].dtype == torch.float32
    assert item["box"].shape == (4,) and item["box"].dtype == torch.float32
    assert item["mask"].shape == (S, S) and item["mask"].dtype == torch.bool
    G = len(item["boxes"])
    assert item["boxes"].shape == (G, 4) and item["boxes"].dtype == torch.float32
    assert item["classes"].shape == (G,) and item["classes"].dtype == torch.int64
    assert item["masks"].shape == (G, S // 4, S // 4) and item["masks"].dtype == torch.float32
    assert ((item["classes"] >= 0) & (item["classes"] < len(ds.category_ids()))).all()
    assert item["category_ids"].tolist() == [ds.category_ids()[c] for c in item["classes"]]
    assert torch.equal(item["boxes"][item["referent"]], item["box"])
    h, w = item["input_size"]
    boxes = item["boxes"]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert not item["mask"][h:].any() and not item["mask"][:, w:].any()
    assert (item["image"][:, h:] == 0).all() and (item["image"][:, :, w:] == 0).all()
    # The referent mask lies in its box (a pixel to spare for the rounding of the resize).
    ys, xs = torch.nonzero(item["mask"], as_tuple=True)
    x1, y1, x2, y2 = item["box"].tolist()
    assert len(ys) and xs.min() >= x1 - 1 and xs.max() < x2 + 1 and ys.min() >= y1 - 1 and ys.max() < y2 + 1
    assert item["masks"].min() >= 0 and item["masks"].max() <= 1 + 1e-6
    assert isinstance(item["expression"], str) and item["expression"].strip()
    # context boxes are boxes of other objects of the item, placed as they are
    context = item["context_boxes"]
    assert context.dtype == torch.float32 and context.shape == (len(context), 4)
    for c in context:
        rows = (boxes == c).all(1).nonzero()[:, 0].tolist()
        assert rows and rows != [item["referent"]]


# --- items on the real sample and the synthetic benchmark -----------------------------------------

def test_letterbox_geometry_on_the_real_sample():
    ds = ReferringDataset(sample_cfg(), "val")
    item = ds[0]
    check_item(item, ds)
    assert item["orig_size"] == (427, 640) and item["input_size"] == (85, 128) and item["scale"] == 0.2
    assert item["expression"] == "the ball in the air" and item["type"] == ""
    assert (item["ref_id"], item["sent_id"], item["image_id"]) == (1, 10, 142238)
    torch.testing.assert_close(item["box"].double() / item["scale"],
                               torch.from_numpy(ds.instances.box(ds.samples[0].ann_id)))
    # Every non-crowd object of the image (14 of the 15 things), in instances.json order.
    instances = ds.instances
    ann_ids = [a.id for a in instances.annotations.values() if a.image_id == 142238 and not a.iscrowd]
    assert len(item["boxes"]) == len(ann_ids) == 14 and ann_ids[item["referent"]] == ds.samples[0].ann_id
    for box, label, ann_id in zip(item["boxes"], item["classes"], ann_ids):
        torch.testing.assert_close(box.double() / 0.2, torch.from_numpy(instances.box(ann_id)))
        assert ds.category_ids()[label] == instances.annotations[ann_id].category_id
    assert ds.category_ids() == sorted(instances.categories) and len(ds.category_ids()) == 80
    # The image is the file resized to 85 x 128, zeros below.
    assert item["image"][:, :85].abs().sum(0).gt(0).float().mean() > 0.99


def test_mask_targets_cover_the_objects():
    ds = ReferringDataset(sample_cfg(), "testA")
    item = ds[0]
    check_item(item, ds)
    s = item["scale"]
    ann_ids = [a.id for a in ds.instances.annotations.values() if a.image_id == 439180 and not a.iscrowd]
    for coverage, ann_id in zip(item["masks"], ann_ids):
        area = ds.instances.mask(ann_id).sum() * s * s  # in input pixels
        assert coverage.sum() * 16 == pytest.approx(area, rel=1e-3, abs=1e-3)
    area = ds.instances.mask(ds.samples[0].ann_id).sum() * s * s
    assert item["mask"].sum() == pytest.approx(area, rel=0.1)


def test_synthetic_items_and_collate(tiny_synthetic):
    ds = ReferringDataset(synthetic_cfg(tiny_synthetic), "train")
    instances = load_instances(tiny_synthetic / "refcoco" / "instances.json")
    for item, sample in zip(ds, ds.samples):
        check_item(item, ds)
        assert item["scale"] == 2.0 and item["orig_size"] == (64, 64) and item["input_size"] == (128, 128)
        torch.testing.assert_close(item["box"].double() / 2, torch.from_numpy(instances.box(sample.ann_id)))
        assert item["masks"].sum() * 16 == pytest.approx(
            sum(instances.mask(a).sum() for a in instances.annotations
                if instances.annotations[a].image_id == sample.image_id) * 4, rel=1e-3)
        assert item["mask"].sum() == pytest.approx(instances.mask(sample.ann_id).sum() * 4, rel=0.1)
    batch = collate_referring([ds[0], ds[1], ds[2]])
    assert batch["images"].shape == (3, 3, 128, 128) and batch["box"].shape == (3, 4)
    assert batch["mask"].shape == (3, 128, 128) and batch["mask"].dtype == torch.bool
    for key, name in [("boxes", "boxes"), ("classes", "classes"), ("category_ids", "category_ids"),
                      ("masks", "masks"),
                      ("expressions", "expression"), ("referent", "referent"), ("ref_ids", "ref_id"),
                      ("sent_ids", "sent_id"), ("image_ids", "image_id"), ("types", "type"),
                      ("context_boxes", "context_boxes"),
                      ("image_sizes", "input_size"), ("orig_sizes", "orig_size"), ("scales", "scale")]:
        assert len(batch[key]) == 3
        for value, i in zip(batch[key], range(3)):
            expected = ds[i][name]
            assert torch.equal(value, expected) if torch.is_tensor(value) else value == expected
    assert set(batch) == {"images", "box", "mask", "boxes", "classes", "category_ids", "masks",
                          "expressions", "referent",
                          "ref_ids", "sent_ids", "image_ids", "types", "image_sizes", "orig_sizes",
                          "scales", "context_boxes"}


def test_one_item_per_sentence_and_split_rule(tiny_synthetic):
    assert [len(ReferringDataset(sample_cfg(), s)) for s in ("val", "testA", "testB", "test")] == [2, 2, 1, 3]
    assert [s.sent_id for s in ReferringDataset(sample_cfg(), "test").samples] == [20, 21, 30]
    refs = load_refs(tiny_synthetic / "refcoco" / "refs(unc).p")
    cfg = synthetic_cfg(tiny_synthetic)
    for split in ("train", "val", "testA", "testB", "test"):
        ds = ReferringDataset(cfg, split)
        sentences = [(r["ref_id"], s["sent_id"], s["sent"]) for r in select_refs(refs, split)
                     for s in r["sentences"]]
        assert [(s.ref_id, s.sent_id, s.sentence) for s in ds.samples] == sentences
        assert len(ds) == len(sentences)
        assert len(ds) > 0
    test = ReferringDataset(cfg, "test")
    assert {s.split for s in test.samples} == {"testA", "testB"}
    assert len(test) == len(ReferringDataset(cfg, "testA")) + len(ReferringDataset(cfg, "testB"))
    assert len(ReferringDataset(cfg, "train", max_items=3)) == 3
    assert len(ReferringDataset(synthetic_cfg(tiny_synthetic, max_items=2), "train")) == 2


def test_cache_gives_the_same_items(tiny_synthetic):
    plain, cached = (ReferringDataset(synthetic_cfg(tiny_synthetic, cache=c), "val") for c in (False, True))
    for i in range(len(plain)):
        assert torch.equal(plain[i]["image"], cached[i]["image"])
        assert torch.equal(plain[i]["mask"], cached[i]["mask"])
    assert cached[0] is cached[0]


# --- sentence types -------------------------------------------------------------------------------

def test_synthetic_sentences_say_their_type(tiny_synthetic):
    refs = load_refs(tiny_synthetic / "refcoco" / "refs(unc).p")
    for r in refs:
        for s in r["sentences"]:
            words = s["sent"]
            expected = ("extreme" if EXTREME_WORDS.search(words) else
                        "relation" if RELATION_WORDS.search(words) else "attributes")
            assert s["type"] == expected, words
    ds = ReferringDataset(synthetic_cfg(tiny_synthetic), "train")
    types = sentence_types(refs, "train")
    assert ds.types == [types[s.sent_id] for s in ds.samples] and set(ds.types) <= {
        "attributes", "relation", "extreme"}
    assert [ds[i]["type"] for i in range(len(ds))] == ds.types
    assert ReferringDataset(sample_cfg(), "test").types == ["", "", ""]  # real RefCOCO has none


def test_samples_carry_the_context_the_refs_name(tiny_synthetic, edited):
    ds = ReferringDataset(synthetic_cfg(tiny_synthetic), "train")
    assert any(s.context_ann_ids for s in ds.samples)
    for s, kind in zip(ds.samples, ds.types):
        assert bool(s.context_ann_ids) == (kind == "relation")
    assert [s.context_ann_ids for s in ReferringDataset(sample_cfg(), "test").samples] == [(), (), ()]

    def other_image(refs):  # a person of image 142238 named by a sentence about image 439180
        refs[2]["sentences"][0]["context_ann_ids"] = [39375001]
    with pytest.raises(FormatError, match="context annotation 39375001 is not another object of image"):
        ReferringDataset(edited(other_image), "test")


def test_context_boxes_are_the_named_objects_until_replaced(tiny_synthetic):
    ds = ReferringDataset(synthetic_cfg(tiny_synthetic), "train")
    instances = load_instances(tiny_synthetic / "refcoco" / "instances.json")
    assert ds.context_ann_ids == [s.context_ann_ids for s in ds.samples]
    for k, sample in enumerate(ds.samples):
        expected = [instances.box(a) * 2 for a in sample.context_ann_ids]  # 64 px images at 128
        got = ds[k]["context_boxes"]
        assert len(got) == len(expected)
        for box, want in zip(got, expected):
            torch.testing.assert_close(box.double(), torch.from_numpy(want))
    k = next(i for i, s in enumerate(ds.samples) if s.context_ann_ids)
    sample = ds.samples[k]
    others = [a for a, ann in instances.annotations.items()
              if ann.image_id == sample.image_id and a != sample.ann_id]
    cached = ReferringDataset(synthetic_cfg(tiny_synthetic, cache=True), "train")
    assert len(cached[k]["context_boxes"]) == 1
    for data in (ds, cached):  # a cached item is rebuilt with the new context
        data.set_context([others if i == k else [] for i in range(len(data.samples))])
        assert len(data[k]["context_boxes"]) == len(others)
        assert all(len(data[i]["context_boxes"]) == 0 for i in range(len(data)) if i != k)
    with pytest.raises(InputError, match="is not another non-crowd object"):
        ds.set_context([[sample.ann_id] if i == k else [] for i in range(len(ds.samples))])
    with pytest.raises(InputError, match="lists of contextual objects"):
        ds.set_context([])


def test_typed_refs_draw_exactly_as_make_refs():
    for seed in range(6):
        scene = make_scene(np.random.default_rng([seed, 0]), 128)
        a, b = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 1])
        typed = make_typed_refs(scene, a)
        assert make_refs(scene, b) == [(i, [text for text, _ in pairs]) for i, pairs in typed]
        assert a.random() == b.random()  # the generator is left in the same state


# --- augmentation ---------------------------------------------------------------------------------

def test_swap_left_right_words():
    assert swap_left_right("The Leftmost ball LEFT of the rightmost one, left-hand, lefty, bright") == \
        "The Rightmost ball RIGHT of the leftmost one, right-hand, lefty, bright"
    assert swap_left_right("right of the left car") == "left of the right car"
    assert swap_left_right("nothing to swap") == "nothing to swap"


def test_hflip_mirrors_image_box_mask_and_words():
    plain = ReferringDataset(sample_cfg(), "testA")
    ds = ReferringDataset(sample_cfg(hflip=True), "testA", train=True)
    a = plain[0]
    assert a["expression"] == "red truck on the left"
    flipped = []
    for seed in range(8):
        torch.manual_seed(seed)
        b = ds[0]
        check_item(b, ds)
        if b["expression"] != a["expression"]:
            flipped.append(b)
        else:  # not flipped this time: the plain item
            assert torch.equal(b["image"], a["image"]) and torch.equal(b["box"], a["box"])
    assert 0 < len(flipped) < 8
    b = flipped[0]
    assert b["expression"] == "red truck on the right" and b["type"] == a["type"]
    w = a["input_size"][1]  # 640 wide -> the whole 128 columns
    assert w == 128
    torch.testing.assert_close(b["boxes"], torch.stack([w - a["boxes"][:, 2], a["boxes"][:, 1],
                                                        w - a["boxes"][:, 0], a["boxes"][:, 3]], 1))
    torch.testing.assert_close(b["masks"], a["masks"].flip(-1))
    torch.testing.assert_close(b["image"], a["image"].flip(-1), atol=1e-5, rtol=0)
    assert (b["mask"] != a["mask"].flip(-1)).sum() <= 0.01 * a["mask"].sum()
    for seed in range(2):  # the same seed gives the same item
        torch.manual_seed(seed)
        first = ds[0]
        torch.manual_seed(seed)
        again = ds[0]
        assert torch.equal(again["image"], first["image"]) and again["expression"] == first["expression"]


@pytest.mark.parametrize("split", ["val", "testA", "testB"])
def test_scale_and_translate_keep_the_referent_inside(split):
    plain = ReferringDataset(sample_cfg(), split)
    ds = ReferringDataset(sample_cfg(scale_range=(0.5, 2.5), translate=0.4, color_jitter=0.4), split,
                          train=True)
    torch.manual_seed(0)
    for i in range(len(ds)):
        ref = plain[i]
        scales, corners = set(), set()
        for _ in range(6):
            item = ds[i]
            check_item(item, ds)
            # The referent is whole: its box is the scaled original box, moved, never cut.
            r = item["scale"] / ref["scale"]
            size = item["box"][2:] - item["box"][:2]
            torch.testing.assert_close(size, (ref["box"][2:] - ref["box"][:2]) * r, atol=1e-3, rtol=1e-4)
            assert item["box"].min() >= 0 and item["box"].max() <= 128
            scales.add(round(item["scale"], 6))
            corners.add(tuple(item["box"][:2].round().tolist()))
        assert len(scales) > 1 and len(corners) > 1


def test_a_referent_too_large_for_the_scale_is_shrunk_to_fit():
    ds = ReferringDataset(sample_cfg(scale_range=(3.0, 3.0), translate=0.5), "val", train=True)
    torch.manual_seed(0)
    for _ in range(20):  # a referent nearly as large as the image
        scale, (h, w), (dy, dx) = ds._placement((427, 640), np.array([10.0, 5.0, 630.0, 420.0]))
        assert 10 * scale + dx >= 0 and 630 * scale + dx <= 128
        assert 5 * scale + dy >= 0 and 420 * scale + dy <= 128


def test_no_augmentation_out_of_training():
    cfg = sample_cfg(scale_range=(0.5, 2.0), translate=0.3, color_jitter=0.5, hflip=True, rephrase=1.0)
    plain, evaluated = ReferringDataset(sample_cfg(), "testA"), ReferringDataset(cfg, "testA")
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a, b = plain[0], evaluated[0]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert (a["scale"], a["expression"]) == (b["scale"], b["expression"])
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn


def test_rephrase_says_template_sentences_otherwise_and_keeps_the_rest(tiny_synthetic):
    from groundkit.data.synthetic.phrasing import TemplateParser

    plain = ReferringDataset(synthetic_cfg(tiny_synthetic), "train")
    ds = ReferringDataset(synthetic_cfg(tiny_synthetic, rephrase=1.0), "train", train=True)
    parser = TemplateParser()
    torch.manual_seed(0)
    changed = 0
    for i, sample in enumerate(ds.samples):
        a, b = plain[i], ds[i]
        check_item(b, ds)
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
        parsed = parser.parse(sample.sentence)
        assert parsed is not None, sample.sentence   # every synthetic sentence is a template's
        changed += b["expression"] != a["expression"]
        again = parser.parse(b["expression"].rstrip("."))
        assert again is None or again == parsed
    assert changed > 0.6 * len(ds)
    torch.manual_seed(3)   # the same seed gives the same phrasing
    first = ds[0]["expression"]
    torch.manual_seed(3)
    assert ds[0]["expression"] == first


def test_rephrase_keeps_sentences_no_template_wrote():
    plain = ReferringDataset(sample_cfg(), "test")   # real RefCOCO sentences
    ds = ReferringDataset(sample_cfg(rephrase=1.0), "test", train=True)
    torch.manual_seed(0)
    assert [ds[i]["expression"] for i in range(len(ds))] == [plain[i]["expression"] for i in range(len(ds))]


def test_color_jitter_changes_colours_only():
    plain = ReferringDataset(sample_cfg(), "val")
    ds = ReferringDataset(sample_cfg(color_jitter=0.5), "val", train=True)
    torch.manual_seed(1)
    item = ds[0]
    check_item(item, ds)
    assert not torch.allclose(item["image"], plain[0]["image"])
    assert torch.equal(item["box"], plain[0]["box"]) and torch.equal(item["mask"], plain[0]["mask"])


# --- clear errors ---------------------------------------------------------------------------------

def test_missing_annotation_or_image_record(edited):
    def ann(refs):
        refs[0]["ann_id"] = 999
    with pytest.raises(FormatError, match=r"refs\(unc\).p: ref 1: field 'ann_id': annotation 999 is not in"):
        ReferringDataset(edited(ann), "val")

    def image(refs):
        refs[0]["image_id"] = 999
    with pytest.raises(FormatError, match=r"refs\(unc\).p: ref 1: field 'image_id': image 999 is not in "
                                          r".*instances.json"):
        ReferringDataset(edited(image), "val")

    def other_image(refs):
        refs[0]["image_id"] = 439180
    with pytest.raises(FormatError, match=r"ref 1: field 'image_id': annotation 167578381 is on image "
                                          r"142238"):
        ReferringDataset(edited(other_image), "val")


def test_empty_or_missing_expression(edited):
    def empty(refs):
        refs[0]["sentences"][1]["sent"] = "  "
    with pytest.raises(FormatError, match=r"refs\(unc\).p: ref 1, sentence 11: field 'sent': "
                                          r"empty expression"):
        ReferringDataset(edited(empty), "val")

    def raw_only(refs):
        del refs[0]["sentences"][1]["sent"]
    assert ReferringDataset(edited(raw_only), "val")[1]["expression"] == "ball being caught"


def test_image_file_missing_from_every_folder(tiny_synthetic, edited):
    cfg = synthetic_cfg(tiny_synthetic, image_dirs=("images/val", "images/test"))
    with pytest.raises(FormatError, match=r"instances.json: image 1000001: field 'file_name': image file "
                                          r"'000001000001.png' is in none of the image folders"):
        ReferringDataset(cfg, "train")
    cfg = edited()
    cfg.image_dirs = ("nowhere", str(SAMPLE / "images"))  # found in the second folder
    assert len(ReferringDataset(cfg, "val")) == 2


def test_image_size_differs_from_instances(edited):
    def taller(instances):
        next(i for i in instances["images"] if i["id"] == 142238)["height"] = 428
    ds = ReferringDataset(edited(change_instances=taller), "testB")
    assert ds[0]["orig_size"] == (360, 640)  # the other image is fine
    ds = ReferringDataset(edited(change_instances=taller), "val")
    with pytest.raises(FormatError, match=r"instances.json: image 142238 \(000000142238.jpg\): field "
                                          r"'height/width': expected 428x640 from the JSON, the image file "
                                          r"is 427x640"):
        ds[0]


def test_a_crowd_referent_is_among_the_objects(edited):
    def crowd(refs):
        refs[0]["ann_id"] = 31533621  # the crowd of people of image 142238
    ds = ReferringDataset(edited(crowd), "val")
    item = ds[0]
    check_item(item, ds)
    assert len(item["boxes"]) == 15 and item["referent"] == 14
    torch.testing.assert_close(item["box"].double() / 0.2, torch.from_numpy(ds.instances.box(31533621)))


@pytest.mark.parametrize("change,field", [({"input_size": 130}, "input_size"),
                                          ({"scale_range": (2.0, 1.0)}, "scale_range"),
                                          ({"translate": 1.5}, "translate"),
                                          ({"rephrase": 1.5}, "rephrase"),
                                          ({"rephrase": -0.1}, "rephrase")])
def test_bad_config(change, field):
    with pytest.raises(ConfigError, match=field):
        ReferringDataset(sample_cfg(**change), "val")


def test_copy_of_synthetic_layout_uses_absolute_paths(tmp_path, tiny_synthetic):
    shutil.copytree(tiny_synthetic / "refcoco", tmp_path / "ann")
    cfg = ReferringDataConfig(root=str(tiny_synthetic), refs=str(tmp_path / "ann" / "refs(unc).p"),
                              instances=str(tmp_path / "ann" / "instances.json"))
    assert len(ReferringDataset(cfg, "val")) == len(ReferringDataset(synthetic_cfg(tiny_synthetic), "val"))
