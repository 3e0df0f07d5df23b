"""VL-NMS as a referring model: frozen candidates, targets from the referent and the contextual
objects, the proposals it returns, the query-agnostic baseline, and the empty cases.

The registry test (tests/models/test_registry.py) covers the model surface: losses and gradients,
result types, save/load and batch independence."""
import shutil

import numpy as np
import pytest
import torch

from groundkit.config import load_config
from groundkit.data.formats.refcoco import load_refs, write_refs
from groundkit.engine.tasks import get_task
from groundkit.models.referring.proposals import baseline_proposals
from groundkit.models.referring.vlnms_losses import relatedness_targets
from groundkit.models.referring.vlnms_model import VLNMSConfig, unique_images
from groundkit.structures import ReferringResult

TASK = get_task("referring")


@pytest.fixture(autouse=True)
def session_encoder(monkeypatch, text_encoder):
    """The session's text encoder wherever VL-NMS would load one (model and pseudo ground truth)."""
    monkeypatch.setattr("groundkit.models.referring.vlnms_model.TextEncoder",
                        lambda *a, **kw: text_encoder)
    monkeypatch.setattr("groundkit.engine.referring.TextEncoder", lambda *a, **kw: text_encoder)


def experiment(root, *overrides):
    return load_config(TASK.experiment_class("vlnms"), None,
                       [*TASK.tiny_overrides("vlnms"), f"data.root={root}", "data.input_size=128",
                        *overrides])


def model_of(cfg, seed=0):
    torch.manual_seed(seed)
    return TASK.build_model(cfg)


def batch_of(cfg, root, split="val", items=range(4), train=False):
    dataset = TASK.dataset(cfg, root, split, train=train)
    return TASK.collate([dataset[i] for i in items]), dataset


def test_config_choices_and_yaml_booleans():
    assert VLNMSConfig(contextual=True).contextual == "true"
    assert VLNMSConfig(contextual=False).contextual == "none"
    for bad in (dict(variant="mlp"), dict(loss="focal"), dict(contextual="all"), dict(top_k=0),
                dict(rank_by="score"), dict(delta=1.0), dict(variant="trans", dim=10, heads=4)):
        with pytest.raises(Exception, match="vlnms"):
            VLNMSConfig(**bad)


def test_unique_images_by_key_and_pixels():
    a, b = torch.zeros(3, 4, 4), torch.ones(3, 4, 4)
    images = torch.stack([a, b, a, a, b])
    rows, index = unique_images(images, [1, 2, 1, 3, 2])
    assert rows == [0, 1, 3] and index.tolist() == [0, 1, 0, 2, 1]  # key 3: another image
    rows, index = unique_images(images)
    assert rows == [0, 1] and index.tolist() == [0, 1, 0, 0, 1]


def test_the_detector_is_frozen_and_left_out_of_the_checkpoint(tiny_synthetic):
    model = model_of(experiment(tiny_synthetic))
    model.train()
    assert not model.panoptic.training and not any(p.requires_grad for p in model.panoptic.parameters())
    assert not model.text_encoder.training
    assert {k.split(".")[0] for k in model.state_dict()} == {"relatedness"}


@pytest.mark.parametrize("variant", ["fc", "trans"])
def test_proposals_are_the_top_k_by_relatedness_times_confidence(tiny_synthetic, variant):
    cfg = experiment(tiny_synthetic, f"model.variant={variant}", "model.top_k=4")
    model = model_of(cfg).eval()
    batch, _ = batch_of(cfg, tiny_synthetic)
    results = model(batch)
    rows, index = unique_images(batch["images"], batch["image_ids"])
    encoded = model.encode_images(batch["images"][rows])
    sizes = [tuple(batch["image_sizes"][r]) for r in rows]
    cands = model.candidates(encoded, sizes)
    with torch.no_grad():
        out = model.relate(cands, sizes, batch["expressions"], index)
    for b, (result, i) in enumerate(zip(results, index.tolist())):
        assert isinstance(result, ReferringResult) and result.proposals.shape == (4, 4)
        assert np.array_equal(result.box, result.proposals[0])
        assert result.mask.shape == tuple(batch["orig_sizes"][b]) and result.mask.dtype == bool
        c, n = cands[i], len(cands[i]["boxes"])
        r = out["logits"][b, :n].sigmoid()
        fused = r * c["confidence"]
        # the top proposal: the best fused score of its class (per-class NMS never drops the best)
        best = int(fused.argmax())
        boxes = c["boxes"]
        if variant == "trans":
            from groundkit.models.referring.vlnms import apply_box_deltas
            h, w = sizes[i]
            boxes = apply_box_deltas(boxes, out["deltas"][b, :n]).clamp(min=0)
            boxes = torch.minimum(boxes, boxes.new_tensor([w, h, w, h]))
        (h, w), (h0, w0) = batch["image_sizes"][b], batch["orig_sizes"][b]
        expected = boxes[best] * torch.tensor([w0 / w, h0 / h] * 2)
        np.testing.assert_allclose(result.box, expected.numpy(), rtol=1e-6)
        assert result.score == pytest.approx(float(fused[best]), rel=1e-6)


