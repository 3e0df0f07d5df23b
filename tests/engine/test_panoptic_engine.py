"""Panoptic train / evaluate / predict from the CLI on a tiny generated split."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import groundkit
from groundkit.cli import main
from groundkit.data.formats import load_panoptic, read_segment_png
from groundkit.data.panoptic_dataset import PanopticSegDataset
from groundkit.data.transforms import ResizeConfig
from groundkit.engine.checkpoint import load_checkpoint, save_checkpoint
from groundkit.engine.panoptic import PanopticTask
from groundkit.errors import ConfigError
from groundkit.metrics.files import score_panoptic_files
from groundkit.metrics.report import pq_table

TINY = [*PanopticTask().tiny_overrides("panoptic"), "trainer.batch_size=3", "eval.batch_size=4"]


@pytest.fixture(scope="module")
def trained(tiny_synthetic, tmp_path_factory):
    """A tiny panoptic model trained one epoch by ``groundkit train``: its folder."""
    config = Path(groundkit.__file__).parent / "configs" / "panoptic_synthetic.yaml"
    run = tmp_path_factory.mktemp("panoptic") / "run"
    assert main(["train", "--config", str(config), f"data.root={tiny_synthetic}",
                 f"trainer.out_dir={run}", *TINY]) == 0
    return run


def test_train_saves_a_checkpoint_with_val_pq_and_category_names(trained):
    _, meta = load_checkpoint(trained, expected_model_type="panoptic")
    assert meta["meta"]["epoch"] == 1
    metrics = meta["meta"]["metrics"]
    assert {"pq", "pq_things", "pq_stuff"} <= set(metrics) and 0 <= metrics["pq"] <= 1
    names = {c["id"]: c["name"] for c in meta["config"]["categories"]}
    assert names[1] == "circle" and names[101] == "sky"


def test_evaluate_prints_the_pq_of_the_files_it_writes(trained, tiny_synthetic, tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(["evaluate", "--checkpoint", str(trained), "--data", str(tiny_synthetic),
                 "--split", "val", "--json", str(tmp_path / "scores.json"), "--pred-out", str(out),
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    ann = tiny_synthetic / "annotations"
    again = score_panoptic_files(ann / "panoptic_val.json", ann / "panoptic_val",
                                 out / "panoptic_val.json", out / "panoptic_val")
    assert pq_table(again).splitlines()[2:] == printed.splitlines()[2:5]
    saved = json.loads((tmp_path / "scores.json").read_text())
    for group in ("All", "Things", "Stuff"):
        assert saved[group]["pq"] == again[group]["pq"]  # exactly: the same files
    pred = load_panoptic(out / "panoptic_val.json", out / "panoptic_val")
    assert len(pred.annotations) == 4
    first = next(iter(pred.annotations.values()))
    assert read_segment_png(out / "panoptic_val" / first.file_name).shape == (64, 64)


def test_evaluate_merge_option_switches_the_inference_merge(trained, tiny_synthetic, tmp_path,
                                                            monkeypatch):
    from groundkit.models.panoptic import model as panoptic_model
    used = []
    original = panoptic_model.heuristic_merge
    monkeypatch.setattr(panoptic_model, "heuristic_merge",
                        lambda *a, **k: used.append(1) or original(*a, **k))
    base = ["evaluate", "--checkpoint", str(trained), "--data", str(tiny_synthetic), "--split",
            "val", "--device", "cpu"]
    assert main(base) == 0 and not used
    assert main(base + ["--merge", "heuristic"]) == 0 and len(used) == 4


def test_evaluate_first_items_scores_only_those(trained, tiny_synthetic, tmp_path):
    task = PanopticTask()
    model, cfg = task.load(trained)
    dataset = PanopticSegDataset(tiny_synthetic, "val", ResizeConfig(64, 64), max_items=2,
                                 thing_ids=cfg.model.thing_ids, stuff_ids=cfg.model.stuff_ids)
    scores = task.evaluate(model, dataset, 2, progress=False, pred_dir=tmp_path).scores()
    pred = load_panoptic(tmp_path / "panoptic_val.json", tmp_path / "panoptic_val")
    assert sorted(pred.annotations) == dataset.image_ids
    assert 0 <= scores["All"]["pq"] <= 1


def test_predict_writes_overlay_ids_and_segments(trained, tiny_synthetic, tmp_path):
    image = sorted((tiny_synthetic / "images" / "val").iterdir())[0]
    out = tmp_path / "pred"
    assert main(["predict", "--task", "panoptic", "--checkpoint", str(trained), "--image",
                 str(image), "--out", str(out), "--device", "cpu"]) == 0
    result = json.loads((out / "result.json").read_text())
    ids = read_segment_png(out / "panoptic.png")
    assert ids.shape == (64, 64) == (result["height"], result["width"])
    listed = {s["id"] for s in result["segments_info"]}
    assert set(np.unique(ids).tolist()) - {0} == listed
    for s in result["segments_info"]:
        assert s["area"] == int((ids == s["id"]).sum()) > 0 and isinstance(s["category"], str)
        # the keys of COCO panoptic prediction files, and two for people
        assert set(s) == {"id", "category_id", "area", "bbox", "iscrowd", "score", "isthing",
                          "category"}
        rows, cols = np.nonzero(ids == s["id"])
        assert s["bbox"] == [cols.min(), rows.min(), np.ptp(cols) + 1, np.ptp(rows) + 1]
    assert (out / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_grounding_checkpoint_is_not_a_panoptic_model(tmp_path):
    save_checkpoint(tmp_path / "ppmn", {"w": torch.zeros(1)}, {"model": {}}, "ppmn")
    with pytest.raises(ConfigError, match="expected a 'panoptic' model"):
        PanopticTask().load(tmp_path / "ppmn")
