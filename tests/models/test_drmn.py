"""DRMN: round shapes and losses, gradients to every stage, the batched refinement against a literal
per-query loop, independence of queries, the T = 0 ablation, checkpoints through the registry; each
on the paper's stride-8 matching grid and, where the grid matters, on the stride-4 one."""
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from grounding_cases import OTHER_CAPTION, OTHER_SPANS, tiny_batch

from groundkit.config import config_to_dict, load_config
from groundkit.engine.checkpoint import save_checkpoint
from groundkit.engine.grounding import DRMNExperiment, GroundingTask, PPMNExperiment
from groundkit.engine.tasks import place_for_inference
from groundkit.errors import ConfigError
from groundkit.models.drmn import DRMNConfig, RefinementRound, build_drmn
from groundkit.models.grounding import GroundingModel
from groundkit.vision.backbone import BackboneConfig
from groundkit.vision.deformable_encoder import flatten_levels

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def encoder(text_encoder):
    return text_encoder  # the session's bundled encoder (tests/conftest.py), loaded once


def tiny_config(**kw) -> DRMNConfig:
    base = dict(backbone=BackboneConfig(depth=18, base_width=8, fpn_channels=16, norm="gn"),
                neck_channels=16, hidden_dim=16, encoder_layers=1, refine_rounds=2, top_k=5,
                heads=2, points=2, ffn_dim=32, dropout=0.0)
    return DRMNConfig(**{**base, **kw})


def build(encoder, seed=0, **kw) -> GroundingModel:
    torch.manual_seed(seed)
    cfg = tiny_config(**kw)
    return build_drmn(cfg, text_encoder=encoder)


def tiny_model_features(encoder):
    return build(encoder).encode_images(tiny_batch()["images"])


def head_outputs(model, batch):
    features = model.encode_images(batch["images"])
    queries = model.encode_text(batch["captions"], batch["spans"])
    return model.head(features, queries.features), queries


@pytest.mark.parametrize("rounds, stride", [(0, 8), (2, 8), (2, 4)])
def test_every_round_is_a_map_per_query_on_the_matching_grid(encoder, rounds, stride):
    model = build(encoder, refine_rounds=rounds, neck_stride=stride).eval()
    with torch.no_grad():
        outputs, queries = head_outputs(model, tiny_batch(size=96))
    assert len(outputs) == rounds + 1
    side = 96 // stride
    assert all(o.shape == (2, queries.features.shape[1], side, side) for o in outputs)


def test_stride_4_logits_reach_the_loss_unresized(encoder):
    model = build(encoder, neck_stride=4).eval()
    batch = tiny_batch()
    with torch.no_grad():
        outputs, queries = head_outputs(model, batch)
        rounds = model.round_logits(model.encode_images(batch["images"]), queries)
    assert all(torch.equal(a, b) for a, b in zip(outputs, rounds))


@pytest.mark.parametrize("encoder_layers, stride, encoder_levels", [(1, 8, 4), (0, 8, 4), (1, 4, 4),
                                                                   (1, 4, 3)])
def test_train_step_supervises_every_round_and_reaches_every_stage(encoder, encoder_layers, stride,
                                                                   encoder_levels):
    model = build(encoder, encoder_layers=encoder_layers, neck_stride=stride,
                  encoder_levels=encoder_levels).train()
    losses = model(tiny_batch())
    assert {f"{n}_{r}" for n in ("bce", "dice") for r in range(3)} < set(losses)
    assert torch.isclose(losses["loss"], sum(v for k, v in losses.items() if k != "loss"))
    losses["loss"].backward()
    head = model.head
    assert (head.encoder is None) == (encoder_layers == 0)
    if head.encoder is not None:
        assert head.encoder.layers[0].self_attn.sampling_offsets.weight.grad.abs().sum() > 0
    for refine in head.rounds:
        assert refine.reencode.self_attn.sampling_offsets.weight.grad.abs().sum() > 0
        assert refine.cross_attn.in_proj_weight.grad.abs().sum() > 0
    assert all(proj[0].weight.grad.abs().sum() > 0 for proj in head.input_proj)
    assert model.backbone.body.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.text_encoder.parameters())


@pytest.mark.parametrize("stride", [8, 4])
def test_neck_fusion_add_trains_the_neck(encoder, stride):
    model = build(encoder, neck_fusion="add", neck_stride=stride).train()
    model(tiny_batch())["loss"].backward()
    assert model.head.neck_proj.weight.grad.abs().sum() > 0
    assert model.neck.head[0].weight.grad.abs().sum() > 0
    assert build(encoder).head.neck_proj is None


