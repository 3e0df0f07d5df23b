import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from groundkit.data.formats import load_panoptic
from groundkit.data.panoptic_dataset import PanopticSegDataset, collate_panoptic, hflip_item
from groundkit.data.transforms import ResizeConfig
from groundkit.errors import FormatError, InputError
from groundkit.labels import IGNORE_LABEL as IGNORE
from groundkit.ops.boxes import masks_to_boxes

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "coco_sample"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The real COCO sample laid out as a split ``val`` (images/val, annotations/panoptic_val*)."""
    shutil.copytree(SAMPLE / "images", tmp_path / "images" / "val")
    shutil.copytree(SAMPLE / "panoptic", tmp_path / "annotations" / "panoptic_val")
    shutil.copy(SAMPLE / "panoptic.json", tmp_path / "annotations" / "panoptic_val.json")
    for p in tmp_path.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return tmp_path


def test_item_matches_the_annotation(root):
    ds = PanopticSegDataset(root, "val", resize=ResizeConfig(427, 640))  # native size of image 0
    assert len(ds) == 2 and len(ds.thing_ids) == 80 and len(ds.stuff_ids) == 53
    assert list(ds.thing_ids) == sorted(ds.thing_ids)
    item = ds[0]
    gt = load_panoptic(SAMPLE / "panoptic.json", SAMPLE / "panoptic")
    ids = gt.id_map(item["image_id"])
    assert item["image"].shape == (3, 427, 640) and item["orig_size"] == (427, 640)
    semantic = item["semantic"].numpy()
    assert (semantic[ids == 0] == IGNORE).all()
    segments = gt.annotation(item["image_id"]).segments
    for seg in segments:
        assert (semantic[ids == seg.id] == ds.label_of[seg.category_id]).all()
    things = [s for s in segments if gt.categories[s.category_id].isthing and not s.iscrowd]
    assert len(item["masks"]) == len(things) == 14  # 15 thing segments, one of them a crowd
    for mask, label, seg in zip(item["masks"], item["classes"], things):
        assert np.array_equal(mask.numpy(), ids == seg.id) and ds.thing_ids[label] == seg.category_id
    torch.testing.assert_close(item["boxes"], masks_to_boxes(item["masks"]))


def test_resize_flip_and_collate(root):
    ds = PanopticSegDataset(root, "val", resize=ResizeConfig(short_side=100, max_size=200))
    a, b = ds[0], ds[1]
    assert a["input_size"] == (100, 150) and b["input_size"] == (100, 178)
    assert a["masks"].shape[1:] == a["semantic"].shape == (100, 150)
    flipped = hflip_item(a)
    torch.testing.assert_close(flipped["boxes"], masks_to_boxes(flipped["masks"]))
    assert torch.equal(hflip_item(flipped)["semantic"], a["semantic"])
    batch = collate_panoptic([a, b])
    assert batch["images"].shape == (2, 3, 128, 192) and batch["semantic"].shape == (2, 128, 192)
    assert (batch["semantic"][0, 100:] == IGNORE).all() and (batch["semantic"][0, :, 150:] == IGNORE).all()
    assert batch["masks"][1].shape == (len(b["masks"]), 128, 192) and not batch["masks"][1][:, 100:].any()
    assert batch["image_sizes"] == [(100, 150), (100, 178)]
    assert batch["orig_sizes"] == [(427, 640), (360, 640)]


def test_categories_must_fit_the_model(root):
    with pytest.raises(FormatError, match="thing category 1 .* not among"):
        PanopticSegDataset(root, "val", thing_ids=(2, 3), stuff_ids=(92,))


def test_missing_split_is_a_clear_error(root):
    with pytest.raises(InputError, match="images/train: missing"):
        PanopticSegDataset(root, "train")
