"""Segmenter: panoptic maps at the image's size, batches, image modes, detections as proposals."""
import numpy as np
import pytest
import torch
from PIL import Image

from groundkit.api import Segmenter, model_categories
from groundkit.config import config_from_dict, config_to_dict
from groundkit.data.synthetic import CATEGORIES
from groundkit.engine.checkpoint import save_checkpoint
from groundkit.engine.panoptic import PanopticExperiment
from groundkit.errors import ConfigError
from groundkit.models.panoptic import build_panoptic
from groundkit.models.referring.proposals import baseline_proposals


def tiny_experiment(**top):
    return config_from_dict(PanopticExperiment, {
        "model": {"backbone": {"depth": 18, "base_width": 8, "fpn_channels": 16, "norm": "gn"},
                  "thing_ids": list(range(1, 10)), "stuff_ids": list(range(101, 108)),
                  "decoder_channels": 8, "decoder_convs": 1, "affinity_channels": 8,
                  "detector_levels": 3, "detector_convs": 1, "size_limits": [32, 64],
                  "test_score_thresh": 0.0, "stuff_area_min": 0},
        "data": {"resize": {"short_side": 64, "max_size": 64}}, **top})


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    """An untrained tiny model saved and loaded as a checkpoint; its classifier starts at p = 0.5
    instead of the focal-loss prior, so that it detects things."""
    cfg = tiny_experiment(categories=[config_to_dict(c) for c in CATEGORIES])
    torch.manual_seed(0)
    model = build_panoptic(cfg.model)
    torch.nn.init.zeros_(model.detector.head.cls_logits.bias)
    path = tmp_path_factory.mktemp("ckpt") / "tiny_panoptic"
    save_checkpoint(path, model, config_to_dict(cfg), "panoptic")
    return Segmenter.from_pretrained(path, device="cpu")


