"""PBREC inference: which point's box and which point's mask ``refer`` returns; and the
optimizer groups of its training."""
import numpy as np
import pytest
import torch

from groundkit.models.referring.pbrec import (
    _to_original,
    fuse_scale_probabilities,
    keep_inside_box,
    mask_probabilities,
    mask_to_original,
    mean_of_agreeing,
)

N = 64   # 8 x 8 points on a 64 px input


def scores(**peaks: float) -> torch.Tensor:
    """Logits ``(1, N)``: -4 everywhere, ``p<i>=v`` sets point i to v."""
    out = torch.full((1, N), -4.0)
    for name, value in peaks.items():
        out[0, int(name[1:])] = value
    return out


def tiny_config(**overrides):
    from groundkit.models.referring.pbrec import PBRECConfig
    from groundkit.vision.backbone import BackboneConfig
    return PBRECConfig(backbone=BackboneConfig(depth=18, base_width=8, fpn_channels=16),
                       num_classes=3, grid_stride=8, dim=16, layers=1, heads=2, ffn_dim=32,
                       detector_convs=1, mask_dim=8, mask_convs=1, **overrides)


# center-ness peaks at point 3, mass-ness at point 7; their sum peaks at point 5
CENTER = scores(p3=3.0, p5=2.0, p7=-2.0)
MASS = scores(p3=-2.0, p5=2.0, p7=3.0)


def test_rankings_literal(tiny_pbrec):
    center, mass, confidence = torch.rand(3, 2, N).unbind(0)
    own = tiny_pbrec().rankings(center, mass, confidence)
    torch.testing.assert_close(own, (center, mass))
    joint = tiny_pbrec(joint_ranking=True).rankings(center, mass, confidence)
    torch.testing.assert_close(joint, (center + mass, center + mass))
    both = tiny_pbrec(joint_ranking=True, rank_by_confidence=True).rankings(center, mass, confidence)
    torch.testing.assert_close(both, ((center + mass) * confidence, center + mass))


@pytest.mark.parametrize("joint, box_point, mask_point", [(False, 3, 7), (True, 5, 5)])
def test_refer_takes_the_box_and_mask_of_the_ranked_points(tiny_pbrec, monkeypatch, joint,
                                                           box_point, mask_point):
    model = tiny_pbrec(top_k=1, joint_ranking=joint)
    monkeypatch.setattr(model, "point_logits", lambda features, expressions: (CENTER, MASS))
    features = model.encode_images(torch.randn(1, 3, 64, 64))
    size, orig, scale = (64, 48), (32, 24), 0.5     # a letterboxed 24 x 32 image
    result = model.refer(features, ["the circle"], [size], [orig], [scale])[0]

    with torch.no_grad():
        boxes, _ = model.detector.point_boxes(model.detector(features))
        kernels, mask_features = model.mask_head(features, model.grid)
        logits = model.mask_head.mask_logits(kernels, mask_features)[0]          # (N, 16, 16)
    assert len({tuple(boxes[0, i].tolist()) for i in (3, 5, 7)}) == 3          # the test can tell
    assert len({logits[i].sum().item() for i in (3, 5, 7)}) == 3
    np.testing.assert_allclose(result.box, _to_original(boxes[0, box_point], size, scale).numpy())
    assert result.score == pytest.approx(float(CENTER[0, box_point].sigmoid()))
    expected = mask_to_original(logits[mask_point], size, orig, model.cfg.mask_threshold).numpy()
    other = mask_to_original(logits[12 - mask_point], size, orig, model.cfg.mask_threshold).numpy()
    assert result.mask.shape == (32, 24) and (result.mask == expected).all()
    assert (expected != other).any()      # the mask of the other candidate (7 or 5) differs


def test_extra_test_scales_are_encoded_in_eval_mode_only(tiny_pbrec):
    model = tiny_pbrec(test_scales=(1.5, 0.5))
    features = model.encode_images(torch.randn(2, 3, 64, 64))
    assert [(f, level["p3"].shape[-1]) for f, level in features["scaled"]] == [(1.5, 12), (0.5, 4)]
    model.train()
    assert "scaled" not in model.encode_images(torch.randn(2, 3, 64, 64))
    assert "scaled" not in tiny_pbrec().encode_images(torch.randn(1, 3, 64, 64))


