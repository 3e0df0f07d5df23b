import numpy as np
import pytest
import torch

from groundkit.engine.panoptic import PanopticTask
from groundkit.errors import ConfigError, InputError
from groundkit.models.panoptic import build_panoptic
from groundkit.models.panoptic.model import channels_to_segments, upsampled_argmax, upsampled_softmax

MASKS = dict(mask_head=True, mask_channels=8, mask_convs=1)  # a CPU-sized mask head


@pytest.fixture
def make_model(make_config):
    def make(**overrides):
        torch.manual_seed(0)
        model = build_panoptic(make_config(**overrides))
        model.detector.pre_nms_thresh = 0.0  # an untrained detector scores ~0.01: let detections through
        return model
    return make



def test_training_losses_reach_every_part(batch, make_model):
    model = make_model(train_score_thresh=0.0)
    losses = model(batch)
    assert {"loss", "loss_cls", "loss_box", "loss_ctr", "loss_semantic", "loss_panoptic"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    model.zero_grad()
    losses["loss_panoptic"].backward()
    # the panoptic loss trains the affinity, the semantic head, the detector's classes (through the
    # scores in Psi) and the backbone
    for module in (model.affinity.phi0, model.affinity.project, model.semantic_head.classifier,
                   model.detector.head.cls_logits, model.backbone.fpn):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()), module


@pytest.mark.parametrize("overrides", [dict(affinity=False), dict(train_detections="ground_truth"),
                                       dict(potential_variant="A")])
def test_variants_train(batch, make_model, overrides):
    losses = make_model(**overrides)(batch)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"])


def test_box_gated_affinity_trains_the_gate_first(batch, make_model):
    """With the gate closed P = Psi, so the panoptic loss reaches the gate but not yet phi."""
    model = make_model(train_score_thresh=0.0, affinity_region="box", affinity_gate=True,
                       affinity_coords=True)
    model(batch)["loss_panoptic"].backward()
    assert model.affinity.gain.grad.abs() > 0
    assert model.affinity.phi0.weight.grad.abs().sum() == 0
    with torch.no_grad():
        model.affinity.gain.fill_(0.5)
    model.zero_grad()
    model(batch)["loss_panoptic"].backward()
    assert model.affinity.phi0.weight.grad.abs().sum() > 0


def test_affinity_margin_reaches_past_the_box_and_no_further(make_model):
    """P of a thing channel is Psi outside its region; the margin widens the region by a
    fraction of the box on each side, so cells just outside the box get an affinity term."""
    grid = (16, 16)  # stride 4: a 64 x 64 image
    det = {"boxes": torch.tensor([[24.0, 24.0, 40.0, 40.0]]), "scores": torch.tensor([0.9]),
           "classes": torch.tensor([0])}
    torch.manual_seed(1)
    sem = torch.randn(make_model().cfg.num_classes, *grid)
    q = torch.randn(make_model().cfg.affinity_channels, *grid)
    outputs = {}
    for margin in (0.0, 0.5):
        model = make_model(affinity_region="box", affinity_margin=margin).eval()
        psi = model._logits(sem, det, None)  # no Q: P = Psi
        outputs[margin] = (model._logits(sem, det, q) - psi)[0]  # the thing channel's term
    box, grown, beyond = (slice(6, 10),) * 2, (slice(4, 12),) * 2, (slice(0, 3),) * 2
    assert outputs[0.0][box].abs().sum() > 0 and outputs[0.5][box].abs().sum() > 0
    ring = torch.zeros(grid, dtype=torch.bool)
    ring[grown] = True
    ring[box] = False  # grown box (x, y in [16, 48) px = cells 4..11) minus the box
    assert outputs[0.0][ring].abs().max() == 0 and outputs[0.5][ring].abs().min() > 0
    assert outputs[0.5][beyond].abs().max() == 0


def test_mask_loss_and_panoptic_loss_both_train_the_mask_head(batch, make_model):
    model = make_model(train_score_thresh=0.0, mask_weight=2.0, **MASKS)
    losses = model(batch)
    assert losses["loss_mask"] > 0 and torch.isfinite(losses["loss_mask"])
    detection = losses["loss_cls"] + losses["loss_box"] + losses["loss_ctr"]
    torch.testing.assert_close(losses["loss"], detection + 0.2 * losses["loss_semantic"]
                               + 0.1 * losses["loss_panoptic"] + 2.0 * losses["loss_mask"])
    head = model.mask_head
    for name in ("loss_mask", "loss_panoptic"):
        model.zero_grad()
        losses[name].backward(retain_graph=True)
        for module in (head.predictor, head.upsample, head.convs):
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()), \
                (name, module)


