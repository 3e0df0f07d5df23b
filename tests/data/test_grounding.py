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