def test_bad_test_scales_are_refused():
    from groundkit.errors import ConfigError
    from groundkit.models.referring.pbrec import PBRECConfig
    with pytest.raises(ConfigError, match="test_scales"):
        PBRECConfig(num_classes=3, test_scales=(0.0,))


def test_multi_scale_refer_keeps_the_box_of_the_surest_scale_and_fuses_the_masks(tiny_pbrec,
                                                                                 monkeypatch):
    """The base grid (8 x 8) ranks its mask point highest, the 1.5x grid (12 x 12) its box point:
    the box comes from the larger scale; the mask is the base scale's, averaged with the larger
    scale's if that one overlaps it at IoU >= 0.5; all in original pixels."""
    model = tiny_pbrec(top_k=1, test_scales=(1.5,))

    def point_logits(features, expressions):
        n = features["p3"].shape[-1] ** 2
        center, mass = torch.full((1, n), -4.0), torch.full((1, n), -4.0)
        if n == 64:
            center[0, 5], mass[0, 9] = 1.0, 3.0
        else:
            center[0, 20], mass[0, 30] = 2.0, 1.0
        return center, mass

    monkeypatch.setattr(model, "point_logits", point_logits)
    features = model.encode_images(torch.randn(1, 3, 64, 64))
    size, orig, scale = (64, 48), (32, 24), 0.5
    result = model.refer(features, ["the circle"], [size], [orig], [scale])[0]

    factor, big = features["scaled"][0]
    with torch.no_grad():
        boxes, _ = model.detector.point_boxes(model.detector(big))
        kernels, mask_features = model.mask_head(features, model.grid)
        logits = model.mask_head.mask_logits(kernels, mask_features)[0]
        big_kernels, big_mask_features = model.mask_head(big, model.grid)
        big_logits = model.mask_head.mask_logits(big_kernels, big_mask_features)[0]
        base_boxes, _ = model.detector.point_boxes(model.detector(features))
    big_size = (size[0] * factor, size[1] * factor)
    assert not np.allclose(result.box, _to_original(base_boxes[0, 5], size, scale).numpy())
    np.testing.assert_allclose(result.box, _to_original(boxes[0, 20], big_size, scale * factor).numpy())
    assert result.score == pytest.approx(float(torch.tensor(2.0).sigmoid()))
    base = mask_probabilities(logits[9], size, orig).numpy()
    other = mask_probabilities(big_logits[30], big_size, orig).numpy()
    base_mask, other_mask = base > 0.5, other > 0.5
    agree = (base_mask & other_mask).sum() >= 0.5 * (base_mask | other_mask).sum()
    expected = (base + other) / 2 > 0.5 if agree else base_mask
    assert (result.mask == expected).all()


def test_fuse_scale_probabilities_literal():
    """Scale 0 (the surest) and scale 1 see the same object, scale 2 another: the mean of 0 and 1
    only; with scale 2 the surest, its own probabilities alone."""
    probs = torch.zeros(3, 4, 6)
    probs[0, :, :3] = 0.9                          # columns 0-2
    probs[1, :, :4] = 0.3                          # columns 0-3, under the threshold: empty
    probs[1, :, :2] = 0.6                          # columns 0-1 over it: IoU 2/3 with scale 0
    probs[2, :, 4:] = 0.8                          # columns 4-5: IoU 0 with scale 0
    expected = torch.zeros(4, 6)
    expected[:, :2], expected[:, 2], expected[:, 3] = 0.75, 0.6, 0.15
    torch.testing.assert_close(fuse_scale_probabilities(probs, 0, 0.5), expected)
    torch.testing.assert_close(fuse_scale_probabilities(probs, 2, 0.5), probs[2])
    torch.testing.assert_close(fuse_scale_probabilities(probs, 0, 0.5, min_iou=0.7), probs[0])  # 2/3
    torch.testing.assert_close(fuse_scale_probabilities(probs[:1], 0, 0.5), probs[0])