def image(h=50, w=70, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_segment_gives_an_id_map_at_the_image_size_with_named_segments(segmenter):
    result = segmenter.segment(image())
    assert result.id_map.shape == (50, 70) and result.id_map.dtype == np.int64
    listed = {s["id"] for s in result.segments_info}
    assert set(np.unique(result.id_map).tolist()) - {0} <= listed
    assert {segmenter.categories[s["category_id"]].name for s in result.segments_info} <= \
        {c.name for c in CATEGORIES}
    assert all(s["isthing"] == segmenter.categories[s["category_id"]].isthing
               for s in result.segments_info)


def test_a_batch_gives_what_single_images_give(segmenter):
    big, small = image(64, 64, seed=1), image(40, 48, seed=2)  # the first needs no extra padding
    results = segmenter([big, small])
    assert [r.id_map.shape for r in results] == [(64, 64), (40, 48)]
    np.testing.assert_array_equal(results[0].id_map, segmenter.segment(big).id_map)
    assert segmenter([]) == []


def test_an_image_segments_alone_as_in_a_batch_of_other_sizes(segmenter):
    wide, square = image(20, 64, seed=3), image(64, 64, seed=1)  # padded alone: 32 x 64, 64 x 64
    batched = segmenter([square, wide])[1]
    alone = segmenter.segment(wide)
    np.testing.assert_array_equal(batched.id_map, alone.id_map)
    assert batched.segments_info == alone.segments_info
    for key, value in segmenter.detections(wide).items():
        assert torch.equal(value, segmenter.model.detections(*segmenter._batch([square, wide]),
                                                            [(64, 64), (20, 64)])[1][key]), key


@pytest.mark.parametrize("array", [
    np.zeros((30, 40), np.uint8),                       # grayscale
    np.zeros((30, 40, 4), np.uint8),                    # RGBA
    np.full((30, 40, 3), 60000, np.uint16),             # 16-bit
])
def test_any_image_mode(segmenter, array):
    assert segmenter.segment(array).id_map.shape == (30, 40)


def test_image_files_and_pil_images(segmenter, tmp_path):
    Image.fromarray(np.zeros((20, 24), np.uint16)).save(tmp_path / "g16.png")
    assert segmenter.segment(tmp_path / "g16.png").id_map.shape == (20, 24)
    pil = Image.fromarray(image(33, 20))
    np.testing.assert_array_equal(segmenter.segment(pil).id_map,
                                  segmenter.segment(image(33, 20)).id_map)


def test_detections_are_the_thing_segments_of_the_panoptic_map(segmenter):
    rgb = image()
    det = segmenter.detections(rgb)
    k = len(det["boxes"])
    assert k > 0
    assert det["boxes"].shape == (k, 4) and det["scores"].shape == det["classes"].shape == (k,)
    assert det["boxes"][:, 2].max() <= 70 and det["boxes"][:, 3].max() <= 50  # image pixels
    assert det["masks"].shape == (k, 50, 70) and det["masks"].dtype == torch.bool
    assert det["roi_features"].shape == (k, 16, 7, 7)
    assert set(det["category_ids"].tolist()) <= set(range(1, 10))
    result = segmenter.segment(rgb)
    things = [s["id"] for s in result.segments_info if s["isthing"]]
    np.testing.assert_array_equal(det["masks"].any(0).numpy(), np.isin(result.id_map, things))


def test_candidates_before_nms_hold_the_detections(segmenter):
    rgb = image()
    cand = segmenter.candidates(rgb)
    n = len(cand["boxes"])
    assert n > 0 and (cand["confidence"] > 0.05).all()
    assert cand["scores"].shape == (n, 9) and cand["roi_features"].shape == (n, 16, 7, 7)
    assert cand["boxes"][:, 2].max() <= 70 and cand["boxes"][:, 3].max() <= 50  # image pixels
    assert set(cand["category_ids"].tolist()) <= set(range(1, 10))
    for box in segmenter.detections(rgb)["boxes"]:
        assert (cand["boxes"] == box).all(dim=1).any()
    proposals = baseline_proposals(cand, k=3)
    assert len(proposals["boxes"]) == 3
    assert torch.equal(proposals["confidence"], proposals["confidence"].sort(descending=True).values)
    none = segmenter.candidates(rgb, score_thresh=1.0)  # nothing scores above 1: no rows, no error
    assert none["boxes"].shape == (0, 4) and len(baseline_proposals(none, k=3)["boxes"]) == 0


def test_categories_without_names_get_numbered_ones():
    categories = model_categories(tiny_experiment())
    assert categories[3].name == "thing 3" and categories[3].isthing
    assert categories[104].name == "stuff 104" and not categories[104].isthing
    assert len({c.color for c in categories.values()}) > 1


def test_bad_checkpoints_are_clear_errors(tmp_path):
    save_checkpoint(tmp_path / "ppmn", {"w": torch.zeros(1)}, {"model": {}}, "ppmn")
    with pytest.raises(ConfigError, match="expected a 'panoptic' model"):
        Segmenter.from_pretrained(tmp_path / "ppmn")
    with pytest.raises(ConfigError, match="no checkpoint 'nope'"):
        Segmenter.from_pretrained("nope")


def test_an_empty_batch_is_an_empty_list(segmenter):
    assert segmenter([]) == []


def test_results_read_like_dicts_as_the_grounders_do(segmenter):
    result = segmenter.segment(image())
    assert result["id_map"] is result.id_map and result["segments_info"] is result.segments_info
    assert dict(result).keys() == {"id_map", "segments_info", "probs"}
    with pytest.raises(KeyError):
        result["masks"]


def test_return_logits_gives_each_segments_probability_whose_argmax_is_the_id_map(segmenter):
    hard = segmenter.segment(image(seed=3))
    soft = segmenter.segment(image(seed=3), return_logits=True)
    assert hard.probs is None
    np.testing.assert_array_equal(hard.id_map, soft.id_map)
    probs, ids = soft["probs"], [s["id"] for s in soft.segments_info]
    assert probs.shape == (len(ids), 50, 70) and probs.dtype == np.float32 and len(ids) > 1
    assert 0 <= probs.min() and probs.sum(0).max() <= 1 + 1e-5  # other channels hold the rest
    for k, segment_id in enumerate(ids):  # each segment's pixels: its probability is the highest
        inside = soft.id_map == segment_id
        assert (probs[k][inside] >= probs[:, inside].max(0) - 1e-6).all()
    batch = segmenter([image(seed=3), image(30, 40, seed=4)], return_logits=True)
    np.testing.assert_allclose(batch[0].probs, probs, atol=1e-5)
    assert batch[1].probs.shape == (len(batch[1].segments_info), 30, 40)


def test_a_heuristic_merge_has_no_soft_maps(segmenter):
    from dataclasses import replace
    model = segmenter.model
    heuristic = Segmenter(type(model)(replace(model.cfg, merge="heuristic"), model.backbone,
                                      model.semantic_head, model.detector, model.affinity,
                                      model.mask_head), segmenter.resize, device="cpu")
    assert heuristic.segment(image()).probs is None
    with pytest.raises(ConfigError, match="merge='heuristic'"):
        heuristic.segment(image(), return_logits=True)