@pytest.mark.parametrize("variant", ["A", "B", "C"])
def test_potential_variants_train_with_masks(batch, make_model, variant):
    model = make_model(train_score_thresh=0.0, potential_variant=variant, **MASKS)
    losses = model(batch)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"])
    model.zero_grad()
    model(batch)["loss_panoptic"].backward()
    assert model.mask_head.predictor.weight.grad.abs().sum() > 0


def test_no_mask_head_by_default(batch, make_model):
    model = make_model()
    assert model.mask_head is None and not any(k.startswith("mask_head") for k in model.state_dict())
    assert "loss_mask" not in model(batch)


def test_bundled_checkpoint_still_loads_and_predicts():
    model, cfg = PanopticTask().load("panoptic-synthetic")  # strict: no missing or unexpected key
    assert model.mask_head is None and not cfg.model.mask_head
    result = model.predict(torch.zeros(1, 3, 64, 96))[0]
    assert result.id_map.shape == (64, 96)


@pytest.mark.parametrize("overrides", [{}, MASKS, dict(MASKS, mask_size=14)])
def test_predict_format(batch, make_model, overrides):
    model = make_model(test_score_thresh=0.0, **overrides).eval()
    results = model.predict(batch["images"], [(64, 96), (60, 90)], [(128, 192), (60, 90)])
    for result, size in zip(results, [(128, 192), (60, 90)]):
        assert result.id_map.shape == size and result.id_map.dtype == np.int64
        ids = [s["id"] for s in result.segments_info]
        assert ids == list(range(1, len(ids) + 1))
        assert set(np.unique(result.id_map).tolist()) <= {0, *ids}
        for s in result.segments_info:
            assert s["category_id"] in ((1, 2, 3) if s["isthing"] else (101, 102))
    assert isinstance(model(batch), list)  # eval-mode forward predicts


def test_heuristic_merge_mode(batch, make_model):
    model = make_model(test_score_thresh=0.0, merge="heuristic").eval()
    result = model.predict(batch["images"])[0]
    assert result.id_map.shape == (64, 96)
    assert set(np.unique(result.id_map).tolist()) <= {0, *[s["id"] for s in result.segments_info]}


def test_heuristic_merge_uses_the_predicted_masks(batch, make_model):
    model = make_model(test_score_thresh=0.0, merge="heuristic", **MASKS).eval()
    with torch.no_grad():
        model.mask_head.predictor.bias.fill_(-30.0)  # every mask empty: no thing segment
    assert not any(s["isthing"] for s in model.predict(batch["images"])[0].segments_info)
    with torch.no_grad():
        model.mask_head.predictor.bias.fill_(30.0)  # every mask fills its box
    result = model.predict(batch["images"])[0]
    det = model.detections(batch["images"])[0]
    x1, y1, x2, y2 = det["boxes"][det["scores"].argmax()].tolist()
    ys, xs = torch.arange(64)[:, None] + 0.5, torch.arange(96)[None] + 0.5
    in_box = (xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)
    # the top-scoring detection is visited first and takes every pixel of its pasted mask
    assert result.segments_info[0]["isthing"]
    assert in_box.any() and (torch.as_tensor(result.id_map) == 1).equal(in_box)


@pytest.mark.parametrize("overrides", [{}, MASKS])
def test_detections_for_other_models(batch, make_model, overrides):
    model = make_model(test_score_thresh=0.0, **overrides).eval()
    dets = model.detections(batch["images"], [(64, 96), (60, 90)])
    d = dets[1]
    n = len(d["boxes"])
    assert n > 0
    assert d["masks"].shape == (n, 60, 90) and d["masks"].dtype == torch.bool
    assert d["masks"].sum(0).max() <= 1  # one owner per pixel
    assert d["roi_features"].shape == (n, 16, 7, 7) and d["scores"].shape == (n,)
    assert set(d["category_ids"].tolist()) <= {1, 2, 3}


def test_channels_to_segments_ids_and_trimming():
    det = {"boxes": torch.zeros(2, 4), "scores": torch.tensor([0.9, 0.7]), "classes": torch.tensor([2, 0])}
    # channels: 0, 1 detections; 2, 3 stuff labels 3 and 4 (num_things = 3)
    channels = torch.tensor([[1, 1, 2, 2], [1, 3, 2, 2]])
    id_map, segments = channels_to_segments(channels, det, num_things=3, stuff_area_min=2)
    assert [(s["label"], s["isthing"]) for s in segments] == [(0, True), (3, False)]
    assert segments[0]["score"] == pytest.approx(0.7) and segments[1]["score"] == 1.0
    assert id_map.tolist() == [[1, 1, 2, 2], [1, 0, 2, 2]]  # stuff label 4 (1 pixel) trimmed to void