def test_mean_of_agreeing_literal():
    """Maps 0 (the reference) and 1 overlap at IoU 2/3, map 2 lies elsewhere, map 3 is map 1
    again: the mean of 0, 1 and 3; with map 3 weighted out, of 0 and 1; per row of a batch."""
    probs = torch.zeros(4, 4, 6)
    probs[0, :, :3] = 0.9
    probs[1, :, :2] = 0.6
    probs[2, :, 4:] = 0.8
    probs[3] = probs[1]
    np.testing.assert_allclose(mean_of_agreeing(probs, 0.5), (probs[0] + 2 * probs[1]) / 3)
    weight = torch.tensor([True, True, True, False])
    np.testing.assert_allclose(mean_of_agreeing(probs, 0.5, weight=weight), (probs[0] + probs[1]) / 2)
    np.testing.assert_allclose(mean_of_agreeing(probs, 0.5, min_iou=0.7), probs[0])
    batch = torch.stack([probs, probs[[2, 0, 1, 3]]])        # (2, 4, H, W): row 2 alone
    np.testing.assert_allclose(mean_of_agreeing(batch, 0.5, weight=torch.stack([weight] * 2)),
                               torch.stack([(probs[0] + probs[1]) / 2, probs[2]]))


def test_refer_averages_the_masks_of_the_best_ranked_points_that_agree(tiny_pbrec, monkeypatch):
    """mask_points = 3 with the joint ranking at k = 1: the chosen point 5, then 3 and 7 (the
    next best). Designed masks: point 5 covers columns 0-5 of the stride-4 map, point 3 columns
    0-3 (IoU 2/3: it agrees, and pulls columns 4-5 under the threshold), point 7 columns 10-15
    (disjoint: left out). The result is the mean of 5 and 3, in original pixels."""
    model = tiny_pbrec(top_k=1, joint_ranking=True, mask_points=3)
    monkeypatch.setattr(model, "point_logits", lambda features, expressions: (CENTER, MASS))
    features = model.encode_images(torch.randn(1, 3, 64, 64))
    dim = model.cfg.mask_dim
    columns = torch.arange(16)
    feats = torch.zeros(1, dim, 16, 16)
    feats[0, 0] = torch.where(columns < 6, 1.0, -1.0)       # point 5's object
    feats[0, 1] = torch.where(columns < 4, 1.0, -1.0)       # point 3's
    feats[0, 2] = torch.where(columns >= 10, 1.0, -1.0)     # point 7's
    feats[0, 3] = 1.0
    kernels = torch.zeros(1, N, dim)
    kernels[0, :, 3] = -6.0                                  # every other point: nothing
    kernels[0, 5, :4] = torch.tensor([3.0, 0.0, 0.0, 0.0])
    kernels[0, 3, :4] = torch.tensor([0.0, 4.0, 0.0, 0.0])
    kernels[0, 7, :4] = torch.tensor([0.0, 0.0, 3.0, 0.0])
    monkeypatch.setattr(model.mask_head, "forward", lambda features, grid: (kernels, feats))
    size, orig, scale = (64, 48), (32, 24), 0.5
    result = model.refer(features, ["the circle"], [size], [orig], [scale])[0]

    logits = model.mask_head.mask_logits(kernels, feats)[0]
    mean = (logits[5].sigmoid() + logits[3].sigmoid()) / 2
    expected = mask_probabilities(torch.logit(mean), size, orig) > model.cfg.mask_threshold
    alone = mask_to_original(logits[5], size, orig, model.cfg.mask_threshold)
    assert torch.equal(torch.from_numpy(result.mask), expected)
    assert expected.sum() < alone.sum()          # columns 4-5 left the mask: the test can tell
    model.cfg.mask_points = 0
    own = model.refer(features, ["the circle"], [size], [orig], [scale])[0]
    assert torch.equal(torch.from_numpy(own.mask), alone)


def test_bad_mask_points_are_refused():
    from groundkit.errors import ConfigError
    from groundkit.models.referring.pbrec import PBRECConfig
    with pytest.raises(ConfigError, match="mask_points"):
        PBRECConfig(num_classes=3, mask_points=-1)


@pytest.mark.parametrize("orig, scale, coarse_wrong, wrong", [((64, 64), 1.0, 4, 0),
                                                              ((128, 128), 0.5, 24, 12)])