def test_rank_by_confidence_gives_the_query_agnostic_baseline(tiny_synthetic):
    cfg = experiment(tiny_synthetic, "model.rank_by=confidence", "model.top_k=5")
    model = model_of(cfg).eval()
    batch, _ = batch_of(cfg, tiny_synthetic)
    results = model(batch)
    sizes = [tuple(s) for s in batch["image_sizes"]]
    cands = model.panoptic.candidates(batch["images"], sizes, [tuple(s) for s in batch["orig_sizes"]])
    for result, c in zip(results, cands):
        expected = baseline_proposals(c, 5)["boxes"].numpy()
        np.testing.assert_allclose(result.proposals, expected, rtol=1e-5, atol=1e-4)


def test_training_targets_are_the_referent_and_the_context_boxes(tiny_synthetic):
    """contextual true: the named objects are positives too; none: the referent alone, whatever
    the batch carries."""
    losses, batches = {}, {}
    for contextual in ("true", "none"):
        cfg = experiment(tiny_synthetic, f"model.contextual={contextual}")
        dataset = TASK.dataset(cfg, tiny_synthetic, "train", train=True)
        batches[contextual] = batch = TASK.collate([dataset[i] for i in range(len(dataset))])
        losses[contextual] = model_of(cfg).train()(batch)["loss"].item()
    assert all(len(c) == 0 for c in batches["none"]["context_boxes"])  # the dataset cleared them
    assert losses["true"] != losses["none"]
    none = experiment(tiny_synthetic, "model.contextual=none")
    assert model_of(none).train()(batches["true"])["loss"].item() == pytest.approx(losses["none"])
    # positives: IoU >= 0.5 with the referent or a context box
    batch = batches["true"]
    b = next(k for k, c in enumerate(batch["context_boxes"]) if len(c))
    model = model_of(none)
    cands = model.candidates(model.encode_images(batch["images"][b:b + 1]),
                             [tuple(batch["image_sizes"][b])])[0]
    with_context = relatedness_targets(cands["boxes"], batch["box"][b], batch["context_boxes"][b])
    alone = relatedness_targets(cands["boxes"], batch["box"][b])
    assert with_context["labels"].sum() > alone["labels"].sum() > 0


def test_an_expression_without_a_noun_has_the_referent_alone_under_pseudo(tiny_synthetic, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_synthetic, root)
    refs_path = root / "refcoco" / "refs(unc).p"
    refs = load_refs(refs_path)
    sentence = next(r for r in refs if r["split"] == "train")["sentences"][0]
    sentence["sent"] = sentence["raw"] = "the one on the left"
    write_refs(refs_path, refs)
    cfg = experiment(root, "model.contextual=pseudo")
    dataset = TASK.dataset(cfg, root, "train", train=True)
    k = next(i for i, s in enumerate(dataset.samples) if s.sentence == "the one on the left")
    assert dataset.context_ann_ids[k] == () and len(dataset[k]["context_boxes"]) == 0
    assert any(dataset.context_ann_ids)  # other expressions name objects of a category
    batch = TASK.collate([dataset[k], dataset[k + 1]])
    model = model_of(cfg).train()
    losses = model(batch)
    assert torch.isfinite(losses["loss"])


def test_an_image_without_candidates_gives_no_proposal_and_no_loss(tiny_synthetic):
    cfg = experiment(tiny_synthetic, "model.variant=trans")
    model = model_of(cfg)
    model.cfg.delta = 0.999999  # no point scores above it
    batch, _ = batch_of(cfg, tiny_synthetic, "train", range(3), train=True)
    model.train()
    losses = model(batch)
    assert losses["loss"].item() == 0.0
    losses["loss"].backward()  # a zero that still backpropagates
    model.eval()
    batch, _ = batch_of(cfg, tiny_synthetic)
    for result, size in zip(model(batch), batch["orig_sizes"]):
        assert result.proposals.shape == (0, 4) and result.score == 0.0
        assert np.array_equal(result.box, np.zeros(4))
        assert result.mask.shape == tuple(size) and not result.mask.any()


def test_region_colours_add_the_boxes_own_pixels_to_the_roi_features(tiny_synthetic):
    """region_colours: 3 more RoI channels, the image's pixels over each candidate's box (a box
    inside a uniform patch reads that patch's colour), and a trainable model over them."""
    cfg = experiment(tiny_synthetic, "model.region_colours=true")
    model = model_of(cfg).eval()
    images = torch.zeros(1, 3, 128, 128)
    images[:, :, 32:96, 32:96] = torch.tensor([0.5, -1.0, 2.0])[:, None, None]
    encoded = model.encode_images(images)
    plain = model_of(experiment(tiny_synthetic)).eval()
    channels = plain.candidates(plain.encode_images(images), [(128, 128)])[0]["roi_features"].shape[1]
    cand = model.candidates(encoded, [(128, 128)])[0]
    assert cand["roi_features"].shape[1] == channels + 3
    from groundkit.models.referring.vlnms_model import region_colours
    colours = region_colours(encoded["pixels"][:1], torch.tensor([[40.0, 40.0, 80.0, 90.0]]), 7)
    np.testing.assert_allclose(colours[0].mean(dim=(1, 2)).numpy(), [0.5, -1.0, 2.0], atol=1e-6)
    model.train()
    batch, _ = batch_of(cfg, tiny_synthetic, split="train", items=range(2), train=True)
    model(batch)["loss"].backward()
    assert model.relatedness.region.fc.weight.grad is not None
