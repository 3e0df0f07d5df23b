"""The two-stage matcher: its modules against slow references, padding, its proposal sources
(ground truth, the query-agnostic baseline, a VL-NMS checkpoint) and their failure modes.

The registry test (tests/models/test_registry.py) covers the model surface: losses and gradients,
result types, save/load and batch independence."""
import itertools

import numpy as np
import pytest
import torch

from groundkit.config import config_to_dict, load_config
from groundkit.engine.checkpoint import save_checkpoint
from groundkit.engine.tasks import get_task
from groundkit.errors import ConfigError, InputError
from groundkit.models.referring.matcher import MAttNetScorer, box_offsets, nearest_neighbours
from groundkit.models.referring.proposals import baseline_proposals

TASK = get_task("referring")


@pytest.fixture(autouse=True)
def session_encoder(monkeypatch, text_encoder):
    for where in ("matcher_model", "vlnms_model"):
        monkeypatch.setattr(f"groundkit.models.referring.{where}.TextEncoder",
                            lambda *a, **kw: text_encoder)
    monkeypatch.setattr("groundkit.engine.referring.TextEncoder", lambda *a, **kw: text_encoder)


def experiment(root, model_type="matcher", *overrides):
    return load_config(TASK.experiment_class(model_type), None,
                       [*TASK.tiny_overrides(model_type), f"data.root={root}", "data.input_size=128",
                        *overrides])


def model_of(cfg, seed=0):
    torch.manual_seed(seed)
    return TASK.build_model(cfg).eval()


def batch_of(cfg, root, split="val", items=range(4)):
    dataset = TASK.dataset(cfg, root, split)
    return TASK.collate([dataset[i] for i in items])


# --- the modules ---------------------------------------------------------------------------------

def test_box_offsets_are_in_units_of_the_box():
    box = torch.tensor([10.0, 20.0, 30.0, 60.0])          # centre (20, 40), 20 x 40, area 800
    other = torch.tensor([[0.0, 0.0, 40.0, 20.0]])         # area 800
    np.testing.assert_allclose(box_offsets(box, other).numpy(),
                               [[-1.0, -1.0, 1.0, -0.5, 1.0]])


def test_nearest_neighbours_match_a_slow_loop():
    torch.manual_seed(0)
    xy = torch.rand(2, 6, 2) * 50
    boxes = torch.cat([xy, xy + torch.rand(2, 6, 2) * 20 + 1], dim=-1)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    labels = torch.tensor([[0, 1, 0, 0, 1, 2], [0, 0, 1, 0, 0, 0]])
    for same, k in itertools.product([None, labels[:, :, None] == labels[:, None, :]], [1, 3, 8]):
        index, valid = nearest_neighbours(boxes, mask, k, same)
        assert index.shape == valid.shape == (2, 6, k)
        centres = (boxes[..., :2] + boxes[..., 2:]) / 2
        for b, i in itertools.product(range(2), range(6)):
            if not mask[b, i]:
                assert not valid[b, i].any()
                continue
            others = [j for j in range(6) if j != i and mask[b, j]
                      and (same is None or bool(same[b, i, j]))]
            others.sort(key=lambda j: float((centres[b, i] - centres[b, j]).norm()))
            expected = others[:k]
            assert valid[b, i].sum() == len(expected)
            assert index[b, i, :len(expected)].tolist() == expected


def test_padding_proposals_and_words_change_nothing_for_the_real_ones():
    torch.manual_seed(1)
    scorer = MAttNetScorer(region_dim=12, text_dim=8, dim=16, neighbours=2).eval()
    regions, words = torch.randn(1, 4, 12), torch.randn(1, 5, 8)
    xy = torch.rand(1, 4, 2) * 40
    boxes = torch.cat([xy, xy + 10], dim=-1)
    labels = torch.tensor([[0, 1, 0, 2]])
    sizes = torch.tensor([[64.0, 64.0]])
    out = scorer(regions, boxes, labels, torch.ones(1, 4, dtype=torch.bool), sizes, words,
                 torch.ones(1, 5, dtype=torch.bool))
    pad = lambda x, n: torch.cat([x, torch.randn(1, n, *x.shape[2:]) * 100], dim=1)  # noqa: E731
    padded = scorer(pad(regions, 3), pad(boxes, 3), torch.cat([labels, labels[:, :3]], 1),
                    torch.tensor([[True] * 4 + [False] * 3]), sizes, pad(words, 2),
                    torch.tensor([[True] * 5 + [False] * 2]))
    torch.testing.assert_close(padded["logits"][:, :4], out["logits"])
    assert torch.isinf(padded["logits"][:, 4:]).all()
    torch.testing.assert_close(out["weights"].sum(-1), torch.ones(1))
    assert (padded["attention"][..., 5:] == 0).all()


# --- the model and its proposal sources -------------------------------------------------------------

