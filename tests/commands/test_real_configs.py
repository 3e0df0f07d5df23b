"""The papers' configs end to end on real COCO files: ``groundkit train --config <shipped name>``
(ppmn_png, drmn_png, panoptic_coco, pbrec_refcoco) shrunk by command-line overrides only (a
ResNet-18 8 wide, the session's MiniLM instead of BERT base, 128 px, no initial weights, 2 steps),
then ``groundkit evaluate`` on the fixture's two COCO images, then ``groundkit score`` on the
prediction files it wrote: the same scores. Every other key (splits, file layout, schedules,
heads, rounds, class ids) is the real config's."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from groundkit.cli import main
from groundkit.config import SHIPPED_CONFIGS, read_yaml

SAMPLE = Path(__file__).parents[1] / "fixtures" / "coco_sample"

# What makes each real config small; nothing else is overridden.
BACKBONE = ["model.backbone.depth=18", "model.backbone.base_width=8",
            "model.backbone.fpn_channels=16", "model.backbone.weights=null"]
TRAIN = ["trainer.max_steps=2", "trainer.batch_size=2", "trainer.num_workers=0",
         "trainer.quiet=true", "trainer.tensorboard=false", "trainer.device=cpu",
         "eval.batch_size=2"]
RESIZE_128 = ["data.resize.short_side=128", "data.resize.max_size=128"]
GROUNDING = [*BACKBONE, *RESIZE_128, "model.text_encoder=null", "model.neck_channels=16",
             "model.hidden_dim=16", "model.heads=2", "model.ffn_dim=32"]
SHRINK = {
    "ppmn_png": [*GROUNDING, "model.top_pixels=8"],
    "drmn_png": [*GROUNDING, "model.top_k=8", "model.points=2"],
    "panoptic_coco": [*BACKBONE, *RESIZE_128, "model.decoder_channels=8",
                      "model.affinity_channels=8", "model.mask_channels=8", "model.mask_convs=1",
                      "model.detector_convs=1"],
    # The fixture's refs have no train split (val, testA, testB): train on val, watch testA.
    "pbrec_refcoco": [*BACKBONE, "data.input_size=128", "model.text_encoder=null", "model.dim=16",
                      "model.heads=2", "model.ffn_dim=32", "model.mask_dim=8",
                      "model.detector_convs=1", "data.train_split=val", "data.val_split=testA"],
}
# The split `groundkit evaluate` predicts, as the real data names it.
EVAL_SPLIT = {"ppmn_png": "val2017", "drmn_png": "val2017", "panoptic_coco": "val2017",
              "pbrec_refcoco": "testB"}


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    """The fixture's two COCO images in the layout the real configs expect: COCO 2017 splits
    (images/<split>/, annotations/panoptic_<split>.json and its PNGs, png_coco_<split>.json),
    RefCOCO's refcoco/ files and its images under images/train2014/. Both 2017 splits hold the
    same two images (the fixture is only two)."""
    root = tmp_path_factory.mktemp("coco")
    annotations = root / "annotations"
    annotations.mkdir()
    for split in ("train2017", "val2017"):
        shutil.copytree(SAMPLE / "images", root / "images" / split)
        shutil.copytree(SAMPLE / "panoptic", annotations / f"panoptic_{split}")
        shutil.copy(SAMPLE / "panoptic.json", annotations / f"panoptic_{split}.json")
        shutil.copy(SAMPLE / "png_narratives.json", annotations / f"png_coco_{split}.json")
    shutil.copytree(SAMPLE / "images", root / "images" / "train2014")
    shutil.copytree(SAMPLE / "refcoco", root / "refcoco")
    return root


@pytest.fixture
def session_encoder(monkeypatch, text_encoder):
    """Every model takes the session's MiniLM instead of loading one again."""
    for where in ("groundkit.models.grounding.TextEncoder",
                  "groundkit.models.referring.pbrec.TextEncoder"):
        monkeypatch.setattr(where, lambda *a, **kw: text_encoder)


def test_the_fixture_copy_is_complete():
    files = {p.relative_to(SAMPLE).as_posix() for p in SAMPLE.rglob("*") if p.is_file()}
    assert files == {"panoptic.json", "png_narratives.json", "refcoco/instances.json",
                     "refcoco/refs(unc).p", "images/000000142238.jpg", "images/000000439180.jpg",
                     "panoptic/000000142238.png", "panoptic/000000439180.png"}


