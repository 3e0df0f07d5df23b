"""Detector candidates before NMS (the first stage of VL-NMS): the points above a threshold, the
detections among them, batch independence and the empty case."""
import pytest
import torch

from groundkit.models.panoptic import build_panoptic
from groundkit.models.panoptic.detector import nonempty
from groundkit.models.referring.proposals import baseline_proposals
from groundkit.ops.boxes import clip_boxes

KEYS = {"boxes", "scores", "confidence", "classes", "category_ids", "centerness", "levels",
        "roi_features", "roi_boxes"}


@pytest.fixture
def model(make_config):
    """Untrained, with the classifier at p = 0.5 instead of the focal-loss prior so that points score
    about 0.5 and spread around it."""
    torch.manual_seed(0)
    model = build_panoptic(make_config(test_score_thresh=0.3)).eval()
    torch.nn.init.zeros_(model.detector.head.cls_logits.bias)
    return model


def point_scores_and_boxes(model, images, i, size):
    """The reference: PBREC's path through the detector (one box and best-class score per point)."""
    with torch.no_grad():
        out = model.detector(model.backbone(images))
        boxes, scores = model.detector.point_boxes(out)
    return clip_boxes(boxes[i], size), scores[i], out.level


def test_candidates_are_every_point_above_the_threshold(model, batch):
    images, sizes, orig = batch["images"], [(64, 96), (60, 90)], [(128, 192), (30, 45)]
    _, all_scores, _ = point_scores_and_boxes(model, images, 0, sizes[0])
    thresh = float(all_scores.median())  # about half the points pass
    cands = model.candidates(images, sizes, orig, score_thresh=thresh, roi_size=5)
    assert len(cands) == 2
    for i, c in enumerate(cands):
        assert set(c) == KEYS
        n = len(c["boxes"])
        assert c["scores"].shape == (n, 3) and c["roi_features"].shape == (n, 16, 5, 5)
        for key in ("confidence", "classes", "category_ids", "centerness", "levels"):
            assert c[key].shape == (n,), key
        assert (c["confidence"] > thresh).all()
        best = c["scores"].max(dim=1)
        assert torch.equal(c["confidence"], best.values) and torch.equal(c["classes"], best.indices)
        assert torch.equal(c["category_ids"], torch.tensor([1, 2, 3])[c["classes"]])
        assert set(c["levels"].tolist()) <= {3, 4, 5}  # P3..P5: 3 detector levels
        # class probabilities back from the scores: inside (0, 1)
        probs = c["scores"] ** 2 / c["centerness"][:, None]
        assert ((probs > 0) & (probs < 1)).all()
        (h, w), (h0, w0) = sizes[i], orig[i]
        assert torch.allclose(c["boxes"], c["roi_boxes"] * torch.tensor([w0 / w, h0 / h] * 2))
        # the same points as an independent path through the detector, in point order
        boxes, scores, level = point_scores_and_boxes(model, images, i, sizes[i])
        expected = torch.nonzero((scores > thresh) & nonempty(boxes)).flatten()
        assert 0 < n == len(expected) < len(scores)
        assert torch.allclose(c["roi_boxes"], boxes[expected])
        assert torch.allclose(c["confidence"], scores[expected])
        assert torch.equal(c["levels"], level[expected] + 3)


def test_every_detection_is_a_candidate_kept_by_nms(model, batch):
    images, sizes = batch["images"], [(64, 96), (60, 90)]
    dets = model.detections(images, sizes)
    cands = model.candidates(images, sizes)
    for det, cand in zip(dets, cands):
        assert 0 < len(det["boxes"]) < len(cand["boxes"])
        for box, score, label, feature in zip(det["boxes"], det["scores"], det["classes"],
                                              det["roi_features"]):
            j = torch.nonzero((cand["boxes"] == box).all(dim=1)).flatten()
            assert len(j) >= 1, box
            j = j[cand["scores"][j, label] == score]  # the same score, bit for bit
            assert len(j) >= 1, (box, score)
            assert torch.allclose(cand["roi_features"][j[0]], feature, atol=1e-6)


def test_an_image_gives_the_same_candidates_alone_and_in_a_batch(model, batch):
    images = batch["images"]
    # the second image is 32 x 64 inside the batch's 64 x 96 padding; alone it pads to 32 x 64
    batched = model.candidates(images, [(64, 96), (32, 64)], [(64, 96), (40, 80)])[1]
    alone = model.candidates(images[1:, :, :32, :64].contiguous(), [(32, 64)], [(40, 80)])[0]
    assert len(alone["boxes"]) > 0
    for key in KEYS:
        assert torch.equal(batched[key], alone[key]), key


def test_no_candidate_above_the_threshold_is_an_empty_result(model, batch):
    c = model.candidates(batch["images"], score_thresh=1.0, roi_size=7)[0]  # scores are < 1
    assert set(c) == KEYS
    assert c["boxes"].shape == (0, 4) and c["scores"].shape == (0, 3)
    assert c["roi_features"].shape == (0, 16, 7, 7) and c["confidence"].shape == (0,)
    proposals = baseline_proposals(c, k=3)
    assert proposals["boxes"].shape == (0, 4) and proposals["index"].shape == (0,)


def test_candidates_from_features_are_the_candidates_of_the_images(model, batch):
    images, sizes, orig = batch["images"], [(64, 96), (60, 90)], [(128, 192), (30, 45)]
    direct = model.candidates(images, sizes, orig, score_thresh=0.4)
    with torch.no_grad():
        shared = model.candidates_from_features(model.backbone(images), sizes, orig, score_thresh=0.4)
    for a, b in zip(direct, shared):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_detection_masks_of_chosen_boxes_are_what_detections_paints(model, batch):
    """detections() paints its detections through detection_masks; any other boxes (a referring
    model's proposals) are painted the same way, and none gives no mask."""
    images, sizes, orig = batch["images"], [(64, 96), (60, 90)], [(64, 96), (30, 45)]
    dets = model.detections(images, sizes, orig)
    with torch.no_grad():
        features = model.backbone(images)
        mine = model.detector.detect(model.detector(features), sizes, model.cfg.test_score_thresh)
        masks = model.detection_masks(features, mine, (64, 96), sizes, orig)
    for det, m, size in zip(dets, masks, orig):
        assert m.shape == (len(det["boxes"]), *size) and m.dtype == torch.bool
        assert torch.equal(m, det["masks"])
    chosen = [{"boxes": torch.tensor([[8.0, 8, 40, 24]]), "scores": torch.tensor([0.9]),
               "classes": torch.tensor([0])}, {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
                                               "classes": torch.zeros(0, dtype=torch.long)}]
    with torch.no_grad():
        one, none = model.detection_masks(features, chosen, (64, 96), sizes, orig)
    assert one.shape == (1, 64, 96) and one.dtype == torch.bool and none.shape == (0, 30, 45)
