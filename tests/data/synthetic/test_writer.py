"""The generated folder is a pure function of the seed and loads through the format readers."""
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from groundkit.cli import main
from groundkit.data.formats import (
    check_narratives,
    load_instances,
    load_narratives,
    load_panoptic,
    load_referring,
    load_refs,
)
from groundkit.data.synthetic import CATEGORIES, generate_benchmark
from groundkit.data.synthetic.writer import image_id
from groundkit.errors import InputError

SIZES = {"train": 4, "val": 3, "test": 4}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    generate_benchmark(out, 3, SIZES, 64, progress=False)
    return out


def test_same_seed_same_bytes_other_seed_other_bytes(root, tmp_path):
    generate_benchmark(tmp_path / "a", 3, SIZES, 64, progress=False)
    assert _files(tmp_path / "a") == _files(root)
    generate_benchmark(tmp_path / "b", 4, SIZES, 64, progress=False)
    other = _files(tmp_path / "b")
    assert other.keys() == _files(root).keys() and other != _files(root)


def test_worker_processes_write_the_same_bytes(root, tmp_path):
    generate_benchmark(tmp_path, 3, SIZES, 64, progress=False, workers=2)
    assert _files(tmp_path) == _files(root)


def test_a_split_does_not_depend_on_the_other_splits(root, tmp_path):
    generate_benchmark(tmp_path, 3, {"val": 3}, 64, progress=False)
    for name in ("annotations/panoptic_val.json", "annotations/png_coco_val.json"):
        assert (tmp_path / name).read_bytes() == (root / name).read_bytes()


def test_layout_and_images(root):
    for split, n in SIZES.items():
        images = sorted((root / "images" / split).iterdir())
        pngs = sorted((root / "annotations" / f"panoptic_{split}").iterdir())
        assert len(images) == len(pngs) == n
        with Image.open(images[0]) as img:
            assert img.mode == "RGB" and img.size == (64, 64)
    assert (root / "refcoco" / "instances.json").is_file()
    assert (root / "refcoco" / "refs(unc).p").is_file()


@pytest.mark.parametrize("split", list(SIZES))
def test_panoptic_and_narratives_load_and_agree(root, split):
    ann = root / "annotations"
    panoptic = load_panoptic(ann / f"panoptic_{split}.json", ann / f"panoptic_{split}")
    narratives = load_narratives(ann / f"png_coco_{split}.json")  # finds every utterance
    check_narratives(narratives, panoptic)
    assert {c.id for c in panoptic.categories.values()} == {c.id for c in CATEGORIES}
    assert sorted(n.image_id for n in narratives) == sorted(panoptic.images)
    for record_id, ann_ in panoptic.annotations.items():
        ids = panoptic.id_map(record_id)  # PNG ids are the JSON's segments
        assert set(np.unique(ids)) == {s.id for s in ann_.segments}
        for s in ann_.segments:
            ys, xs = np.nonzero(ids == s.id)
            assert s.area == len(xs)
            assert s.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


def test_narrative_json_is_the_real_layout(root):
    raw = json.loads((root / "annotations" / "png_coco_val.json").read_text())
    first = raw[0]
    assert set(first) == {"image_id", "annotator_id", "caption", "segments"}
    assert isinstance(first["image_id"], str)
    for seg in first["segments"]:
        assert set(seg) == {"utterance", "segment_ids", "plural", "noun"}
        assert all(isinstance(s, str) for s in seg["segment_ids"])
        assert seg["noun"] or not seg["segment_ids"]


def test_refcoco_files(root):
    refs = load_refs(root / "refcoco" / "refs(unc).p")
    instances = load_instances(root / "refcoco" / "instances.json")
    assert {r["split"] for r in refs} == {"train", "val", "testA", "testB"}
    assert len({r["ref_id"] for r in refs}) == len(refs)
    sent_ids = [s["sent_id"] for r in refs for s in r["sentences"]]
    assert len(set(sent_ids)) == len(sent_ids)
    keys = {"ref_id", "ann_id", "image_id", "category_id", "file_name", "split", "sent_ids",
            "sentences"}
    for r in refs:
        assert set(r) == keys and r["sent_ids"] == [s["sent_id"] for s in r["sentences"]]
        assert instances.instance(r["ann_id"]).category_id == r["category_id"]
        for s in r["sentences"]:
            assert s["sent"] == s["raw"].lower() and s["tokens"] == s["sent"].split()
        test_image = r["image_id"] // 1_000_000 == 3
        assert test_image == r["split"].startswith("test")
    # Instances are the thing segments of the panoptic PNGs, as RLE.
    ann = root / "annotations"
    panoptic = load_panoptic(ann / "panoptic_train.json", ann / "panoptic_train")
    image = next(iter(panoptic.images))
    things = [s for s in panoptic.annotation(image).segments if s.category_id < 100]
    mine = sorted((a for a in instances.annotations.values() if a.image_id == image),
                  key=lambda a: a.id)
    assert [a.category_id for a in mine] == [s.category_id for s in things]
    for a, s in zip(mine, things):
        assert (instances.mask(a.id) == (panoptic.id_map(image) == s.id)).all()
    refcoco = root / "refcoco"
    samples, _ = load_referring(refcoco / "refs(unc).p", refcoco / "instances.json", "testB")
    assert samples and all(s.split == "testB" for s in samples)


def test_relation_sentences_name_the_annotation_of_their_anchor(root):
    refs = load_refs(root / "refcoco" / "refs(unc).p")
    instances = load_instances(root / "refcoco" / "instances.json")
    names = {c.id: c.name for c in instances.categories.values()}
    relations = 0
    for r in refs:
        for s in r["sentences"]:
            assert set(s) == {"raw", "sent", "tokens", "sent_id", "type", "context_ann_ids"}
            context = s["context_ann_ids"]
            if s["type"] != "relation":
                assert context == [], s["sent"]
                continue
            relations += 1
            assert len(context) == 1 and r["ann_id"] not in context, s["sent"]
            anchor = instances.instance(context[0])  # a real annotation, of the same image
            assert anchor.image_id == r["image_id"]
            # "the star left of the green circle": the words after the relation end in its noun
            words = re.split(r" (?:left of|right of|above|below|under) the ", s["sent"])[1].split()
            assert words[-1] in (names[anchor.category_id], "shape", "object"), s["sent"]
    assert relations > 0


def test_refs_pickle_loads_as_python2_files_do(root):
    with open(root / "refcoco" / "refs(unc).p", "rb") as f:
        assert pickle.load(f, encoding="latin1") == load_refs(root / "refcoco" / "refs(unc).p")


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="image size"):
        generate_benchmark(tmp_path, 0, {"train": 1}, 16)
    with pytest.raises(InputError, match="unknown split"):
        image_id("dev", 0)


def test_cli_generate(tmp_path, capsys):
    assert main(["generate", "--out", str(tmp_path), "--train", "2", "--val", "1", "--test", "0",
                 "--size", "48", "--seed", "5"]) == 0
    assert "wrote 3 images" in capsys.readouterr().out
    assert not (tmp_path / "annotations" / "png_coco_test.json").exists()
    assert len(load_narratives(tmp_path / "annotations" / "png_coco_train.json")) == 2
    assert main(["generate", "--out", str(tmp_path), "--train", "-1"]) == 2
