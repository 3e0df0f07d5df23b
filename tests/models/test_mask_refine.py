import pytest
import torch

import groundkit.models.mask_refine as mask_refine
from groundkit.errors import ConfigError


def test_a_huge_image_is_refined_at_the_input_size(monkeypatch):
    """A 1,000 x 1,500 photo letterboxed to 64 px: the filter runs on the 43 x 64 input (its
    memory bounded by the input's), with the radius in input pixels, one guide for both masks, and
    the result comes back at the photo's size."""
    seen = []

    def spy(guide, src, radius, eps):
        seen.append((tuple(guide.shape), tuple(src.shape), radius))
        return src
    monkeypatch.setattr(mask_refine, "guided_filter", spy)
    out = mask_refine.refine_on_image(torch.rand(2, 1000, 1500), torch.randn(3, 64, 64),
                                      (42.7, 64.0), 3, 1e-4)
    assert seen == [((1, 3, 43, 64), (2, 43, 64), 3)]   # one guide, broadcast
    assert out.shape == (2, 1000, 1500)


def test_a_small_image_is_refined_at_its_own_size(monkeypatch):
    seen = []
    monkeypatch.setattr(mask_refine, "guided_filter",
                        lambda guide, src, radius, eps: seen.append((guide.shape, radius)) or src)
    probs = torch.rand(1, 32, 48)
    out = mask_refine.refine_on_image(probs, torch.randn(3, 64, 96), (64, 96), 4, 1e-4)
    assert seen == [((1, 3, 32, 48), 2)]                   # radius in the image's pixels
    assert torch.equal(out, probs)                        # nothing resized back


def test_no_masks_need_no_filtering():
    empty = torch.zeros(0, 10, 12)
    assert mask_refine.refine_on_image(empty, torch.randn(3, 16, 16), (10, 12), 2, 1e-4) is empty


def test_check_refinement():
    mask_refine.check_refinement("ppmn", 0, 1e-4)
    with pytest.raises(ConfigError, match="ppmn: refine_radius"):
        mask_refine.check_refinement("ppmn", -1, 1e-4)
    with pytest.raises(ConfigError, match="refine_eps"):
        mask_refine.check_refinement("ppmn", 2, 0.0)


def test_masks_are_filtered_a_bounded_number_of_pixels_at_a_time(monkeypatch):
    """Ten 16 x 16 masks with room for 4 x 256 pixels a call: calls of 4, 4 and 2 masks, each
    mask as filtered alone."""
    calls = []
    real = mask_refine.guided_filter

    def counting(guide, src, radius, eps):
        calls.append((len(guide), len(src)))
        return real(guide, src, radius, eps)
    monkeypatch.setattr(mask_refine, "guided_filter", counting)
    monkeypatch.setattr(mask_refine, "PIXELS_AT_ONCE", 4 * 256 + 100)
    g = torch.Generator().manual_seed(0)
    probs, image = torch.rand(10, 16, 16, generator=g), torch.randn(3, 16, 16, generator=g)
    out = mask_refine.refine_on_image(probs, image, (16, 16), 2, 1e-3)
    assert calls == [(1, 4), (1, 4), (1, 2)]            # one guide for the masks of a call
    guide = mask_refine.tensor_to_rgb(image)[None]
    for i in (0, 5, 9):
        torch.testing.assert_close(out[i], real(guide, probs[i:i + 1], 2, 1e-3)[0])
