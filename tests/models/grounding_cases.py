"""What the grounding model tests (PPMN, DRMN) share: captions with their phrase spans and a tiny
random batch. Imported by name: ``tests/models/conftest.py`` puts this folder on ``sys.path``."""
import torch

from groundkit.models.drmn import DRMNConfig, build_drmn
from groundkit.vision.backbone import BackboneConfig

CAPTION = "There is a small red circle next to the grass."
SPANS = [(9, 26), (35, 44)]  # "a small red circle", "the grass"
OTHER_CAPTION = "A big blue square sits on the sand near a tree."
OTHER_SPANS = [(0, 12), (21, 29), (35, 47)]


def tiny_batch(b: int = 2, size: int = 64) -> dict:
    """``b`` random images of ``size`` px with CAPTION, and random stride-4 masks of its 2 phrases."""
    g = torch.Generator().manual_seed(0)
    return {"images": torch.randn(b, 3, size, size, generator=g), "captions": [CAPTION] * b,
            "spans": [SPANS] * b,
            "masks": [(torch.rand(2, size // 4, size // 4, generator=g) > 0.5).float()
                      for _ in range(b)]}


def tiny_drmn(encoder, seed: int = 0, **overrides):
    """A tiny DRMN (seeded) around ``encoder``; ``overrides``: DRMNConfig keys."""
    torch.manual_seed(seed)
    base = dict(backbone=BackboneConfig(depth=18, base_width=8, fpn_channels=16, norm="gn"),
                neck_channels=16, hidden_dim=16, encoder_layers=1, refine_rounds=2, top_k=5,
                heads=2, points=2, ffn_dim=32, dropout=0.0)
    return build_drmn(DRMNConfig(**{**base, **overrides}), text_encoder=encoder)
