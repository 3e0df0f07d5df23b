import numpy as np
import torch

from groundkit.data.transforms import image_to_tensor, tensor_to_rgb


def test_tensor_to_rgb_undoes_the_normalisation():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x = image_to_tensor(rgb, (5, 7))
    assert x.abs().max() > 1.5                               # normalised: the test can tell
    back = tensor_to_rgb(x)
    assert back.shape == (3, 5, 7)
    np.testing.assert_allclose(back.permute(1, 2, 0).numpy() * 255, rgb, atol=1e-3)
    batch = tensor_to_rgb(torch.stack([x, x]))               # (B, 3, h, w) too
    torch.testing.assert_close(batch[1], back)
    assert tensor_to_rgb(torch.full((3, 2, 2), 99.0)).max() == 1.0     # clamped to [0, 1]
