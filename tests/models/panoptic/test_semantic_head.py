import pytest
import torch
import torch.nn.functional as F

from groundkit.models.panoptic.semantic_head import (
    FeatureDecoder,
    SemanticHead,
    downsample_labels,
    semantic_loss,
)


def test_head_shape_and_shared_level_convs():
    decoder = FeatureDecoder(in_channels=8, channels=4, num_convs=2)
    head = SemanticHead(decoder, num_classes=5)
    feats = {f"p{i}": torch.randn(2, 8, 64 >> i, 96 >> i) for i in range(2, 6)}
    assert head(feats).shape == (2, 5, 16, 24)
    assert decoder.out_channels == 16 and len(decoder.convs) == 2  # one stack for all four levels


def test_downsample_labels_takes_cell_centres():
    labels = torch.arange(64).reshape(8, 8)
    assert downsample_labels(labels, (2, 2)).tolist() == [[18, 22], [50, 54]]
    with pytest.raises(ValueError, match="multiple"):
        downsample_labels(labels[:7], (2, 2))


def test_loss_ignores_void_and_handles_all_void():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    target = torch.full((1, 8, 8), 255)
    assert semantic_loss(logits, target).item() == 0.0
    target[0, 2, 2], target[0, 6, 6] = 1, 2
    want = F.cross_entropy(logits[0, :, [0, 1], [0, 1]].T, torch.tensor([1, 2]))
    torch.testing.assert_close(semantic_loss(logits, target), want)
