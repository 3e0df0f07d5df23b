import torch


def test_cell_colours_are_the_mean_of_each_grid_cell(tiny_pbrec):
    model = tiny_pbrec(cell_colours=True)
    images = torch.randn(2, 3, 64, 64)
    colours = model.encode_images(images)["cell_colours"]
    assert colours.shape == (2, 3, 8, 8)
    for y, x in [(0, 0), (3, 5), (7, 7)]:  # literal block means
        block = images[:, :, 8 * y:8 * y + 8, 8 * x:8 * x + 8]
        assert torch.allclose(colours[:, :, y, x], block.mean((2, 3)), atol=1e-6)
    assert model.encoder.visual_proj.in_channels == 16 + 3
    assert "cell_colours" not in tiny_pbrec(cell_colours=False).encode_images(images)


def test_the_colour_of_a_cell_reaches_the_point_scores_even_when_the_backbone_is_blind(tiny_pbrec):
    """With the FPN features fixed, recolouring one cell still changes the point logits."""
    model = tiny_pbrec(cell_colours=True)
    images = torch.zeros(1, 3, 64, 64)
    features = model.encode_images(images)
    recoloured = dict(features, cell_colours=features["cell_colours"].clone())
    recoloured["cell_colours"][0, :, 2, 3] = torch.tensor([2.0, -1.0, 0.5])
    center, _ = model.point_logits(features, ["the red circle"])
    center2, _ = model.point_logits(recoloured, ["the red circle"])
    assert not torch.allclose(center, center2)