@pytest.mark.parametrize("name", sorted(SHRINK))
def test_a_real_config_trains_evaluates_and_its_files_score(name, coco_root, session_encoder,
                                                            tmp_path, capsys):
    run, pred = tmp_path / "run", tmp_path / "pred"
    assert main(["train", "--config", name, f"data.root={coco_root}", f"trainer.out_dir={run}",
                 *SHRINK[name], *TRAIN]) == 0
    saved = json.loads((run / "config.json").read_text())["config"]
    check_real_settings_kept(name, saved)

    split = EVAL_SPLIT[name]
    assert main(["evaluate", "--checkpoint", str(run), "--data", str(coco_root), "--split", split,
                 "--device", "cpu", "--batch-size", "2", "--pred-out", str(pred),
                 "--json", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    capsys.readouterr()
    check_predictions_made(name, pred, split)
    assert rescored(name, coco_root, split, pred, tmp_path) == expected(name, scores)


def check_predictions_made(name: str, pred: Path, split: str) -> None:
    """The files hold a prediction for every item, at the original image sizes (427 x 640 and
    360 x 640), not only a well-formed empty list."""
    sizes = {142238: [427, 640], 439180: [360, 640]}
    if name == "panoptic_coco":
        records = json.loads((pred / f"panoptic_{split}.json").read_text())["annotations"]
        assert len(records) == 2 and all(r["segments_info"] for r in records)
        assert all((pred / f"panoptic_{split}" / r["file_name"]).is_file() for r in records)
        return
    records = json.loads((pred / "predictions.json").read_text())
    if name == "pbrec_refcoco":
        assert [(r["ref_id"], len(r["box"]), r["mask"]["size"]) for r in records] == [
            (3, 4, sizes[439180])]
        return
    assert len(records) == 2 and all(r["phrases"] for r in records)
    assert all(p["mask"]["size"] == sizes[int(r["image_id"])] for r in records for p in r["phrases"])


def check_real_settings_kept(name: str, saved: dict) -> None:
    """The run's saved config is the shipped YAML's wherever the test did not override a key."""
    shipped = read_yaml(SHIPPED_CONFIGS / f"{name}.yaml")
    overridden = {o.split("=")[0] for o in [*SHRINK[name], *TRAIN]} | {"data.root",
                                                                        "trainer.out_dir"}
    for dotted, value in leaves(shipped):
        if dotted not in overridden:
            found = saved
            for part in dotted.split("."):
                found = found[part]
            assert found == value, (name, dotted)


def leaves(d: dict, prefix: str = ""):
    for key, value in d.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def rescored(name: str, root: Path, split: str, pred: Path, tmp_path: Path) -> dict:
    """``groundkit score`` on the files ``groundkit evaluate`` wrote."""
    out = tmp_path / "rescored.json"
    ann = root / "annotations"
    if name == "panoptic_coco":
        args = ["panoptic", "--gt-json", str(ann / f"panoptic_{split}.json"),
                "--gt-dir", str(ann / f"panoptic_{split}"),
                "--pred-json", str(pred / f"panoptic_{split}.json"),
                "--pred-dir", str(pred / f"panoptic_{split}")]
    elif name == "pbrec_refcoco":
        result = {}
        for task in ("rec", "res"):
            assert main(["score", task, "--refs", str(root / "refcoco" / "refs(unc).p"),
                         "--instances", str(root / "refcoco" / "instances.json"), "--split", split,
                         "--pred", str(pred / "predictions.json"), "--json", str(out)]) == 0
            result[task] = json.loads(out.read_text())
            out.unlink()
        return result
    else:
        args = ["png", "--narratives", str(ann / f"png_coco_{split}.json"),
                "--panoptic-json", str(ann / f"panoptic_{split}.json"),
                "--panoptic-dir", str(ann / f"panoptic_{split}"),
                "--pred", str(pred / "predictions.json")]
    assert main(["score", *args, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def expected(name: str, scores: dict) -> dict:
    """The part of ``groundkit evaluate``'s scores that ``groundkit score`` reports."""
    if name == "pbrec_refcoco":
        assert scores["all"]["rec"]["n"] == 1   # testB: one sentence of one ref
        return {"rec": scores["all"]["rec"], "res": scores["all"]["res"]}
    if name == "panoptic_coco":
        assert scores["All"]["n"] > 0
    else:
        assert scores["overall"]["n"] > 0
    return scores


@pytest.mark.parametrize("name", ["vlnms_fc_refcoco", "matcher_refcoco"])
def test_two_stage_referring_trains_on_a_panoptic_coco_model_and_scores(name, coco_root,
                                                                        text_encoder, monkeypatch,
                                                                        tmp_path):
    """VL-NMS_FC's and the matcher's real configs over a (shrunk, untrained) panoptic_coco
    model's features and candidates: delta = 0 because an untrained detector scores every class
    about 0.01; 160 px because the shrunk FPN's GroupNorm has one channel per group, which a
    1 x 1 P7 (128 px, one image at a time) cannot normalise."""
    from groundkit.config import config_to_dict, load_config
    from groundkit.engine.checkpoint import save_checkpoint
    from groundkit.engine.tasks import task_of

    for where in ("groundkit.models.referring.vlnms_model.TextEncoder",
                  "groundkit.models.referring.matcher_model.TextEncoder",
                  "groundkit.engine.referring.TextEncoder"):
        monkeypatch.setattr(where, lambda *a, **kw: text_encoder)
    task = task_of("panoptic")
    cfg = load_config(task.experiment_class("panoptic"), SHIPPED_CONFIGS / "panoptic_coco.yaml",
                      SHRINK["panoptic_coco"])
    torch.manual_seed(0)
    detector = tmp_path / "panoptic"
    save_checkpoint(detector, task.build_model(cfg), config_to_dict(cfg), "panoptic")

    run, pred = tmp_path / "run", tmp_path / "pred"
    shrink = ["model.visual_dim=16"] + (["model.dim=16"] if name == "matcher_refcoco" else [])
    assert main(["train", "--config", name, f"data.root={coco_root}", *shrink,
                 f"model.proposal_source={detector}", "model.delta=0.0",
                 "data.input_size=160", "data.train_split=val", "data.val_split=testA",
                 f"trainer.out_dir={run}", *TRAIN]) == 0
    assert main(["evaluate", "--checkpoint", str(run), "--data", str(coco_root), "--split", "testB",
                 "--device", "cpu", "--pred-out", str(pred),
                 "--json", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    records = json.loads((pred / "predictions.json").read_text())
    if name == "vlnms_fc_refcoco":
        assert [(r["ref_id"], len(r["proposals"])) for r in records] == [(3, 10)]   # top_k 10
    else:   # ground-truth boxes: every object of the image is a proposal
        assert [r["ref_id"] for r in records] == [3] and len(records[0]["box"]) == 4
    assert rescored("pbrec_refcoco", coco_root, "testB", pred, tmp_path) == expected(
        "pbrec_refcoco", scores)


def test_the_real_configs_hold_the_papers_settings():
    """The numbers methods.md and the papers give, read back from the loaded configs."""
    from groundkit.config import load_config
    from groundkit.engine.tasks import task_of

    def load(name):
        model_type = read_yaml(SHIPPED_CONFIGS / f"{name}.yaml")["model_type"]
        return load_config(task_of(model_type).experiment_class(model_type),
                           SHIPPED_CONFIGS / f"{name}.yaml")

    for name in ("ppmn_png", "drmn_png"):
        cfg = load(name)
        b = cfg.model.backbone
        assert (b.depth, b.fpn_channels, b.freeze, cfg.model.freeze_text) == (101, 256, True, True)
        assert b.stride_in_1x1   # detectron2's Panoptic FPN layout
        assert (cfg.data.resize.short_side, cfg.data.resize.max_size) == (800, 1333)
        assert (cfg.data.train_split, cfg.data.val_split) == ("train2017", "val2017")
        assert (cfg.trainer.optimizer, cfg.trainer.lr) == ("adam", 1e-4)
    ppmn, drmn = load("ppmn_png"), load("drmn_png")
    assert (ppmn.model.rounds, ppmn.model.top_pixels, ppmn.trainer.epochs, ppmn.trainer.batch_size,
            ppmn.trainer.lr_milestones, ppmn.trainer.lr_gamma) == (3, 200, 14, 12, (10, 12), 0.5)
    assert (drmn.model.encoder_layers, drmn.model.encoder_levels, drmn.trainer.epochs,
            drmn.trainer.lr_milestones) == (2, 4, 20, ())
    pan = load("panoptic_coco")
    assert (len(pan.model.thing_ids), len(pan.model.stuff_ids), pan.model.backbone.depth) == (80, 53, 50)
    categories = json.loads((SAMPLE / "panoptic.json").read_text())["categories"]
    assert pan.model.thing_ids == tuple(sorted(c["id"] for c in categories if c["isthing"]))
    assert pan.model.stuff_ids == tuple(sorted(c["id"] for c in categories if not c["isthing"]))
    assert (pan.model.semantic_weight, pan.model.panoptic_weight, pan.model.test_score_thresh,
            pan.model.mask_head) == (0.2, 0.1, 0.75, True)
    rec = load("pbrec_refcoco")
    m = rec.model
    assert (rec.data.input_size, m.grid_stride, m.layers, m.dim, m.heads, m.ffn_dim, m.dropout,
            m.top_k) == (640, 32, 6, 256, 8, 1024, 0.1, 12)
    assert (rec.trainer.optimizer, rec.trainer.schedule, rec.trainer.epochs,
            rec.trainer.batch_size) == ("adamw", "cosine", 15, 64)
    nms = load("vlnms_fc_refcoco").model
    assert (nms.variant, nms.delta, nms.gamma, nms.nms_thresh, nms.top_k) == ("fc", 0.05, 0.4, 0.3, 10)
    matcher = load("matcher_refcoco")
    assert (matcher.model.neighbours, matcher.trainer.lr, matcher.data.input_size) == (5, 4e-4, 1024)


def test_an_unknown_config_name_fails_and_lists_the_shipped_ones(capsys):
    assert main(["train", "--config", "ppmn_pgn"]) == 2
    err = capsys.readouterr().err
    assert "no config 'ppmn_pgn'" in err and "did you mean 'ppmn_png'" in err
    assert "pbrec_refcoco" in err and "panoptic_coco" in err
