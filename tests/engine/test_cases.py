"""Task.cases of every family: ground truth beside prediction and the IoU of each part, checked on
perfect predictions, on predictions with one part wrong, and against the family's own scores."""
import json
import shutil

import numpy as np
import pytest

from groundkit.commands.evaluate import evaluate_checkpoint
from groundkit.data.formats import write_grounding_predictions, write_referring_predictions
from groundkit.engine.tasks import get_task, task_of
from groundkit.metrics.referring import box_iou
from groundkit.ops.masks import encode_rle


def test_grounding_cases_hold_the_ious_that_ar_averages(tiny_ppmn_checkpoint, tiny_synthetic,
                                                        tmp_path):
    report = evaluate_checkpoint(tiny_ppmn_checkpoint, tiny_synthetic, "val", tmp_path,
                                 device="cpu")
    cases = list(report.task.cases(report.dataset, tmp_path))
    assert [c.index for c in cases] == list(range(len(report.dataset)))
    ious = sorted(v for c in cases for _, v in c.ious)
    assert ious == pytest.approx(sorted(report.evaluation.phrases.ious.tolist()), abs=1e-12)
    for c in cases:
        assert c.truth.phrases == c.prediction.phrases and c.truth.scores is None
        assert c.truth.masks.shape == c.prediction.masks.shape == (len(c.ious), *c.image.shape[:2])


def test_grounding_cases_of_the_ground_truth_itself(tiny_ppmn_checkpoint, tiny_synthetic,
                                                    tmp_path):
    task = task_of("ppmn")
    _, cfg = task.load(tiny_ppmn_checkpoint)
    dataset = task.dataset(cfg, tiny_synthetic, "val")
    records, left_out = [], None
    for n in dataset.narratives:
        grounded = n.grounded()
        if left_out is None and len(grounded) > 1:
            left_out, grounded = (n.key, grounded[0][0]), grounded[1:]  # one phrase unpredicted
        records.append({"image_id": str(n.image_id), "caption": n.caption, "phrases": [
            {"segment_index": i, "utterance": u.text, "score": 0.9,
             "mask": encode_rle(dataset.panoptic.union_mask(n.image_id, u.segment_ids))}
            for i, u in grounded]})
    write_grounding_predictions(tmp_path / "predictions.json", records)
    assert left_out is not None
    for case, narrative in zip(task.cases(dataset, tmp_path), dataset.narratives):
        assert len(case.ious) == len(narrative.grounded())
        for (part, iou), (i, u) in zip(case.ious, narrative.grounded()):
            phrase = narrative.caption[u.span[0]:u.span[1]]  # as the caption writes it
            if (narrative.key, i) == left_out:
                assert (part, iou) == (f"{phrase} (no prediction)", 0.0)
            else:
                assert (part, iou) == (phrase, 1.0)
    # the predictions read back for pictures are the masks written (image ids are strings there)
    image, result = next(iter(task.results(dataset, tmp_path)))
    assert result.masks.any() and result.masks.shape[1:] == image.shape[:2]


def test_panoptic_cases_score_each_ground_truth_segment(tiny_synthetic, tmp_path):
    task = get_task("panoptic")
    _, cfg = task.load("panoptic-synthetic")
    dataset = task.dataset(cfg, tiny_synthetic, "val")
    gt = tiny_synthetic / "annotations"
    shutil.copytree(gt / "panoptic_val", tmp_path / "panoptic_val")
    data = json.loads((gt / "panoptic_val.json").read_text())
    things = [c["id"] for c in data["categories"] if c["isthing"]]
    first = data["annotations"][0]["segments_info"]
    wrong = next(k for k, s in enumerate(first) if s["category_id"] in things)
    first[wrong]["category_id"] = next(c for c in things if c != first[wrong]["category_id"])
    (tmp_path / "panoptic_val.json").write_text(json.dumps(data))
    cases = list(task.cases(dataset, tmp_path))
    assert len(cases) == len(dataset.image_ids)
    names = {c["id"]: c["name"] for c in data["categories"]}
    for k, case in enumerate(cases):
        assert len(case.ious) == len(case.truth.segments_info)
        for j, (part, iou) in enumerate(case.ious):
            area = int((case.truth.id_map == case.truth.segments_info[j]["id"]).sum())
            assert part.startswith(names[case.truth.segments_info[j]["category_id"]])
            assert part.endswith(f"({area} px)")
            assert iou == (0.0 if (k, j) == (0, wrong) else 1.0)
    assert cases[0].prediction.segments_info[wrong]["category_id"] != \
        cases[0].truth.segments_info[wrong]["category_id"]


def test_referring_cases_hold_the_box_and_mask_ious_that_rec_and_res_count(tiny_synthetic,
                                                                           tmp_path):
    task = task_of("pbrec")
    cfg = task.experiment_class("pbrec")()
    dataset = task.dataset(cfg, tiny_synthetic, "val")
    records = []
    for k, s in enumerate(dataset.samples):
        box, mask = dataset.instances.gt_box(s), dataset.instances.gt_mask(s)
        if k == 0:  # half a box off, and no mask
            box, mask = box + (box[2] - box[0]) / 2 * np.array([1, 0, 1, 0]), mask & False
        records.append({"ref_id": s.ref_id, "sent_id": s.sent_id, "box": box.tolist(),
                        "score": 1.0, "mask": encode_rle(mask)})
    write_referring_predictions(tmp_path / "predictions.json", records)
    cases = list(task.cases(dataset, tmp_path))
    assert len(cases) == len(dataset.samples) > 1
    first = dataset.samples[0]
    shifted = np.array(records[0]["box"])
    assert cases[0].ious == [("box", pytest.approx(box_iou(shifted, dataset.instances.gt_box(
        first))[0])), ("mask", 0.0)]
    assert all(c.ious == [("box", 1.0), ("mask", 1.0)] for c in cases[1:])
    assert cases[0].truth.expression == first.sentence and cases[0].truth.score is None
    scores = task.score(dataset, tmp_path).scores()["all"]
    assert scores["rec"]["acc@0.5"] == pytest.approx(np.mean([c.ious[0][1] >= 0.5 for c in cases]))
    assert scores["res"]["miou"] == pytest.approx(np.mean([c.ious[1][1] for c in cases]))
