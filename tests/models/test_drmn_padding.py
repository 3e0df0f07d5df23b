"""DRMN on batches of mixed image size: the padding is masked in the encoder, the positional codes
and the refinement (never a top-k pixel, never sampled), so what a real pixel gets does not depend
on what the padding holds; a batch without padding runs exactly as before."""
import pytest
import torch
from grounding_cases import CAPTION, SPANS
from grounding_cases import tiny_drmn as build

from groundkit.data.transforms import pad_batch, padding_mask
from groundkit.models.drmn import RefinementRound, level_padding
from groundkit.vision.deformable_encoder import flatten_levels


@pytest.fixture(scope="module")
def encoder(text_encoder):
    return text_encoder


def test_padding_mask_marks_the_cells_that_start_past_each_image():
    mask = padding_mask([(64, 64), (40, 50)], (16, 16), stride=4)
    assert mask.shape == (2, 16, 16) and not mask[0].any()
    # image 1: rows 0..9 (40 / 4) and columns 0..12 (50 / 4 = 12.5: the cut cell is image)
    expected = torch.ones(16, 16, dtype=torch.bool)
    expected[:10, :13] = False
    assert torch.equal(mask[1], expected)


def test_level_padding_is_the_stride_4_mask_read_at_each_levels_cells():
    padding = padding_mask([(64, 64), (40, 24)], (16, 16), stride=4)
    levels = [torch.zeros(2, 1, 16 // 2 ** i, 16 // 2 ** i) for i in range(4)]
    masks = level_padding(padding, levels)
    for level, mask in zip(levels, masks):
        stride = 64 // level.shape[-1]
        assert torch.equal(mask, padding_mask([(64, 64), (40, 24)], level.shape[-2:], stride))
    assert level_padding(padding_mask([(64, 64)] * 2, (16, 16), 4), levels) is None


def test_a_refinement_round_never_picks_or_reads_padding():
    torch.manual_seed(0)
    b, q, c, h, w = 2, 3, 8, 6, 6
    refine = RefinementRound(c, 4, heads=2, points=2, ffn_dim=16, dropout=0.0, levels=2,
                             pixel_update=True).eval()
    padding = padding_mask([(24, 24), (16, 12)], (h, w), stride=4)
    level_masks = [padding_mask([(24, 24), (16, 12)], (6 // 2 ** i, 6 // 2 ** i), 4 * 2 ** i)
                   for i in range(2)]
    queries, grid = torch.randn(b, q, c), torch.randn(b, c + 2, h, w)
    logits = torch.randn(b, q, h, w).masked_fill(padding[:, None], 10.0)  # padding looks best
    pixels = torch.randn(b, c, h, w)
    maps = [torch.randn(b, c, 6 // 2 ** i, 6 // 2 ** i) for i in range(2)]

    def run(pixels, maps):
        levels = flatten_levels(maps, masks=level_masks)
        return refine(queries, pixels, grid, logits, levels, padding=padding)

    noisy_pixels = torch.where(padding[:, None], torch.randn_like(pixels) * 100, pixels)
    noisy_maps = [torch.where(m[:, None], torch.randn_like(x) * 100, x)
                  for m, x in zip(level_masks, maps)]
    q1, logits1, pixels1 = run(pixels, maps)
    q2, logits2, pixels2 = run(noisy_pixels, noisy_maps)
    real = ~padding[:, None]
    assert torch.allclose(q1, q2, atol=1e-5)
    assert torch.allclose(logits1.masked_select(real), logits2.masked_select(real), atol=1e-4)
    # the padding was never selected, so the pixel update wrote nothing there
    assert torch.equal(pixels1.masked_select(~real), pixels.masked_select(~real))


def test_the_head_hands_the_padding_to_the_encoder_and_every_round(encoder, monkeypatch):
    """A batch of a 48 x 64 and a 64 x 64 image: the encoder, the positional codes and each
    refinement round get the padding of image 0's last 16 rows; a batch without padding runs
    exactly as without image sizes."""
    model = build(encoder, pixel_update=True).eval()
    seen = {"encoder": [], "rounds": []}
    encode_maps = model.head.encoder.encode_maps
    monkeypatch.setattr(model.head.encoder, "encode_maps",
                        lambda maps, codes, masks: seen["encoder"].append(masks)
                        or encode_maps(maps, codes, masks))
    for refine in model.head.rounds:
        forward = refine.forward
        monkeypatch.setattr(refine, "forward", lambda *args, _f=forward: seen["rounds"].append(
            (args[4].padding_mask, args[6])) or _f(*args))
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(3, 48, 64, generator=g), torch.randn(3, 64, 64, generator=g)]
    queries = model.encode_text([CAPTION] * 2, [SPANS] * 2)
    with torch.no_grad():
        model.head(model.encode_images(pad_batch(images), [(48, 64), (64, 64)]), queries.features)
    assert len(seen["encoder"][0]) == 4  # P2..P5, each with its own padding mask
    for masks in seen["encoder"][0]:
        stride = 64 // masks.shape[-1]
        assert torch.equal(masks, padding_mask([(48, 64), (64, 64)], masks.shape[-2:], stride))
    assert len(seen["rounds"]) == len(model.head.rounds) == 2
    for memory_mask, grid_mask in seen["rounds"]:
        assert memory_mask.any() and torch.equal(grid_mask, padding_mask(
            [(48, 64), (64, 64)], grid_mask.shape[-2:], 64 // grid_mask.shape[-1]))

    with torch.no_grad():
        unpadded = model.encode_images(pad_batch(images[1:]), [(64, 64)])
        assert "padding" in unpadded and not unpadded["padding"].any()
        plain = model.encode_images(pad_batch(images[1:]))
        assert torch.equal(model.head(unpadded, queries.features[1:])[-1],
                           model.head(plain, queries.features[1:])[-1])
