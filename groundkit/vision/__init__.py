"""Vision building blocks: ResNet trunk, FPN, the PPMN semantic-FPN neck, positional codes, and
the readers of torchvision and detectron2 weight files."""
from groundkit.vision.backbone import BackboneConfig, ResNetFPN, build_backbone, pad_to_multiple
from groundkit.vision.detectron2 import load_detectron2_weights, read_detectron2_weights
from groundkit.vision.fpn import FPN
from groundkit.vision.neck import ConvGNReLU, SemanticFPNNeck
from groundkit.vision.position import LevelEmbedding, PositionEmbeddingSine
from groundkit.vision.resnet import (
    FrozenBatchNorm2d,
    LoadReport,
    ResNet,
    load_resnet_weights,
    load_weights,
    make_norm,
    num_groups,
    read_state_dict,
)

__all__ = [
    "BackboneConfig", "ResNetFPN", "build_backbone", "pad_to_multiple", "FPN", "ConvGNReLU",
    "SemanticFPNNeck", "LevelEmbedding", "PositionEmbeddingSine", "FrozenBatchNorm2d", "LoadReport",
    "ResNet", "load_resnet_weights", "load_weights", "make_norm", "num_groups", "read_state_dict",
    "load_detectron2_weights", "read_detectron2_weights",
]
