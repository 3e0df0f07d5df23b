"""`groundkit score` end to end on the real-format sample, with predictions made by perturbing the
ground truth, against numbers computed literally from the raw files."""
import importlib.util
import json
import pickle
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from scipy import ndimage

from groundkit.cli import main
from groundkit.data.formats import (
    grounding_record,
    load_narratives,
    write_grounding_predictions,
    write_referring_predictions,
    write_segment_png,
)
from groundkit.metrics.png_ar import png_average_recall
from groundkit.ops.masks import encode_rle
from groundkit.structures import Category, Segment

SAMPLE = Path(__file__).parents[1] / "fixtures" / "coco_sample"
PANOPTIC_JSON = json.loads((SAMPLE / "panoptic.json").read_text())
# pycocotools' decoder trips a NumPy 2 deprecation on every call; the result is right
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def literal():
    path = Path(__file__).parents[1] / "metrics" / "literal.py"
    spec = importlib.util.spec_from_file_location("groundkit_tests_metrics_literal", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def raw_ids(image_id):
    """The segment id map, decoded literally from the RGB PNG."""
    ann = next(a for a in PANOPTIC_JSON["annotations"] if a["image_id"] == image_id)
    rgb = Image.open(SAMPLE / "panoptic" / ann["file_name"]).convert("RGB")
    rgb = np.array(rgb, dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def perturb(mask, k):
    """Five kinds of prediction, by k: exact, dilated, eroded, shifted, none."""
    return [mask, ndimage.binary_dilation(mask, iterations=4),
            ndimage.binary_erosion(mask, iterations=3), np.roll(mask, 25, axis=1), None][k % 5]


# --- png --------------------------------------------------------------------------------------

def test_score_png(tmp_path, capsys):
    narratives = load_narratives(SAMPLE / "png_narratives.json")
    categories = {c["id"]: c for c in PANOPTIC_JSON["categories"]}
    segments = {s["id"]: s for a in PANOPTIC_JSON["annotations"] for s in a["segments_info"]}
    records, ious, is_thing, nseg, k = [], [], [], [], 0
    for n in narratives:
        ids = raw_ids(n.image_id)
        indices, masks = [], []
        for i, u in enumerate(n.utterances):
            if not (u.noun and u.segment_ids):
                continue
            gt = np.zeros(ids.shape, bool)
            for s in u.segment_ids:
                gt |= ids == s
            pred = perturb(gt, k)
            k += 1
            if pred is not None:
                indices.append(i)
                masks.append(pred)
            p = np.zeros_like(gt) if pred is None else pred
            ious.append((p & gt).sum() / (p | gt).sum())
            is_thing.append(categories[segments[u.segment_ids[-1]]["category_id"]]["isthing"] == 1)
            nseg.append(len(u.segment_ids))
        indices.append(0)  # a prediction for a non-grounded utterance is ignored
        masks.append(np.ones(ids.shape, bool))
        records.append(grounding_record(n, indices, np.array(masks), [0.5] * len(indices)))
    pred_path, out = tmp_path / "pred.json", tmp_path / "scores.json"
    write_grounding_predictions(pred_path, records)

    rc = main(["score", "png", "--narratives", str(SAMPLE / "png_narratives.json"),
               "--panoptic-json", str(SAMPLE / "panoptic.json"), "--panoptic-dir",
               str(SAMPLE / "panoptic"), "--pred", str(pred_path), "--json", str(out),
               "--plot", str(tmp_path / "curves.png")])
    assert rc == 0
    expected = png_average_recall(np.array(ious), np.array(is_thing), np.array(nseg))
    assert json.loads(out.read_text()) == expected
    assert {k: v["n"] for k, v in expected.items()} == {
        "overall": 12, "things": 5, "stuff": 7, "singulars": 8, "plurals": 4}
    printed = capsys.readouterr()
    assert f"overall    {100 * expected['overall']['ar']:6.2f}" in printed.out
    assert "2 samples have no prediction" in printed.err
    assert Image.open(tmp_path / "curves.png").format == "PNG"


def test_score_png_with_the_ppmn_protocol(tmp_path, capsys):
    """--protocol ppmn: IoUs on the stride-4 grid of the input resized by --ppmn-size (the
    protocol's own module is tested against the official procedure in tests/metrics)."""
    from groundkit.metrics.png_protocol import ppmn_mask_ious, resized_size

    narratives = load_narratives(SAMPLE / "png_narratives.json")
    records, ious = [], []
    for k, n in enumerate(narratives):
        ids = raw_ids(n.image_id)
        indices = [i for i, u in enumerate(n.utterances) if u.noun and u.segment_ids]
        gts = np.array([np.isin(ids, n.utterances[i].segment_ids) for i in indices])
        preds = np.array([perturb(g, 1 + j % 3) for j, g in enumerate(gts)])
        records.append(grounding_record(n, indices, preds, [0.5] * len(indices)))
        ious.extend(ppmn_mask_ious(preds, gts, resized_size(*ids.shape, 400, 600)))
    pred_path, out = tmp_path / "pred.json", tmp_path / "scores.json"
    write_grounding_predictions(pred_path, records)
    args = ["score", "png", "--narratives", str(SAMPLE / "png_narratives.json"),
            "--panoptic-json", str(SAMPLE / "panoptic.json"), "--panoptic-dir",
            str(SAMPLE / "panoptic"), "--pred", str(pred_path), "--json", str(out)]
    assert main([*args, "--protocol", "ppmn", "--ppmn-size", "400,600"]) == 0
    ppmn = json.loads(out.read_text())
    assert ppmn["overall"]["ar"] == pytest.approx(np.mean(ious), abs=2e-5)  # AR ~ mean IoU
    assert "PPMN protocol: short side 400, long side <= 600" in capsys.readouterr().out
    assert main(args) == 0
    assert json.loads(out.read_text())["overall"]["ar"] != ppmn["overall"]["ar"]
    assert "IoU at the original image resolution" in capsys.readouterr().out
    assert main([*args, "--protocol", "ppmn", "--ppmn-size", "800"]) == 2
    assert "--ppmn-size" in capsys.readouterr().err


def test_score_png_rejects_a_mask_of_the_wrong_size(tmp_path, capsys):
    n = load_narratives(SAMPLE / "png_narratives.json")[0]
    pred_path = tmp_path / "pred.json"
    record = grounding_record(n, [5], np.zeros((1, 4, 4), bool), [1.0])
    write_grounding_predictions(pred_path, [record])
    rc = main(["score", "png", "--narratives", str(SAMPLE / "png_narratives.json"),
               "--panoptic-json", str(SAMPLE / "panoptic.json"), "--panoptic-dir",
               str(SAMPLE / "panoptic"), "--pred", str(pred_path)])
    assert rc == 2
    assert "phrase 5 'grass'" in capsys.readouterr().err


# --- panoptic ---------------------------------------------------------------------------------

def perturbed_panoptic(tmp_path):
    """Prediction PNGs + a JSON with only ``annotations`` (as many tools write), from the GT:
    new ids, eroded things, a dropped segment, two persons merged, a stuff class swapped, a
    shift."""
    rng = np.random.default_rng(0)
    annotations, pred_maps = [], {}
    for k, ann in enumerate(PANOPTIC_JSON["annotations"]):
        ids = raw_ids(ann["image_id"])
        pred = np.zeros_like(ids)
        infos = []
        persons = [s["id"] for s in ann["segments_info"]
                   if s["category_id"] == 1 and not s["iscrowd"]]
        for j, s in enumerate(ann["segments_info"]):
            mask = ids == s["id"]
            if j == 2:
                continue  # dropped: FN, its pixels VOID
            if s["category_id"] == 1 and j % 2:
                mask = ndimage.binary_erosion(mask, iterations=2)
            new_id = int(rng.integers(1, 2**24))
            pred[mask] = new_id
            if s["id"] == persons[-1]:  # merged into the previous person
                pred[mask] = infos[-1]["id"]
                continue
            category = {187: 193, 193: 187}.get(s["category_id"], s["category_id"]) if k else \
                s["category_id"]
            infos.append({"id": new_id, "category_id": category})
        if k:
            pred = np.roll(pred, 12, axis=0)
        write_segment_png(tmp_path / "pred" / ann["file_name"], pred)
        annotations.append({"image_id": ann["image_id"], "file_name": ann["file_name"],
                            "segments_info": infos})
        pred_maps[ann["image_id"]] = (pred, infos)
    (tmp_path / "pred.json").write_text(json.dumps({"annotations": annotations}))
    return pred_maps


def test_score_panoptic(tmp_path, literal):
    pred_maps = perturbed_panoptic(tmp_path)
    out = tmp_path / "scores.json"
    rc = main(["score", "panoptic", "--gt-json", str(SAMPLE / "panoptic.json"), "--gt-dir",
               str(SAMPLE / "panoptic"), "--pred-json", str(tmp_path / "pred.json"), "--pred-dir",
               str(tmp_path / "pred"), "--json", str(out)])
    assert rc == 0
    stats = defaultdict(lambda: [0, 0, 0, 0.0])
    for ann in PANOPTIC_JSON["annotations"]:
        pred, infos = pred_maps[ann["image_id"]]
        gt_segments = [Segment(s["id"], s["category_id"], s["area"], iscrowd=bool(s["iscrowd"]))
                       for s in ann["segments_info"]]
        literal.literal_image(raw_ids(ann["image_id"]), gt_segments, pred,
                              [Segment(i["id"], i["category_id"]) for i in infos], stats)
    categories = [Category(c["id"], c["name"], c["isthing"] == 1)
                  for c in PANOPTIC_JSON["categories"]]
    scores = json.loads(out.read_text())
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        expected = literal.literal_average(stats, categories, isthing)
        assert scores[name]["n"] == expected["n"]
        for key in ("pq", "sq", "rq"):
            assert scores[name][key] == pytest.approx(expected[key], abs=1e-12)
    assert 0 < scores["All"]["pq"] < 1 and scores["per_class"]["1"]["fn"] > 0


def test_score_panoptic_needs_every_image(tmp_path, capsys):
    perturbed_panoptic(tmp_path)
    data = json.loads((tmp_path / "pred.json").read_text())
    data["annotations"] = data["annotations"][:1]
    (tmp_path / "pred.json").write_text(json.dumps(data))
    rc = main(["score", "panoptic", "--gt-json", str(SAMPLE / "panoptic.json"), "--gt-dir",
               str(SAMPLE / "panoptic"), "--pred-json", str(tmp_path / "pred.json"), "--pred-dir",
               str(tmp_path / "pred")])
    assert rc == 2 and "no prediction for image 439180" in capsys.readouterr().err


# --- referring --------------------------------------------------------------------------------

def referring_case(tmp_path, split):
    """Predictions: the GT box shifted by a fraction of its width, the GT mask eroded or dilated;
    the literal IoUs of each."""
    refs = pickle.loads((SAMPLE / "refcoco" / "refs(unc).p").read_bytes(), encoding="latin1")
    instances = json.loads((SAMPLE / "refcoco" / "instances.json").read_text())
    anns = {a["id"]: a for a in instances["annotations"]}
    records, box_ious, inter, union = [], [], [], []
    # the refer API's rule for "test"; an exact match for the others used here
    selected = [r for r in refs
                if (split in r["split"] if split == "test" else r["split"] == split)]
    for r in selected:
        x, y, w, h = anns[r["ann_id"]]["bbox"]
        rle = anns[r["ann_id"]]["segmentation"]
        gt = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
        for j, sent_id in enumerate(r["sent_ids"]):
            dx = w * [0.1, 0.5, 0.2][(r["ref_id"] + 2 * j) % 3]  # IoU (1 - f) / (1 + f)
            box = [x + dx, y, x + w + dx, y + h]
            iw, ih = max(0.0, w - dx), h
            box_ious.append(iw * ih / (2 * w * h - iw * ih))
            mask = ndimage.binary_erosion(gt, iterations=2) if j else ndimage.binary_dilation(gt)
            inter.append((mask & gt).sum())
            union.append((mask | gt).sum())
            records.append({"ref_id": r["ref_id"], "sent_id": sent_id, "box": box, "score": 1.0,
                            "mask": encode_rle(mask)})
    write_referring_predictions(tmp_path / "pred.json", records)
    return box_ious, np.array(inter), np.array(union)


def run_referring(task, tmp_path, split):
    out = tmp_path / "scores.json"
    rc = main(["score", task, "--refs", str(SAMPLE / "refcoco" / "refs(unc).p"), "--instances",
               str(SAMPLE / "refcoco" / "instances.json"), "--split", split, "--pred",
               str(tmp_path / "pred.json"), "--json", str(out)])
    assert rc == 0
    return json.loads(out.read_text())


def test_score_rec(tmp_path):
    box_ious, _, _ = referring_case(tmp_path, "test")
    scores = run_referring("rec", tmp_path, "test")
    assert scores == {"acc@0.5": sum(i >= 0.5 for i in box_ious) / len(box_ious), "n": 3}
    assert 0 < scores["acc@0.5"] < 1


def test_score_res(tmp_path):
    _, inter, union = referring_case(tmp_path, "val")
    scores = run_referring("res", tmp_path, "val")
    ious = inter / union
    assert scores["n"] == 2
    assert scores["oiou"] == pytest.approx(inter.sum() / union.sum(), abs=1e-15)
    assert scores["miou"] == pytest.approx(ious.mean(), abs=1e-15)
    for x in (0.5, 0.6, 0.7, 0.8, 0.9):
        assert scores[f"pr@{x}"] == np.mean(ious >= x)


def test_score_res_checks_a_mask_size_before_decoding(tmp_path, capsys, monkeypatch):
    # 100 bytes declaring a 60000 x 60000 mask: decoded, it would take 3.6 GB
    referring_case(tmp_path, "val")
    records = json.loads((tmp_path / "pred.json").read_text())
    records[0]["mask"] = {"size": [60000, 60000], "counts": [60000 * 60000]}
    (tmp_path / "pred.json").write_text(json.dumps(records))
    import groundkit.ops.masks as masks

    decode = masks._decode

    def small_decode(compressed):
        sizes = [c["size"] for c in (compressed if isinstance(compressed, list) else [compressed])]
        assert all(h * w <= 10**6 for h, w in sizes), f"decoded a mask of size {sizes}"
        return decode(compressed)

    monkeypatch.setattr(masks, "_decode", small_decode)
    rc = main(["score", "res", "--refs", str(SAMPLE / "refcoco" / "refs(unc).p"), "--instances",
               str(SAMPLE / "refcoco" / "instances.json"), "--split", "val", "--pred",
               str(tmp_path / "pred.json")])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"ref {records[0]['ref_id']}, sentence {records[0]['sent_id']}" in err
    assert "field 'mask'" in err and "[60000, 60000]" in err
