"""The grounding dataset on the real COCO sample: phrases, masks at stride 4, padding."""
from pathlib import Path

import numpy as np
import pytest
import torch

from groundkit.data.grounding import GroundingDataset, collate_grounding
from groundkit.data.layout import SplitPaths
from groundkit.data.transforms import ResizeConfig
from groundkit.errors import FormatError, InputError

SAMPLE = Path(__file__).parents[1] / "fixtures" / "coco_sample"


def sample_paths(root=SAMPLE):
    return SplitPaths(root / "images", root / "panoptic.json", root / "panoptic",
                      root / "png_narratives.json")


@pytest.fixture(scope="module")
def dataset():
    return GroundingDataset(sample_paths(), ResizeConfig(short_side=200, max_size=333))


def test_items_hold_grounded_phrases_with_masks_at_stride_4(dataset):
    item = dataset[0]
    narrative = dataset.narratives[0]
    assert item["image_id"] == 142238 and item["orig_size"] == (427, 640)
    assert item["input_size"] == (200, 300)
    assert item["image"].shape == (3, 200, 300)
    assert item["masks"].shape == (len(narrative.grounded()), 50, 75)
    spans = [narrative.caption[s:e].lower() for s, e in item["spans"]]
    assert "group of people" in spans and "grass" in spans
    # the mask of "group of people" covers the same share of the image as its 14 segments
    k = spans.index("group of people")
    union = dataset.panoptic.union_mask(142238, narrative.utterances[item["segment_indices"][k]].segment_ids)
    assert item["masks"][k].mean().item() == pytest.approx(union.mean(), abs=0.01)


def test_collate_pads_images_to_32_and_masks_to_a_quarter(dataset):
    batch = collate_grounding([dataset[0], dataset[1]])
    assert batch["images"].shape[-2:] == (224, 352)  # 200x300 and 187x333 padded
    assert all(m.shape[-2:] == (56, 88) for m in batch["masks"])
    assert batch["captions"][0] == dataset.narratives[0].caption
    assert torch.all(batch["images"][0, :, 200:, :] == 0)


def test_image_size_must_match_its_record(tmp_path, dataset):
    import shutil

    from PIL import Image
    root = tmp_path / "sample"
    shutil.copytree(SAMPLE, root)
    Image.new("RGB", (10, 10)).save(root / "images" / "000000142238.jpg")
    broken = GroundingDataset(sample_paths(root))
    with pytest.raises(FormatError, match="000000142238.jpg.*height/width|height/width"):
        broken[0]


def test_missing_split_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no such data folder"):
        GroundingDataset.from_root(tmp_path / "nope", "val")
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="missing"):
        GroundingDataset.from_root(tmp_path / "d", "val")


def test_semantic_labels_are_the_category_covering_most_of_each_cell():
    dataset = GroundingDataset(sample_paths(), ResizeConfig(short_side=200, max_size=333),
                               semantic=True)
    item = dataset[0]
    labels = item["semantic"]
    assert labels.shape == item["masks"].shape[-2:] == (50, 75)
    # literal reference: the image's id map at 200 x 300 (nearest), each 4 x 4 cell's majority
    ids = dataset.panoptic.id_map(item["image_id"])
    category_of = {s.id: s.category_id for s in dataset.panoptic.annotation(item["image_id"]).segments}
    label_of = {c: i for i, c in enumerate(dataset.category_ids())}
    full = np.vectorize(lambda i: label_of.get(category_of.get(int(i), -1), -1))(ids)
    agree = checked = 0
    for y in range(50):
        for x in range(75):
            cell = full[int(y * 427 / 50):int((y + 1) * 427 / 50), int(x * 640 / 75):int((x + 1) * 640 / 75)]
            values, counts = np.unique(cell, return_counts=True)
            if counts.max() > 0.6 * cell.size and values[counts.argmax()] >= 0:
                checked += 1
                agree += int(labels[y, x]) == values[counts.argmax()]
    assert checked > 2000 and agree / checked > 0.97
    assert set(labels.unique().tolist()) <= set(range(len(label_of))) | {255}


def test_collate_pads_semantic_labels_with_the_ignore_label():
    dataset = GroundingDataset(sample_paths(), ResizeConfig(short_side=200, max_size=333),
                               semantic=True)
    batch = collate_grounding([dataset[0], dataset[1]])
    assert batch["semantic"].shape == (2, 56, 88) and batch["semantic"].dtype == torch.long
    assert torch.all(batch["semantic"][0, 50:] == 255) and torch.all(batch["semantic"][1, :, 84:] == 255)