def test_refer_refines_the_mask_on_the_image(tiny_pbrec, monkeypatch, orig, scale, coarse_wrong,
                                             wrong):
    """The chosen point's stride-4 mask covers a 4 x 4 block of cells, the picture a red square of
    exactly those pixels on blue: resized bilinearly the mask loses the square's corners, the
    guided filter puts them back. An image twice the input's size is refined at the input's size
    (all the guide knows) and resized to its own: 12 pixels wrong there, against 24 unrefined."""
    from groundkit.data.transforms import image_to_tensor
    rgb = np.zeros((*orig, 3), np.uint8)
    rgb[...] = (30, 30, 200)
    lo, hi = round(16 / scale), round(32 / scale)
    rgb[lo:hi, lo:hi] = (200, 30, 30)
    square = np.zeros(orig, bool)
    square[lo:hi, lo:hi] = True
    model = tiny_pbrec(top_k=1, joint_ranking=True, refine_radius=2, refine_eps=1e-4)
    monkeypatch.setattr(model, "point_logits", lambda features, expressions: (CENTER, MASS))
    features = model.encode_images(image_to_tensor(rgb, (64, 64))[None])
    feats = torch.full((1, model.cfg.mask_dim, 16, 16), -1.0)
    feats[0, 0, 4:8, 4:8] = 1.0
    kernels = torch.zeros(1, N, model.cfg.mask_dim)
    kernels[0, 5, 0] = 3.0
    monkeypatch.setattr(model.mask_head, "forward", lambda features, grid: (kernels, feats))
    refined = model.refer(features, ["the red square"], [(64, 64)], [orig], [scale])[0].mask
    model.cfg.refine_radius = 0
    coarse = model.refer(features, ["the red square"], [(64, 64)], [orig], [scale])[0].mask
    assert (coarse != square).sum() == coarse_wrong        # the corners: the test can tell
    assert (refined != square).sum() == wrong


def test_keep_inside_box_literal():
    """Pixel (i, j) is kept when its centre (j + 0.5, i + 0.5) lies within ``margin`` of the box."""
    probs = torch.rand(9, 11, generator=torch.Generator().manual_seed(0))
    box, margin = torch.tensor([2.0, 3.0, 5.5, 7.0]), 1.0
    expected = probs.clone()
    for i in range(9):
        for j in range(11):
            x, y = j + 0.5, i + 0.5
            if not (box[0] - margin <= x <= box[2] + margin and box[1] - margin <= y <= box[3] + margin):
                expected[i, j] = 0.0
    torch.testing.assert_close(keep_inside_box(probs, box, margin), expected)
    assert (expected > 0).sum() == 6 * 6                    # columns 1-6, rows 2-7


def test_refer_keeps_the_mask_near_the_chosen_box(tiny_pbrec, monkeypatch):
    """The chosen point 5's mask covers the left 6 of 16 columns of the stride-4 map, its box the
    input's columns 0-12: with a margin of 2 input pixels (1 original pixel: the 24 x 32 image is
    letterboxed at scale 2) the mask ends with column 6 of the original image."""
    model = tiny_pbrec(top_k=1, joint_ranking=True, mask_box_margin=2.0)
    monkeypatch.setattr(model, "point_logits", lambda features, expressions: (CENTER, MASS))
    boxes = torch.tensor([0.0, 0.0, 12.0, 64.0]).expand(1, N, 4)
    monkeypatch.setattr(model.detector, "point_boxes", lambda out: (boxes, torch.ones(1, N)))
    features = model.encode_images(torch.randn(1, 3, 64, 64))
    feats = torch.full((1, model.cfg.mask_dim, 16, 16), -1.0)
    feats[0, 0, :, :6] = 1.0
    kernels = torch.zeros(1, N, model.cfg.mask_dim)
    kernels[0, 5, 0] = 3.0
    monkeypatch.setattr(model.mask_head, "forward", lambda features, grid: (kernels, feats))
    size, orig, scale = (64, 48), (32, 24), 2.0
    kept = model.refer(features, ["the circle"], [size], [orig], [scale])[0].mask
    model.cfg.mask_box_margin = None
    whole = model.refer(features, ["the circle"], [size], [orig], [scale])[0].mask
    assert whole[:, 7:].any()                               # the mask spills: the test can tell
    assert kept[:, :7].tolist() == whole[:, :7].tolist() and not kept[:, 7:].any()


