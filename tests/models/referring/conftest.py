import pytest
import torch

from groundkit.models.referring.pbrec import PBRECConfig, build_pbrec
from groundkit.vision.backbone import BackboneConfig


@pytest.fixture
def tiny_pbrec(text_encoder):
    """``tiny_pbrec(**options)``: a randomly initialised PBREC on 64 px inputs (8 x 8 points)."""
    def build(**options):
        torch.manual_seed(0)
        cfg = PBRECConfig(backbone=BackboneConfig(depth=18, base_width=8, fpn_channels=16),
                          num_classes=3, grid_stride=8, dim=16, layers=1, heads=2, ffn_dim=32,
                          detector_convs=1, mask_dim=8, mask_convs=1, **options)
        return build_pbrec(cfg, text_encoder=text_encoder).eval()
    return build
