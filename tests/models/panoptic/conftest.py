import pytest
import torch

from groundkit.models.panoptic import PanopticConfig
from groundkit.ops.boxes import masks_to_boxes
from groundkit.vision.backbone import BackboneConfig


def tiny_config(**overrides) -> PanopticConfig:
    """A CPU-sized model: 3 things, 2 stuff, 8-wide ResNet-18, 16-wide FPN, 3 detector levels."""
    settings = dict(
        backbone=BackboneConfig(depth=18, base_width=8, fpn_channels=16, norm="gn"),
        thing_ids=(1, 2, 3), stuff_ids=(101, 102), decoder_channels=8, decoder_convs=1,
        affinity_channels=8, detector_levels=3, detector_convs=1, size_limits=(32, 64),
        stuff_area_min=0, train_score_thresh=0.05)
    settings.update(overrides)
    return PanopticConfig(**settings)


def toy_batch(seed: int = 0) -> dict:
    """Two 64 x 96 images: stuff 4 on top, stuff 3 below, three boxes of flat colour (things)."""
    gen = torch.Generator().manual_seed(seed)
    h, w = 64, 96
    semantic = torch.full((2, h, w), 3)
    semantic[:, :24] = 4
    masks = [torch.zeros(2, h, w, dtype=torch.bool), torch.zeros(1, h, w, dtype=torch.bool)]
    masks[0][0, 8:24, 8:40] = True
    masks[0][1, 30:60, 50:90] = True
    masks[1][0, 10:50, 10:50] = True
    classes = [torch.tensor([0, 2]), torch.tensor([1])]
    images = torch.randn(2, 3, h, w, generator=gen) * 0.1
    for i in range(2):
        images[i, :, semantic[i] == 4] += torch.tensor([[1.0], [0.0], [-1.0]])
        for mask, label in zip(masks[i], classes[i]):
            semantic[i][mask] = label
            images[i, :, mask] = torch.eye(3)[label][:, None] * 2
    return {"images": images, "image_sizes": [(64, 96), (64, 96)], "semantic": semantic,
            "boxes": [masks_to_boxes(m) for m in masks], "classes": classes, "masks": masks}


@pytest.fixture
def batch() -> dict:
    return toy_batch()


@pytest.fixture
def make_config():
    return tiny_config


@pytest.fixture
def make_batch():
    return toy_batch