def test_bad_refinement_is_refused():
    from groundkit.errors import ConfigError
    from groundkit.models.referring.pbrec import PBRECConfig
    with pytest.raises(ConfigError, match="refine_radius"):
        PBRECConfig(num_classes=3, refine_radius=-1)
    with pytest.raises(ConfigError, match="refine_eps"):
        PBRECConfig(num_classes=3, refine_radius=2, refine_eps=0)
    with pytest.raises(ConfigError, match="mask_box_margin"):
        PBRECConfig(num_classes=3, mask_box_margin=-1.0)


def test_an_unfrozen_text_encoder_trains_at_the_text_lr():
    """model.freeze_text=false: trainer.text_lr applies to the encoder, trainer.lr to the rest
    (before, PBREC had no groups and its encoder trained at trainer.lr)."""
    from groundkit.engine.trainer import TrainerConfig, build_optimizer
    from groundkit.models.referring.pbrec import build_pbrec
    model = build_pbrec(tiny_config(freeze_text=False))
    optimizer = build_optimizer(model, TrainerConfig(lr=1e-3, text_lr=1e-5))
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in optimizer.param_groups}
    assert by_lr[1e-5] == {id(p) for p in model.text_encoder.parameters()}
    assert by_lr[1e-3] == {id(p) for n, p in model.named_parameters()
                           if p.requires_grad and not n.startswith("text_encoder.")}
    assert any(k.startswith("text_encoder.") for k in model.state_dict())   # saved when trained


def test_text_train_layers_fine_tunes_and_saves_the_top_layers_only(tmp_path):
    """model.text_train_layers=2: the encoder's top two layers train at trainer.text_lr and are
    the only encoder weights in a model file; a checkpoint trained frozen starts such a run."""
    from groundkit.config import config_to_dict as to_dict
    from groundkit.engine.checkpoint import load_initial_weights, save_checkpoint
    from groundkit.engine.trainer import TrainerConfig, build_optimizer
    from groundkit.errors import ConfigError
    from groundkit.models.referring.pbrec import build_pbrec
    top2 = build_pbrec(tiny_config(freeze_text=False, text_train_layers=2))
    top_names = {f"text_encoder.model.encoder.layer.{i}.{n}" for i in (4, 5)
                 for n, _ in top2.text_encoder.model.encoder.layer[i].named_parameters()}
    optimizer = build_optimizer(top2, TrainerConfig(lr=1e-3, text_lr=1e-5))
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in optimizer.param_groups}
    params = dict(top2.named_parameters())
    assert by_lr[1e-5] == {id(params[n]) for n in top_names}
    assert {k for k in top2.state_dict() if k.startswith("text_encoder.")} == top_names
    frozen = build_pbrec(tiny_config())
    save_checkpoint(tmp_path / "frozen", frozen, {"model": to_dict(frozen.cfg)}, "pbrec")
    installed = params["text_encoder.model.encoder.layer.5.output.dense.weight"].detach().clone()
    load_initial_weights(top2, tmp_path / "frozen", "pbrec", to_dict(top2.cfg))
    assert torch.equal(top2.center_head[0].weight, frozen.center_head[0].weight)
    assert torch.equal(params["text_encoder.model.encoder.layer.5.output.dense.weight"], installed)
    with pytest.raises(ConfigError, match="text_train_layers"):
        tiny_config(text_train_layers=2)   # with the encoder frozen


