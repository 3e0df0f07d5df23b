import numpy as np
import pytest
import torch

from groundkit.ops.guided_filter import box_mean, guided_filter


def literal_guided_filter(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> np.ndarray:
    """He et al.'s Algorithm, window by window: ``guide (C, H, W)``, ``src (H, W)``."""
    c, h, w = guide.shape
    a = np.zeros((h, w, c))
    b = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            ys, xs = slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1)
            pixels = guide[:, ys, xs].reshape(c, -1)            # (C, n)
            values = src[ys, xs].reshape(-1)
            mu, p_bar = pixels.mean(1), values.mean()
            sigma = np.cov(pixels, bias=True).reshape(c, c)
            a[y, x] = np.linalg.solve(sigma + eps * np.eye(c), pixels @ values / len(values) - mu * p_bar)
            b[y, x] = p_bar - a[y, x] @ mu
    q = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            ys, xs = slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1)
            q[y, x] = a[ys, xs].reshape(-1, c).mean(0) @ guide[:, y, x] + b[ys, xs].mean()
    return q


@pytest.mark.parametrize("channels, radius, eps", [(3, 1, 1e-2), (3, 2, 1e-3), (1, 3, 1e-1)])
def test_matches_the_window_by_window_algorithm(channels, radius, eps):
    g = torch.Generator().manual_seed(channels + radius)
    guide = torch.rand(2, channels, 7, 9, generator=g, dtype=torch.float64)
    src = torch.rand(2, 7, 9, generator=g, dtype=torch.float64)
    out = guided_filter(guide, src, radius, eps)
    assert out.shape == (2, 7, 9) and out.dtype == torch.float64
    for i in range(2):
        expected = literal_guided_filter(guide[i].numpy(), src[i].numpy(), radius, eps)
        np.testing.assert_allclose(out[i].numpy(), expected, atol=1e-5)


def test_keeps_a_map_that_is_linear_in_the_guide():
    guide = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    src = 0.3 * guide[:, 0] - 0.2 * guide[:, 1] + 0.5
    torch.testing.assert_close(guided_filter(guide, src, 2, 1e-6), src, atol=2e-3, rtol=0)


def test_a_flat_guide_gives_the_box_mean_of_the_box_mean():
    src = torch.rand(1, 9, 9, generator=torch.Generator().manual_seed(1))
    out = guided_filter(torch.full((1, 3, 9, 9), 0.4), src, 1, 1e-3)
    torch.testing.assert_close(out, box_mean(box_mean(src[:, None], 1), 1)[:, 0])


def test_a_blurred_mask_snaps_to_the_guide_edge():
    step = torch.zeros(1, 16, 16)
    step[..., 8:] = 1.0                                          # the object: the right half
    guide = torch.stack([step, 1 - step, 0.5 * step], dim=1)     # its colours differ from the rest
    blurred = box_mean(box_mean(step[:, None], 2), 2)[:, 0]      # a coarse map's soft ramp
    blurred = torch.roll(blurred, 1, dims=-1)                    # one pixel off
    out = guided_filter(guide, blurred, 3, 1e-4)
    assert ((blurred > 0.5) != (step > 0.5)).any()
    assert torch.equal(out > 0.5, step > 0.5)
    assert (out - step).abs().max() < (blurred - step).abs().max()


def test_each_item_is_filtered_alone():
    g = torch.Generator().manual_seed(2)
    guide, src = torch.rand(3, 3, 8, 8, generator=g), torch.rand(3, 8, 8, generator=g)
    together = guided_filter(guide, src, 2, 1e-3)
    for i in range(3):
        torch.testing.assert_close(together[i:i + 1], guided_filter(guide[i:i + 1], src[i:i + 1], 2, 1e-3))


@pytest.mark.parametrize("channels", [3, 1])
def test_one_guide_serves_every_map_as_its_copies_would(channels):
    g = torch.Generator().manual_seed(5)
    guide, src = torch.rand(1, channels, 9, 7, generator=g), torch.rand(4, 9, 7, generator=g)
    torch.testing.assert_close(guided_filter(guide, src, 2, 1e-3),
                               guided_filter(guide.expand(4, -1, -1, -1), src, 2, 1e-3))


def test_gradients_reach_the_map_and_the_guide():
    g = torch.Generator().manual_seed(3)
    guide = torch.rand(1, 3, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    src = torch.rand(1, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda i, p: guided_filter(i, p, 1, 1e-2), (guide, src))


def test_keeps_the_dtype_of_the_map():
    out = guided_filter(torch.rand(1, 3, 6, 6), torch.rand(1, 6, 6).half(), 1, 1e-3)
    assert out.dtype == torch.float16


@pytest.mark.parametrize("guide, src, radius, eps", [
    (torch.rand(1, 3, 6, 6), torch.rand(1, 6, 5), 1, 1e-3),      # sizes differ
    (torch.rand(3, 6, 6), torch.rand(1, 6, 6), 1, 1e-3),         # guide without its batch
    (torch.rand(2, 3, 6, 6), torch.rand(1, 6, 6), 1, 1e-3),      # batches differ
    (torch.rand(1, 3, 6, 6), torch.rand(1, 6, 6), 0, 1e-3),      # no window
    (torch.rand(1, 3, 6, 6), torch.rand(1, 6, 6), 1, 0.0),       # no ridge: singular on flat patches
])
def test_bad_arguments_are_refused(guide, src, radius, eps):
    with pytest.raises(ValueError, match="guided_filter"):
        guided_filter(guide, src, radius, eps)


def test_solve_per_pixel_matches_lapack():
    from groundkit.ops.guided_filter import solve_per_pixel
    g = torch.Generator().manual_seed(4)
    m = torch.rand(2, 3, 3, 4, 5, generator=g, dtype=torch.float64)
    m = m + m.transpose(1, 2) + 3 * torch.eye(3, dtype=torch.float64)[None, :, :, None, None]
    rhs = torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64)
    expected = torch.linalg.solve(m.permute(0, 3, 4, 1, 2), rhs.permute(0, 2, 3, 1)[..., None])
    torch.testing.assert_close(solve_per_pixel(m, rhs), expected[..., 0].permute(0, 3, 1, 2))


def test_a_nearly_singular_colour_covariance_is_solved_accurately_from_float32_pixels():
    """Grey noise on a white shape moves R, G and B together: the windows' 3 x 3 covariance has
    eigenvalues like 0.14, 1e-5 and 1.6e-7, held up by eps alone. Computed in float32 the result
    was 0.016 off the literal float64 algorithm here (a hole in a real mask); now 1e-5 at most."""
    g = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))[0]
    spread = torch.tensor([0.37, 3e-3, 4e-4], dtype=torch.float64)        # standard deviations
    z = torch.randn(3, 24, 24, generator=g, dtype=torch.float64)
    guide = 0.6 + torch.einsum("ck,k,khw->chw", u, spread, z)
    src = (z[0] > 0).double() * 0.9 + 0.05
    out = guided_filter(guide[None].float(), src[None].float(), 6, 1e-5)
    assert out.dtype == torch.float32
    expected = literal_guided_filter(guide.numpy(), src.numpy(), 6, 1e-5)
    np.testing.assert_allclose(out[0].double().numpy(), expected, atol=1e-5)