def test_upsampled_argmax_matches_full_upsampling():
    torch.manual_seed(0)
    logits = torch.randn(37, 8, 12)
    full = torch.nn.functional.interpolate(logits[None], size=(32, 48), mode="bilinear",
                                           align_corners=False)[0]
    want = full[:, :30, :45].argmax(0)
    torch.testing.assert_close(upsampled_argmax(logits, (32, 48), (30, 45), (30, 45), chunk=5), want)
    cropped = torch.nn.functional.interpolate(full[None, :, :30, :45], size=(60, 90), mode="bilinear",
                                              align_corners=False)[0]
    torch.testing.assert_close(upsampled_argmax(logits, (32, 48), (30, 45), (60, 90), chunk=8),
                               cropped.argmax(0))


def test_upsampled_softmax_is_the_full_softmax_of_the_chosen_channels():
    torch.manual_seed(0)
    logits = torch.randn(37, 8, 12)
    full = torch.nn.functional.interpolate(logits[None], size=(32, 48), mode="bilinear",
                                           align_corners=False)[0, :, :30, :45].softmax(0)
    chosen = [3, 0, 36]
    got = upsampled_softmax(logits, (32, 48), (30, 45), (30, 45), chosen, chunk=5)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, full[chosen])
    every = upsampled_softmax(logits, (32, 48), (30, 45), (60, 90), list(range(37)), chunk=8)
    torch.testing.assert_close(every.sum(0), torch.ones(60, 90))
    torch.testing.assert_close(every.argmax(0), upsampled_argmax(logits, (32, 48), (30, 45),
                                                                  (60, 90)))
    assert upsampled_softmax(logits, (32, 48), (30, 45), (60, 90), []).shape == (0, 60, 90)


def test_config_and_input_errors(make_config, make_model):
    with pytest.raises(ConfigError, match="size_limits"):
        make_config(size_limits=(32,))
    with pytest.raises(ConfigError, match="distinct"):
        make_config(stuff_ids=(1, 101))
    with pytest.raises(ConfigError, match="potential_variant"):
        make_config(potential_variant="D")
    with pytest.raises(ConfigError, match="mask_channels"):
        make_config(mask_head=True, mask_channels=0)
    with pytest.raises(ConfigError, match="even mask_size"):
        make_config(mask_head=True, mask_size=15)
    with pytest.raises(ConfigError, match="affinity_margin: expected >= 0, and only with"):
        make_config(affinity_margin=0.5)  # the region is the whole image: nothing to grow
    with pytest.raises(ConfigError, match="affinity_margin"):
        make_config(affinity_region="box", affinity_margin=-0.1)
    model = make_model().eval()
    with pytest.raises(InputError, match="multiples of 32"):
        model.predict(torch.zeros(1, 3, 50, 64))


@pytest.mark.parametrize("overrides", [{}, MASKS])
def test_overfit_two_tiny_images(make_config, make_batch, overrides):
    """A few steps on two images: the total and the panoptic loss go down (and the mask loss)."""
    torch.manual_seed(0)
    model = build_panoptic(make_config(train_score_thresh=0.0, detection_weight=1.0, semantic_weight=1.0,
                                       panoptic_weight=1.0, **overrides))
    model.detector.pre_nms_thresh, model.detector.max_detections = 0.0, 10
    batch = make_batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(6):
        losses = model(batch)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        history.append({k: v.item() for k, v in losses.items()})
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    assert history[-1]["loss_panoptic"] < history[0]["loss_panoptic"]
    assert history[-1]["loss_semantic"] < history[0]["loss_semantic"]
    if "mask_head" in overrides:
        assert history[-1]["loss_mask"] < history[0]["loss_mask"]


def test_load_panoptic_reads_a_checkpoint_by_name_frozen():
    from groundkit.engine.checkpoint import load_checkpoint
    from groundkit.errors import ConfigError
    from groundkit.hub import resolve_checkpoint
    from groundkit.models.panoptic import load_panoptic

    model = load_panoptic("panoptic-synthetic")
    state, meta = load_checkpoint(resolve_checkpoint("panoptic-synthetic"))
    assert model.cfg.thing_ids == tuple(meta["config"]["model"]["thing_ids"])
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="expected a 'panoptic' checkpoint .* got a 'ppmn'"):
        load_panoptic("ppmn-synthetic")