def test_without_neck_fusion_no_neck_is_built(encoder):
    model = build(encoder)
    assert model.neck is None and "neck" not in model.encode_images(tiny_batch()["images"])
    assert not any(k.startswith("neck.") for k in model.state_dict())


# The round reads the pyramid below whatever the grid: P3's (stride 8) or P2's (stride 4) size.
@pytest.mark.parametrize("h, w", [(4, 4), (8, 8), (4, 5)])
def test_refinement_round_matches_a_literal_loop_over_queries(h, w):
    torch.manual_seed(3)
    c, k = 8, 3
    refine = RefinementRound(c, k, heads=2, points=2, ffn_dim=16, dropout=0.0).eval()
    queries, pixels = torch.randn(2, 3, c), torch.randn(2, c, h, w)
    grid, logits = torch.randn(2, c + 2, h, w), torch.randn(2, 3, h, w)
    levels = flatten_levels([torch.randn(2, c, 8 // 2 ** i, 8 // 2 ** i) for i in range(4)])
    got_queries, got_logits, got_pixels = refine(queries, pixels, grid, logits, levels)
    assert got_pixels is pixels  # without pixel_update every round matches the first-stage map
    for b in range(2):
        for q in range(3):
            scores = logits[b, q].flatten().tolist()
            top = sorted(range(h * w), key=lambda i: -scores[i])[:k]
            feats = pixels[b].flatten(1)[:, top].T + queries[b, q]           # (k, C)
            pos, centre = grid[b, :c].flatten(1)[:, top].T, grid[b, c:].flatten(1)[:, top].T
            one = levels.src[b:b + 1]
            encoded = refine.reencode(feats[None], pos[None], centre[None], levels.spatial_shapes,
                                      levels.level_start_index, memory=one)[0]
            attended = refine.cross_attn(queries[b, q][None, None], encoded[None], encoded[None])[0]
            want = refine.ffn(refine.norm(2 * queries[b, q] + attended[0, 0]))
            assert torch.allclose(got_queries[b, q], want, atol=1e-5)
            assert torch.allclose(got_logits[b, q], torch.einsum("c,chw->hw", want, pixels[b]),
                                  atol=1e-4)


def test_fuse_averages_levels_on_the_stride_8_grid(encoder):
    head = build(encoder).head
    levels = [torch.full((1, 16, 16 // 2 ** i, 16 // 2 ** i), float(i)) for i in range(4)]
    levels[0][..., :2, :2] = torch.tensor([[1.0, 3.0], [5.0, 7.0]])  # one stride-8 cell of P2
    fused = head.fuse(levels, {})
    assert fused.shape == (1, 16, 8, 8)
    assert torch.allclose(fused[0, :, 1:, 1:], torch.tensor(1.5))     # mean of 0, 1, 2, 3
    assert torch.allclose(fused[0, :, 0, 0], torch.tensor((4.0 + 1 + 2 + 3) / 4))  # P2 cell mean 4


def test_fuse_at_stride_4_averages_levels_on_the_p2_grid(encoder):
    head = build(encoder, neck_stride=4).head
    levels = [torch.full((1, 16, 16 // 2 ** i, 16 // 2 ** i), float(i)) for i in range(4)]
    levels[0][..., :2, :2] = torch.tensor([[1.0, 3.0], [5.0, 7.0]])  # P2 pixels kept as they are
    fused = head.fuse(levels, {})
    assert fused.shape == (1, 16, 16, 16)
    assert torch.allclose(fused[0, :, 2:, 2:], torch.tensor(1.5))     # mean of 0, 1, 2, 3
    want = (torch.tensor([[1.0, 3.0], [5.0, 7.0]]) + 1 + 2 + 3) / 4
    assert torch.allclose(fused[0, :, :2, :2], want.expand(16, 2, 2))


def test_encoder_levels_3_encodes_p3_to_p5_and_keeps_p2_projected(encoder):
    head = build(encoder, encoder_levels=3, neck_stride=4).head.eval()
    features = tiny_model_features(encoder)
    with torch.no_grad():
        levels = head.encode_levels(features)
        projected = [proj(features[f"p{i + 2}"]) for i, proj in enumerate(head.input_proj)]
        # the encoder alone on P3..P5 gives the same maps: P2 is neither a query nor a value
        encoded = head.encoder.encode_maps(projected[1:], [head.position(x) for x in projected[1:]])
    assert torch.equal(levels[0], projected[0])
    assert all(torch.allclose(a, b) for a, b in zip(levels[1:], encoded))
    assert head.encoder.layers[0].self_attn.n_levels == 3
    assert all(r.reencode.self_attn.n_levels == 3 for r in head.rounds)


def test_pixel_grid_holds_sine_code_and_pixel_centres(encoder):
    head = build(encoder).head
    grid = head.pixel_grid(torch.zeros(2, 16, 3, 4))
    assert grid.shape == (2, 18, 3, 4)
    assert torch.allclose(grid[:, :16], head.position(torch.zeros(2, 16, 3, 4)))
    assert torch.allclose(grid[1, 16:, 2, 1], torch.tensor([1.5 / 4, 2.5 / 3]))  # (x, y) of row 2, col 1


def test_queries_do_not_depend_on_the_rest_of_the_batch(encoder):
    model = build(encoder, refine_rounds=2).eval()
    batch = tiny_batch(b=2)
    batch["captions"][1], batch["spans"][1] = OTHER_CAPTION, OTHER_SPANS  # more padding for item 0
    with torch.no_grad():
        together = model.predict_maps(batch)
        alone = model.predict_maps({k: v[:1] for k, v in batch.items()})
    assert torch.allclose(together[0], alone[0], atol=1e-5)


@pytest.mark.parametrize("stride", [8, 4])
def test_eval_returns_one_stride_4_map_per_phrase(encoder, stride):
    model = build(encoder, neck_stride=stride).eval()
    with torch.no_grad():
        out = model.predict_maps(tiny_batch(b=1))
    assert len(out) == 1 and out[0].shape == (2, 16, 16)
    assert 0 <= out[0].min() and out[0].max() <= 1


@pytest.mark.parametrize("bad", [dict(hidden_dim=18, heads=2), dict(hidden_dim=12, heads=8),
                                 dict(refine_rounds=-1), dict(top_k=0), dict(neck_stride=16),
                                 dict(encoder_levels=0), dict(encoder_levels=5)])
def test_bad_config_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="DRMN"):
        tiny_config(**bad)


def test_synthetic_config_loads_and_matches_the_ppmn_one_in_size():
    cfg = load_config(DRMNExperiment, REPO / "groundkit/configs/drmn_synthetic.yaml")
    assert isinstance(cfg.model, DRMNConfig) and cfg.model.encoder_layers == 2
    ppmn = load_config(PPMNExperiment, REPO / "groundkit/configs/ppmn_synthetic.yaml")
    for key in ("backbone", "neck_channels", "neck_stride", "hidden_dim", "heads", "ffn_dim"):
        assert getattr(cfg.model, key) == getattr(ppmn.model, key), key
    assert cfg.data.root == ppmn.data.root and cfg.data.resize == ppmn.data.resize
    assert (cfg.trainer.batch_size, cfg.trainer.lr) == (ppmn.trainer.batch_size, ppmn.trainer.lr)
    # DRMN keeps the recipe it was set on: the first 2,000 images of the demo's 12,000
    assert cfg.data.max_items == 2000 and ppmn.data.max_items is None


def test_checkpoint_round_trip_through_the_registry(encoder, tmp_path):
    model = build(encoder, neck_fusion="add").eval()
    experiment = DRMNExperiment(model=model.cfg)
    save_checkpoint(tmp_path, model, config_to_dict(experiment), "drmn")
    # reuse the loaded encoder instead of loading it again: the model rebuilds everything else
    loaded, cfg = GroundingTask().load(tmp_path, text_encoder=encoder)
    assert cfg.model == model.cfg
    batch = tiny_batch(b=1)
    with torch.no_grad():
        # placed as a loaded model is (channels-last on the CPU): the very same numbers
        reference = place_for_inference(model, "cpu")
        assert torch.equal(reference.predict_maps(batch)[0], loaded.predict_maps(batch)[0])


def test_checkpoint_loads_without_the_backbone_file_it_started_from(encoder, tmp_path):
    model = build(encoder).eval()
    started_from = replace(model.cfg, backbone=replace(model.cfg.backbone,
                                                       weights=str(tmp_path / "gone.safetensors")))
    save_checkpoint(tmp_path, model, config_to_dict(DRMNExperiment(model=started_from)),
                    "drmn")
    loaded, cfg = GroundingTask().load(tmp_path, text_encoder=encoder)
    assert cfg.model.backbone.weights.endswith("gone.safetensors")  # kept as the record
    batch = tiny_batch(b=1)
    with torch.no_grad():
        # placed as a loaded model is (channels-last on the CPU): the very same numbers
        reference = place_for_inference(model, "cpu")
        assert torch.equal(reference.predict_maps(batch)[0], loaded.predict_maps(batch)[0])