def test_a_checkpoint_with_trained_top_layers_starts_runs_that_train_at_least_those(tmp_path):
    """trainer.init_from a checkpoint whose encoder's top two layers were trained: a run that
    trains the whole encoder takes those two from it and the rest from the installed encoder; a
    run that would drop them (encoder frozen, or one layer trained) is refused, naming the
    settings that differ."""
    from groundkit.config import config_to_dict as to_dict
    from groundkit.engine.checkpoint import load_initial_weights, save_checkpoint
    from groundkit.errors import ConfigError
    from groundkit.models.referring.pbrec import build_pbrec
    top2 = build_pbrec(tiny_config(freeze_text=False, text_train_layers=2))
    key = "text_encoder.model.encoder.layer.5.output.dense.weight"
    with torch.no_grad():
        dict(top2.named_parameters())[key].add_(1.0)   # "fine-tuned"
    save_checkpoint(tmp_path / "top2", top2, {"model": to_dict(top2.cfg)}, "pbrec")
    whole = build_pbrec(tiny_config(freeze_text=False))
    installed = dict(whole.named_parameters())
    lower = installed["text_encoder.model.encoder.layer.0.output.dense.weight"].detach().clone()
    load_initial_weights(whole, tmp_path / "top2", "pbrec", to_dict(whole.cfg))
    assert torch.equal(installed[key], dict(top2.named_parameters())[key])
    assert torch.equal(installed["text_encoder.model.encoder.layer.0.output.dense.weight"], lower)
    for cfg, problem in ((tiny_config(), r"unexpected keys \(32\).*text_train_layers=2"),
                         (tiny_config(freeze_text=False, text_train_layers=1),
                          r"unexpected keys \(16\)")):
        with pytest.raises(ConfigError, match=problem):
            load_initial_weights(build_pbrec(cfg), tmp_path / "top2", "pbrec", to_dict(cfg))


def test_text_adapters_train_and_are_saved_with_the_top_layers(tmp_path):
    """model.text_adapter_rank=R: adapters on the layers below the top text_train_layers train at
    trainer.text_lr with those layers, and a model file carries both (not the installed lower
    layers); a checkpoint without adapters (the step-12 bundle's kind) starts such a run with
    its top layers and fresh (zero) adapters, computing what it computed."""
    from groundkit.config import config_to_dict as to_dict
    from groundkit.engine.checkpoint import load_checkpoint, load_initial_weights, save_checkpoint
    from groundkit.engine.trainer import TrainerConfig, build_optimizer
    from groundkit.errors import ConfigError
    from groundkit.models.referring.pbrec import build_pbrec
    top2 = build_pbrec(tiny_config(freeze_text=False, text_train_layers=2))
    key = "text_encoder.model.encoder.layer.5.output.dense.weight"
    with torch.no_grad():
        dict(top2.named_parameters())[key].mul_(1.5)   # "fine-tuned"
    save_checkpoint(tmp_path / "top2", top2, {"model": to_dict(top2.cfg)}, "pbrec")
    cfg = tiny_config(freeze_text=False, text_train_layers=2, text_adapter_rank=4)
    adapted = build_pbrec(cfg)
    load_initial_weights(adapted, tmp_path / "top2", "pbrec", to_dict(cfg))
    params = dict(adapted.named_parameters())
    assert torch.equal(params[key], dict(top2.named_parameters())[key])
    top2.eval(), adapted.eval()
    text = ["the red circle left of the star"]
    assert torch.equal(adapted.text_encoder(text).features, top2.text_encoder(text).features)

    optimizer = build_optimizer(adapted, TrainerConfig(lr=1e-3, text_lr=1e-5))
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in optimizer.param_groups}
    text_names = {n for n, p in params.items() if p.requires_grad and n.startswith("text_encoder.")}
    assert by_lr[1e-5] == {id(params[n]) for n in text_names}
    assert {n.split(".")[1] for n in text_names} == {"model", "adapters"}
    with torch.no_grad():
        adapted.text_encoder.adapters["0-attention-self-query"].up.weight.fill_(0.25)
    save_checkpoint(tmp_path / "adapted", adapted, {"model": to_dict(cfg)}, "pbrec")
    state, _ = load_checkpoint(tmp_path / "adapted")
    assert {k for k in state if k.startswith("text_encoder.")} == text_names
    again = build_pbrec(cfg)
    again.load_state_dict(state)
    assert torch.equal(again.text_encoder(text).features, adapted.text_encoder(text).features)
    assert not torch.equal(again.text_encoder(text).features, top2.text_encoder(text).features)
    with pytest.raises(ConfigError, match="text_adapter_rank"):
        tiny_config(text_adapter_rank=4)   # with the encoder frozen
