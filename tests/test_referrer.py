"""Referrer: set_image once, refer many expressions; batches; predict from the command line."""
import json

import numpy as np
import pytest
import torch

from groundkit.api import Referrer
from groundkit.cli import main
from groundkit.config import config_to_dict, load_config
from groundkit.engine.checkpoint import save_checkpoint
from groundkit.engine.tasks import task_of
from groundkit.errors import ConfigError, InputError
from groundkit.models.referring.pbrec import PROPOSALS_KEPT
from groundkit.structures import ReferringResult


@pytest.fixture(scope="module")
def checkpoint(tiny_pbrec_checkpoint):
    return tiny_pbrec_checkpoint  # tests/conftest.py


@pytest.fixture(scope="module")
def referrer(checkpoint, text_encoder, monkeypatch_module):
    monkeypatch_module.setattr("groundkit.models.referring.pbrec.TextEncoder",
                               lambda *a, **kw: text_encoder)
    return Referrer.from_pretrained(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def image(h=48, w=80, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_refer_returns_a_box_and_mask_at_the_image_size(referrer):
    referrer.set_image(image())
    out = referrer.refer("the red circle left of the star")
    assert isinstance(out, ReferringResult) and out.expression == "the red circle left of the star"
    assert out.box.shape == (4,) and out.mask.shape == (48, 80) and out.mask.dtype == bool
    assert 0 <= out.box[0] <= out.box[2] <= 80 and 0 <= out.box[1] <= out.box[3] <= 48
    # the tiny model has 64 points (64 px input, stride 8): more than the 12 kept
    assert out.proposals.shape == (max(referrer.model.cfg.top_k, PROPOSALS_KEPT), 4)
    # the vote picks one of its top_k proposals
    assert out.box.tolist() in out.proposals[:referrer.model.cfg.top_k].tolist()


def test_a_top_1_model_still_returns_the_paper_s_12_ranked_proposals(referrer):
    """The bundle votes with k = 1; its overlay's faint boxes and a predictions file's recall@k
    need the ranked boxes past the first, the first of which is the chosen box."""
    before = referrer.model.cfg
    referrer.set_image(image(seed=5))
    twelve = referrer.refer("the small red star")
    task_of("pbrec").set_inference_options(referrer.model, ["top_k=1"])
    try:
        one = referrer.refer("the small red star")
    finally:
        referrer.model.cfg = before
    assert len(one.proposals) == PROPOSALS_KEPT
    assert one.box.tolist() == one.proposals[0].tolist()
    np.testing.assert_array_equal(one.proposals, twelve.proposals)  # the same ranking


def test_a_batch_gives_what_single_images_give(referrer):
    pictures, texts = [image(seed=1), image(100, 30, seed=2)], ["the sky", "a small blue square"]
    batch = referrer(pictures, texts)
    for picture, text, got in zip(pictures, texts, batch):
        referrer.set_image(picture)
        one = referrer.refer(text)
        np.testing.assert_allclose(one.box, got.box, atol=1e-4)
        assert (one.mask != got.mask).mean() < 1e-3 and one.mask.shape == picture.shape[:2]


def test_multi_scale_and_joint_ranking_agree_between_set_image_and_batches(referrer):
    """The inference options of the synthetic bundle: the extra scale is encoded by set_image."""
    before = referrer.model.cfg
    task_of("pbrec").set_inference_options(referrer.model, ["joint_ranking=true", "test_scales=[1.5]"])
    try:
        pictures, texts = [image(seed=3), image(30, 100, seed=4)], ["the star", "a large green ring"]
        for picture, text, got in zip(pictures, texts, referrer(pictures, texts)):
            referrer.set_image(picture)
            one = referrer.refer(text)
            np.testing.assert_allclose(one.box, got.box, atol=1e-4)
            assert (one.mask != got.mask).mean() < 1e-3 and one.mask.shape == picture.shape[:2]
            assert 0 <= one.box[0] <= one.box[2] <= picture.shape[1]
    finally:
        referrer.model.cfg = before


@pytest.mark.parametrize("text", ["", "   ", None])
def test_an_empty_expression_is_a_clear_error(referrer, text):
    referrer.set_image(image())
    with pytest.raises(InputError, match="expression"):
        referrer.refer(text)


def test_refer_before_set_image_and_mismatched_batches_are_errors(checkpoint, text_encoder,
                                                                  monkeypatch):
    monkeypatch.setattr("groundkit.models.referring.pbrec.TextEncoder",
                        lambda *a, **kw: text_encoder)
    fresh = Referrer.from_pretrained(checkpoint, device="cpu")
    with pytest.raises(InputError, match="set_image"):
        fresh.refer("the sky")
    with pytest.raises(InputError, match="2 images but 1 expressions"):
        fresh([image(), image()], ["the sky"])


def test_a_grounding_checkpoint_is_not_a_referring_model(tiny_ppmn_checkpoint):
    with pytest.raises(ConfigError, match="expected a 'referring' model"):
        Referrer.from_pretrained(tiny_ppmn_checkpoint)


def test_predict_writes_the_overlay_and_the_json(checkpoint, tiny_synthetic, text_encoder, tmp_path,
                                                 monkeypatch):
    monkeypatch.setattr("groundkit.models.referring.pbrec.TextEncoder",
                        lambda *a, **kw: text_encoder)
    picture = sorted((tiny_synthetic / "images" / "val").iterdir())[0]
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(checkpoint), "--image", str(picture),
                 "--expression", "the red circle", "--out", str(out), "--device", "cpu"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["expression"] == "the red circle" and len(result["box"]) == 4
    assert result["mask"]["size"] == [64, 64] and len(result["proposals"]) >= 1
    assert (out / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code = main(["predict", "--checkpoint", str(checkpoint), "--image", str(picture),
                 "--out", str(out), "--device", "cpu"])
    assert code == 2  # no expression: a clear error, not a traceback


def test_regions_are_the_referent_with_its_box_and_without_a_mask_its_box_alone(referrer):
    referrer.set_image(image())
    out = referrer.refer("the red circle")
    (region,) = referrer.regions(out)
    assert region.label == "the red circle" and region.span == (0, 14)
    assert (region.mask == out.mask).all() and region.box == tuple(float(v) for v in out.box)
    assert referrer.text_of(out) == "the red circle"
    boxed = ReferringResult(box=np.array([1.0, 2.0, 30.0, 40.0]), score=0.5, expression="it")
    (region,) = referrer.regions(boxed)
    assert region.mask is None and region.box == (1.0, 2.0, 30.0, 40.0)


def test_a_vlnms_checkpoint_drives_the_referrer(tmp_path, text_encoder, monkeypatch, tiny_synthetic):
    """VL-NMS has PBREC's surface (encode_images, refer, predict): its top proposal is the box."""
    monkeypatch.setattr("groundkit.models.referring.vlnms_model.TextEncoder",
                        lambda *a, **kw: text_encoder)
    task = task_of("vlnms")
    cfg = load_config(task.experiment_class("vlnms"), None,
                      [*task.tiny_overrides("vlnms"), f"data.root={tiny_synthetic}"])
    torch.manual_seed(0)
    save_checkpoint(tmp_path, task.build_model(cfg), config_to_dict(cfg), "vlnms")
    referrer = Referrer.from_pretrained(tmp_path, device="cpu")
    referrer.set_image(image())
    out = referrer.refer("the red circle left of the star")
    assert out.box.shape == (4,) and out.mask.shape == (48, 80) and len(out.proposals) <= cfg.model.top_k
    assert out.box.tolist() == out.proposals[0].tolist()
    batch = referrer([image(), image(100, 30, seed=2)], ["the red circle left of the star", "a star"])
    np.testing.assert_allclose(batch[0].box, out.box, rtol=1e-5)
    assert batch[1].mask.shape == (100, 30)


def test_an_empty_batch_is_an_empty_list(referrer):
    assert referrer([], []) == []