def test_gt_proposals_are_the_images_objects_and_the_box_is_one_of_them(tiny_synthetic):
    cfg = experiment(tiny_synthetic)
    model = model_of(cfg)
    batch = batch_of(cfg, tiny_synthetic)
    results = model(batch)
    for b, result in enumerate(results):
        (h, w), (h0, w0) = batch["image_sizes"][b], batch["orig_sizes"][b]
        expected = batch["boxes"][b] * torch.tensor([w0 / w, h0 / h] * 2)
        np.testing.assert_allclose(result.proposals, expected.numpy(), rtol=1e-6)
        assert any(np.array_equal(result.box, p) for p in result.proposals)
        assert 0 < result.score <= 1 and result.mask.shape == tuple(batch["orig_sizes"][b])


def test_baseline_proposals_are_the_most_confident_candidates(tiny_synthetic):
    cfg = experiment(tiny_synthetic, "matcher", "model.proposals=baseline", "model.top_k=2")
    model = model_of(cfg)
    batch = batch_of(cfg, tiny_synthetic)
    results = model(batch)
    sizes = [tuple(s) for s in batch["image_sizes"]]
    cands = model.panoptic.candidates(batch["images"], sizes, [tuple(s) for s in batch["orig_sizes"]])
    for result, c in zip(results, cands):
        np.testing.assert_allclose(result.proposals, baseline_proposals(c, 2)["boxes"].numpy(),
                                   rtol=1e-5, atol=1e-4)


def test_a_vlnms_checkpoint_gives_its_own_proposals(tiny_synthetic, tmp_path):
    vl_cfg = experiment(tiny_synthetic, "vlnms", "model.top_k=3")
    vlnms = model_of(vl_cfg, seed=4)
    save_checkpoint(tmp_path / "vl", vlnms, config_to_dict(vl_cfg), "vlnms")
    cfg = experiment(tiny_synthetic, "matcher", f"model.proposals={tmp_path / 'vl'}", "model.top_k=3")
    model = model_of(cfg)
    batch = batch_of(cfg, tiny_synthetic)
    for mine, theirs in zip(model(batch), vlnms(batch)):
        np.testing.assert_allclose(mine.proposals, theirs.proposals, rtol=1e-6)
    assert model.proposer().panoptic is model.panoptic   # one detector, shared


def test_wrong_proposal_sources_fail_clearly_before_any_image(tiny_synthetic, tmp_path):
    model = model_of(experiment(tiny_synthetic))
    with pytest.raises(ConfigError, match="expected a 'vlnms' checkpoint"):
        TASK.set_inference_options(model, {"proposals": "panoptic-synthetic"})
    with pytest.raises(ConfigError, match="no checkpoint .*missing"):
        TASK.set_inference_options(model, [f"proposals={tmp_path / 'missing'}"])
    with pytest.raises(ConfigError, match="top_k"):
        TASK.set_inference_options(model, ["top_k=0"])


def test_gt_proposals_need_the_data(tiny_synthetic):
    model = model_of(experiment(tiny_synthetic))
    encoded = model.encode_images(torch.zeros(1, 3, 128, 128))
    with pytest.raises(InputError, match="proposals=baseline"):
        model.refer(encoded, ["the red circle"], [(128, 128)], [(128, 128)], [1.0])


def test_an_image_without_candidates_gives_no_proposal(tiny_synthetic):
    cfg = experiment(tiny_synthetic, "matcher", "model.proposals=baseline", "model.delta=0.999")
    model = model_of(cfg)
    batch = batch_of(cfg, tiny_synthetic, items=range(2))
    for result, size in zip(model(batch), batch["orig_sizes"]):
        assert result.proposals.shape == (0, 4) and result.score == 0.0
        assert not result.box.any() and not result.mask.any() and result.mask.shape == tuple(size)


def test_training_learns_to_pick_the_referent_among_the_gt_boxes(tiny_synthetic):
    """A few steps on one batch: the cross-entropy falls and the referent wins (the gradient
    reaches the scorer through the frozen parts)."""
    cfg = experiment(tiny_synthetic)
    model = model_of(cfg).train()
    batch = TASK.collate([TASK.dataset(cfg, tiny_synthetic, "train", train=False)[i] for i in range(6)])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for _ in range(40):
        loss = model(batch)["loss"]
        first = float(loss.detach()) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.3 * first
    results = model.eval()(batch)
    assert all(np.array_equal(r.box, r.proposals[batch["referent"][b]]) for b, r in enumerate(results))


def test_a_refused_proposal_source_leaves_the_model_as_it_was(tiny_synthetic):
    model = model_of(experiment(tiny_synthetic))
    before = model.cfg
    with pytest.raises(ConfigError):
        TASK.set_inference_options(model, {"proposals": "pbrec-synthetic"})
    assert model.cfg is before
