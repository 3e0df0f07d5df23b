"""DRMN's pixel half of the alternating update (Alg. 1 lines 21-22, 25; Eq. 13, 26): the re-encoded
top-k pixels replace their features, order-free (a pixel picked by several queries gets their mean),
padding queries write nothing; with the option off the head is the one the bundle was trained with.
Also the two other paper options: the positional code in the selected pixels, the loss on the
refinement rounds only."""
import numpy as np
import pytest
import torch
from grounding_cases import CAPTION, OTHER_CAPTION, OTHER_SPANS, SPANS, tiny_batch
from grounding_cases import tiny_drmn as build

from groundkit.errors import ConfigError
from groundkit.models.drmn import DRMNConfig, RefinementRound, scatter_mean_pixels
from groundkit.vision.deformable_encoder import flatten_levels


def round_inputs(seed=3, b=2, q=3, c=8, h=4, w=5):
    torch.manual_seed(seed)
    queries, pixels = torch.randn(b, q, c), torch.randn(b, c, h, w)
    grid, logits = torch.randn(b, c + 2, h, w), torch.randn(b, q, h, w)
    levels = flatten_levels([torch.randn(b, c, 8 // 2 ** i, 8 // 2 ** i) for i in range(4)])
    return queries, pixels, grid, logits, levels


def literal_scatter_mean(pixels, index, values, valid):
    """One pixel and one query at a time: the mean of what the valid queries that picked it wrote."""
    out = pixels.clone()
    b, c, h, w = pixels.shape
    for i in range(b):
        for pixel in range(h * w):
            written = [values[i, q, j] for q in range(index.shape[1]) if valid[i, q]
                       for j in range(index.shape[2]) if index[i, q, j] == pixel]
            if written:
                out[i, :, pixel // w, pixel % w] = torch.stack(written).mean(0)
    return out


# --- the scatter ----------------------------------------------------------------------------------

def test_scatter_mean_matches_a_literal_loop_over_pixels():
    g = torch.Generator().manual_seed(0)
    pixels, values = torch.randn(2, 3, 3, 4, generator=g), torch.randn(2, 4, 5, 3, generator=g)
    index = torch.stack([torch.randperm(12, generator=g)[:5] for _ in range(8)]).reshape(2, 4, 5)
    valid = torch.tensor([[True, True, False, True], [True, False, True, True]])
    got = scatter_mean_pixels(pixels, index, values, valid)
    assert torch.allclose(got, literal_scatter_mean(pixels, index, values, valid), atol=1e-6)
    everyone = torch.ones_like(valid)
    assert torch.allclose(scatter_mean_pixels(pixels, index, values),
                          literal_scatter_mean(pixels, index, values, everyone), atol=1e-6)


def test_two_queries_picking_the_same_pixel_average_and_the_rest_is_kept():
    pixels = torch.zeros(1, 2, 2, 2)
    index = torch.tensor([[[0, 3], [0, 1]]])                             # both pick pixel 0
    values = torch.tensor([[[[2.0, 4.0], [1.0, 1.0]], [[6.0, 0.0], [5.0, 5.0]]]])
    got = scatter_mean_pixels(pixels, index, values)
    assert got[0, :, 0, 0].tolist() == [4.0, 2.0]                        # (2+6)/2, (4+0)/2
    assert got[0, :, 0, 1].tolist() == [5.0, 5.0] and got[0, :, 1, 1].tolist() == [1.0, 1.0]
    assert got[0, :, 1, 0].tolist() == [0.0, 0.0]                        # nobody picked it


def test_a_padding_query_writes_nothing():
    pixels, index = torch.zeros(1, 2, 2, 2), torch.tensor([[[0, 3], [0, 1]]])
    values = torch.randn(1, 2, 2, 2)
    alone = scatter_mean_pixels(pixels, index[:, :1], values[:, :1])
    padded = scatter_mean_pixels(pixels, index, values, torch.tensor([[True, False]]))
    assert torch.equal(alone, padded)


# --- one refinement round -------------------------------------------------------------------------

def literal_round(refine, queries, pixels, grid, logits, levels, pixel_pos=False):
    """Alg. 1 lines 18-25 for each query on its own, then every pixel update applied at once."""
    b, q, c = queries.shape
    h, w = pixels.shape[-2:]
    k = refine.top_k
    new_queries, tops, encodings = torch.empty_like(queries), torch.empty(b, q, k, dtype=torch.long), []
    for i in range(b):
        for j in range(q):
            scores = logits[i, j].flatten().tolist()
            top = sorted(range(h * w), key=lambda p: -scores[p])[:k]
            tops[i, j] = torch.tensor(top)
            pos = grid[i, :c].flatten(1)[:, top].T
            centre = grid[i, c:].flatten(1)[:, top].T
            feats = pixels[i].flatten(1)[:, top].T + queries[i, j]                  # line 21
            if pixel_pos:
                feats, pos = feats + pos, None
            encoded = refine.reencode(feats[None], None if pos is None else pos[None], centre[None],
                                      levels.spatial_shapes, levels.level_start_index,
                                      memory=levels.src[i:i + 1])[0]                # line 22
            encodings.append(encoded)
            attended = refine.cross_attn(queries[i, j][None, None], encoded[None], encoded[None])[0]
            new_queries[i, j] = refine.ffn(refine.norm(2 * queries[i, j] + attended[0, 0]))
    encodings = torch.stack(encodings).reshape(b, q, k, c)
    new_pixels = literal_scatter_mean(pixels, tops, encodings, torch.ones(b, q, dtype=torch.bool))
    return new_queries, torch.einsum("bqc,bchw->bqhw", new_queries, new_pixels), new_pixels


@pytest.mark.parametrize("pixel_pos", [False, True])
def test_round_with_pixel_update_matches_a_literal_reference(pixel_pos):
    queries, pixels, grid, logits, levels = round_inputs()
    refine = RefinementRound(8, 3, heads=2, points=2, ffn_dim=16, dropout=0.0,
                             pixel_update=True, pixel_pos=pixel_pos).eval()
    with torch.no_grad():
        got = refine(queries, pixels, grid, logits, levels)
        want = literal_round(refine, queries, pixels, grid, logits, levels, pixel_pos)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-5)
    changed = (got[2] != pixels).any(1)                                     # (B, h, w)
    assert changed.any() and not changed.all()                              # the top-k, not the rest


def test_the_update_changes_what_the_next_round_matches_and_picks():
    queries, pixels, grid, logits, levels = round_inputs()
    first = RefinementRound(8, 3, 2, 2, 16, 0.0, pixel_update=True).eval()
    second = RefinementRound(8, 3, 2, 2, 16, 0.0, pixel_update=True).eval()
    with torch.no_grad():
        q1, l1, p1 = first(queries, pixels, grid, logits, levels)
        _, l2, p2 = second(q1, p1, grid, l1, levels)
        _, l2_old, p2_old = second(q1, pixels, grid, torch.einsum("bqc,bchw->bqhw", q1, pixels),
                                   levels)
    assert not torch.allclose(l1, torch.einsum("bqc,bchw->bqhw", q1, pixels))
    assert not torch.allclose(l2, l2_old) and not torch.allclose(p2, p2_old)


def test_without_pixel_update_the_round_returns_the_map_it_was_given():
    queries, pixels, grid, logits, levels = round_inputs()
    refine = RefinementRound(8, 3, 2, 2, 16, 0.0).eval()
    with torch.no_grad():
        _, got_logits, got_pixels = refine(queries, pixels, grid, logits, levels)
    assert got_pixels is pixels


def test_gradients_flow_through_the_written_pixels():
    queries, pixels, grid, logits, levels = round_inputs()
    pixels.requires_grad_(True)
    refine = RefinementRound(8, 3, 2, 2, 16, 0.0, pixel_update=True).train()
    _, _, new_pixels = refine(queries, pixels, grid, logits, levels)
    new_pixels.pow(2).sum().backward()
    assert refine.reencode.self_attn.sampling_offsets.weight.grad.abs().sum() > 0
    assert refine.reencode.norm2.weight.grad.abs().sum() > 0
    assert pixels.grad.abs().sum() > 0   # kept pixels directly, written ones through the encoding


# --- the model ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def encoder(text_encoder):
    return text_encoder


@pytest.mark.parametrize("pixel_update", [False, True])
def test_an_image_does_not_depend_on_the_padding_queries_of_its_batch(encoder, pixel_update):
    model = build(encoder, pixel_update=pixel_update).eval()
    batch = tiny_batch(b=2)
    batch["captions"][1], batch["spans"][1] = OTHER_CAPTION, OTHER_SPANS  # item 0 gets a padding query
    with torch.no_grad():
        together = model.predict_maps(batch)
        alone = model.predict_maps({k: v[:1] for k, v in batch.items()})
    assert torch.allclose(together[0], alone[0], atol=1e-6)


def test_head_outputs_of_real_queries_ignore_padding_queries(encoder):
    model = build(encoder, pixel_update=True).eval()
    features = model.encode_images(tiny_batch(b=1)["images"])
    queries = model.encode_text([CAPTION], [SPANS]).features              # (1, 2, C)
    padded = torch.cat([queries, torch.randn(1, 3, queries.shape[-1])], 1)
    valid = torch.tensor([[True, True, False, False, False]])
    with torch.no_grad():
        alone = model.head(features, queries)
        with_padding = model.head(features, padded, valid)
        unmasked = model.head(features, padded)                           # padding written: differs
    assert all(torch.allclose(a, b[:, :2], atol=1e-6) for a, b in zip(alone, with_padding))
    assert not torch.allclose(alone[-1], unmasked[-1][:, :2])


@pytest.mark.parametrize("pixel_pos", [False, True])
def test_train_step_with_pixel_update_reaches_every_stage(encoder, pixel_pos):
    model = build(encoder, pixel_update=True, pixel_pos=pixel_pos).train()
    model(tiny_batch())["loss"].backward()
    for refine in model.head.rounds:
        assert refine.reencode.self_attn.sampling_offsets.weight.grad.abs().sum() > 0
        assert refine.cross_attn.in_proj_weight.grad.abs().sum() > 0
    assert model.head.encoder.layers[0].self_attn.sampling_offsets.weight.grad.abs().sum() > 0
    assert model.backbone.body.conv1.weight.grad.abs().sum() > 0


def test_loss_on_the_refinement_rounds_only(encoder):
    batch = tiny_batch()
    every = build(encoder).train()(batch)
    refined = build(encoder, loss_rounds="refined").train()(batch)
    assert {"bce_0", "dice_0"} <= set(every) and not {"bce_0", "dice_0"} & set(refined)
    assert {f"{n}_{r}" for n in ("bce", "dice") for r in (1, 2)} <= set(refined)
    assert torch.allclose(refined["loss"], every["loss"] - every["bce_0"] - every["dice_0"])
    with pytest.raises(ConfigError, match="loss_rounds"):
        DRMNConfig(refine_rounds=0, loss_rounds="refined")


# --- the bundled checkpoint keeps its behaviour ---------------------------------------------------

def test_the_bundled_checkpoint_predicts_as_before_the_pixel_update():
    from groundkit.api import Grounder
    from groundkit.data.synthetic.language import make_narrative
    from groundkit.data.synthetic.scene import make_scene

    # the inference of that time (the bundle now refines its masks and thresholds at 0.35)
    grounder = Grounder.from_pretrained("drmn-synthetic", refine_radius=0, threshold=0.5)
    assert grounder.model.cfg.pixel_update is False and grounder.model.cfg.pixel_pos is False
    assert grounder.model.cfg.loss_rounds == "all"
    rng = np.random.default_rng(5)
    scene = make_scene(rng, 128)
    narrative = make_narrative(scene, 0, rng)
    grounder.set_image(scene.image)
    result = grounder.ground(narrative.caption, [u.span for _, u in narrative.grounded()],
                             return_logits=True)
    # measured with the code before the pixel update existed (commit 5802885), one thread
    assert np.allclose([p.mean() for p in result["probs"]],
                       [0.0824201, 0.4807893, 0.0306154, 0.2491834], atol=2e-6)
    assert [int(m.sum()) for m in result["masks"]] == [1150, 7891, 401, 4112]
