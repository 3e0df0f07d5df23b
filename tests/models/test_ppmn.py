"""PPMN: LCPA pieces against literal loops, losses on every round, checkpoints without the encoder."""
import numpy as np
import pytest
import torch
from grounding_cases import tiny_batch

from groundkit.engine.checkpoint import load_checkpoint, save_checkpoint
from groundkit.errors import ConfigError, InputError
from groundkit.models.grounding import phrase_probabilities, pool_phrases, postprocess_grounding
from groundkit.models.ppmn import PPMNConfig, gather_top_pixels, matching_logits
from groundkit.vision.backbone import BackboneConfig


@pytest.fixture(scope="module")
def encoder(text_encoder):
    return text_encoder  # the session's bundled encoder (tests/conftest.py), loaded once


def tiny_config(**kw):
    base = dict(backbone=BackboneConfig(depth=18, base_width=8, fpn_channels=16, norm="gn"),
                neck_channels=16, hidden_dim=16, rounds=2, top_pixels=5, heads=2, ffn_dim=32)
    return PPMNConfig(**{**base, **kw})


def test_gather_top_pixels_matches_literal_loop():
    g = torch.Generator().manual_seed(1)
    logits, pixels = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 6, 4, 5, generator=g)
    got = gather_top_pixels(logits, pixels, k=4)
    for b in range(2):
        for q in range(3):
            order = sorted(range(20), key=lambda i: -float(logits[b, q].flatten()[i]))[:4]
            want = torch.stack([pixels[b, :, i // 5, i % 5] for i in order])
            assert torch.equal(got[b, q], want)


def test_matching_logits_is_a_dot_product():
    k, p = torch.randn(1, 2, 3), torch.randn(1, 3, 2, 2)
    assert torch.allclose(matching_logits(k, p)[0, 1, 1, 0], (k[0, 1] * p[0, :, 1, 0]).sum())


def test_phrase_probabilities_average_word_pieces():
    probs = torch.rand(1, 4, 2, 2)
    phrase = torch.tensor([[0, 0, 1, -1]])
    out = phrase_probabilities(probs, phrase, [2])[0]
    assert torch.allclose(out[0], probs[0, :2].mean(0))
    assert torch.allclose(out[1], probs[0, 2])


def test_postprocess_crops_padding_and_resizes():
    probs = torch.zeros(1, 8, 8)
    probs[0, :4, :4] = 1.0  # the valid region of an input of 16 x 16 padded to 32 x 32
    masks, scores = postprocess_grounding(probs, (16, 16), (20, 20))
    assert masks.shape == (1, 20, 20) and masks.all() and scores[0] == pytest.approx(1.0)


@pytest.mark.parametrize("top_pixels", [5, 0])
def test_train_step_supervises_every_round_and_backpropagates(encoder, top_pixels):
    model = build_ppmn_with(encoder, top_pixels=top_pixels)
    model.train()
    losses = model(tiny_batch())
    assert {"bce_0", "dice_0", "bce_2", "dice_2"} <= set(losses)
    losses["loss"].backward()
    assert model.head.rounds[-1].kernel_mlp[-1].weight.grad.abs().sum() > 0
    assert model.backbone.body.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.text_encoder.parameters())
    attention_grad = model.head.rounds[0].attention.in_proj_weight.grad
    assert (attention_grad is not None and attention_grad.abs().sum() > 0) == (top_pixels > 0)


def test_eval_returns_one_map_per_phrase(encoder):
    model = build_ppmn_with(encoder).eval()
    with torch.no_grad():
        out = model.predict_maps(tiny_batch(b=1))
    assert len(out) == 1 and out[0].shape == (2, 16, 16)
    assert 0 <= out[0].min() and out[0].max() <= 1


def test_predict_round_selects_which_rounds_maps_are_returned(encoder):
    model = build_ppmn_with(encoder).eval()
    batch = tiny_batch(b=1)
    with torch.no_grad():
        features = model.encode_images(batch["images"])
        rounds = model.round_logits(features, model.encode_text(batch["captions"], batch["spans"]))
        last = model.predict_maps(batch)[0]
        model.predict_round = 0
        first = model.predict_maps(batch)[0]
    assert torch.allclose(first, rounds[0][0].sigmoid()) and torch.allclose(last, rounds[-1][0].sigmoid())
    assert not torch.allclose(first, last)


@pytest.mark.parametrize("query, limit", [("word_piece", 3), ("phrase", 1)])
def test_too_many_queries_is_a_clear_error(encoder, query, limit):
    model = build_ppmn_with(encoder, query=query, max_queries=limit).eval()
    with pytest.raises(InputError, match="max_queries"):
        model(tiny_batch(b=1))


def dots(words: int) -> tuple[str, list[tuple[int, int]]]:
    """A caption of ``words`` times "dot" (one word piece each) and the span of every word."""
    return " ".join(["dot"] * words), [(4 * i, 4 * i + 3) for i in range(words)]


@pytest.mark.parametrize("query", ["phrase", "word_piece"])
def test_the_papers_30_phrases_per_caption_is_a_clear_error_past_it(encoder, query):
    from dataclasses import replace

    model = build_ppmn_with(encoder, query=query, max_queries=1000).eval()
    caption, spans = dots(31)
    assert model.cfg.max_phrases == 30
    queries = model.encode_text([caption], [spans[:30]])
    assert queries.phrase.max().item() == 29                  # every phrase kept, in order
    with pytest.raises(InputError, match="31 phrases.*max_phrases"):
        model.encode_text([caption], [spans])
    model.cfg = replace(model.cfg, max_phrases=None)          # lifted: all 31, none cut off
    assert model.encode_text([caption], [spans]).phrase.max().item() == 30


def test_the_papers_230_word_pieces_per_caption_is_a_clear_error_past_it(encoder):
    from dataclasses import replace

    model = build_ppmn_with(encoder).eval()
    assert model.cfg.max_word_pieces == 230
    caption, spans = dots(228)                                # + [CLS] and [SEP] = 230
    assert len(model.encode_text([caption], [spans[-1:]]).phrase[0]) == 1
    caption, spans = dots(229)
    with pytest.raises(InputError, match="231 word pieces.*max_word_pieces"):
        model.encode_text([caption], [spans[-1:]])            # the phrase past the cut: no silent loss
    model.cfg = replace(model.cfg, max_word_pieces=None)
    assert len(model.encode_text([caption], [spans[-1:]]).phrase[0]) == 1


def test_pool_phrases_averages_word_pieces_per_phrase():
    features = torch.arange(12.0).reshape(1, 4, 3)
    pooled, index = pool_phrases(features, torch.tensor([[0, 0, 1, -1]]), [2])
    assert torch.equal(pooled[0, 0], features[0, :2].mean(0))
    assert torch.equal(pooled[0, 1], features[0, 2]) and index.tolist() == [[0, 1]]


@pytest.mark.parametrize("query", ["phrase", "word_piece"])
def test_both_query_modes_train_and_predict(encoder, query):
    model = build_ppmn_with(encoder, query=query)
    model(tiny_batch())["loss"].backward()
    with torch.no_grad():
        assert model.eval().predict_maps(tiny_batch(b=1))[0].shape == (2, 16, 16)


def test_checkpoint_leaves_out_the_frozen_encoder(encoder, tmp_path):
    model = build_ppmn_with(encoder)
    path = save_checkpoint(tmp_path, model, {}, "ppmn")
    state, _ = load_checkpoint(path)
    assert not any(k.startswith("text_encoder.") for k in state)
    fresh = build_ppmn_with(encoder, seed=1)
    fresh.load_state_dict(state, strict=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 fresh.state_dict().values()))


def build_ppmn_with(encoder, seed=0, **kw):
    torch.manual_seed(seed)
    from groundkit.models.ppmn import build_ppmn
    return build_ppmn(tiny_config(**kw), text_encoder=encoder)


def test_semantic_auxiliary_loss_is_cross_entropy_of_the_category_map(encoder):
    model = build_ppmn_with(encoder, semantic_classes=3, semantic_weight=0.5, neck_stride=4)
    model.train()
    batch = tiny_batch()
    labels = torch.randint(0, 3, (2, 16, 16), generator=torch.Generator().manual_seed(2))
    labels[:, :4] = 255  # ignored cells
    batch["semantic"] = labels
    losses = model(batch)
    logits = model.semantic_head(model.encode_images(batch["images"])["neck"])
    probs = logits.softmax(1)
    picked = [probs[b, labels[b, y, x], y, x] for b in range(2) for y in range(4, 16) for x in range(16)]
    want = -torch.stack(picked).log().mean()
    assert losses["semantic"].item() == pytest.approx(0.5 * want.item(), rel=1e-5)
    assert losses["loss"].item() == pytest.approx(
        sum(v.item() for k, v in losses.items() if k != "loss"), rel=1e-5)
    losses["loss"].backward()
    assert model.semantic_head.weight.grad.abs().sum() > 0


def test_semantic_loss_needs_labels_and_survives_an_all_ignored_batch(encoder):
    model = build_ppmn_with(encoder, semantic_classes=3).train()
    with pytest.raises(InputError, match="semantic=True"):
        model(tiny_batch())
    batch = {**tiny_batch(), "semantic": torch.full((2, 16, 16), 255)}
    assert model(batch)["semantic"].item() == 0.0


def test_without_semantic_classes_there_is_no_semantic_head(encoder):
    model = build_ppmn_with(encoder).train()
    assert model.semantic_head is None and "semantic" not in model(tiny_batch())


@pytest.mark.parametrize("pixel_coords", [False, True])
def test_pixel_coords_make_position_visible_to_the_matching(pixel_coords):
    from groundkit.models.ppmn import PPMNHead
    torch.manual_seed(0)
    head = PPMNHead(tiny_config(pixel_coords=pixel_coords))
    uniform = {"neck": torch.ones(1, 16, 6, 8)}  # the same feature at every pixel
    logits = head(uniform, torch.randn(1, 2, 16))[0]
    varies = (logits - logits[..., :1, :1]).abs().amax() > 1e-4
    assert bool(varies) == pixel_coords


def red_square_on_blue() -> tuple[np.ndarray, np.ndarray]:
    """A 64 x 64 picture (uint8) and its square (rows and columns 16-31) as a bool mask."""
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[...] = (30, 30, 200)
    rgb[16:32, 16:32] = (200, 30, 30)
    return rgb, rgb[..., 0] == 200


def test_postprocess_refines_the_masks_on_the_image(encoder, monkeypatch):
    """A phrase's stride-4 map covers 4 x 4 cells, the picture a red square of exactly those
    pixels: resized, the mask loses the square's 4 corner pixels; refined on the image
    (``refine_radius``) it is the square, through ``predict`` and ``Grounder.ground`` alike."""
    from groundkit.api import Grounder
    from groundkit.data.transforms import ResizeConfig, image_to_tensor
    rgb, square = red_square_on_blue()
    probs = torch.full((1, 16, 16), 0.05)
    probs[0, 4:8, 4:8] = 0.95
    model = build_ppmn_with(encoder, refine_radius=2, refine_eps=1e-4).eval()
    args = ([probs], ["a square"], [[(0, 8)]], [(64, 64)], [(64, 64)])
    refined = model.postprocess(*args, images=image_to_tensor(rgb, (64, 64))[None])[0].masks[0]
    with pytest.raises(ValueError, match="refine_radius needs the input images"):
        model.postprocess(*args)
    monkeypatch.setattr(model, "phrase_maps", lambda features, captions, spans: [probs])
    grounder = Grounder(model, ResizeConfig(short_side=64, max_size=64), device="cpu")
    grounder.set_image(rgb)
    through_api = grounder.ground("[a square]").masks[0]
    model.cfg.refine_radius = 0
    coarse = model.postprocess(*args)[0].masks[0]
    assert (coarse != square).sum() == 4                   # the corners: the test can tell
    assert (refined == square).all() and (through_api == square).all()


def test_bad_refinement_is_refused():
    with pytest.raises(ConfigError, match="grounding: refine_radius"):
        tiny_config(refine_radius=-1)
    from groundkit.models.drmn import DRMNConfig
    with pytest.raises(ConfigError, match="refine_eps"):
        DRMNConfig(refine_radius=2, refine_eps=0.0)
