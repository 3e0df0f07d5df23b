"""groundkit demo end to end at toy size: data, training, evaluation, the report folder."""
import json

import pytest

from groundkit.cli import main
from groundkit.commands import demo
from groundkit.engine.tasks import task_of
from groundkit.errors import InputError


def test_demo_generates_trains_and_writes_a_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "DEMO_SIZES", {"train": 4, "val": 3, "test": 1})
    data, report = tmp_path / "data", tmp_path / "report"
    tiny = [*task_of("ppmn").tiny_overrides("ppmn"), "trainer.batch_size=2"]
    code = main(["demo", "--data", str(data), "--out", str(report), "--train-images", "3",
                 "--run-dir", str(tmp_path / "run"), "--overlays", "2", *tiny])
    assert code == 0
    assert (data / "annotations" / "png_coco_val.json").exists()
    assert len(list((data / "images" / "train").iterdir())) == 3
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["config"]["data"]["max_items"] == 3
    scores = json.loads((report / "scores.json").read_text())
    assert set(scores) >= {"overall", "things", "stuff", "singulars", "plurals"}
    assert len(json.loads((report / "predictions.json").read_text())) == 3
    for picture in ("recall_curves.png", "overlays.png"):
        assert (report / picture).read_bytes()[:4] == b"\x89PNG"
    assert "AR" in (report / "README.md").read_text()
    assert str(report.resolve()) in capsys.readouterr().out


def test_a_smaller_benchmark_is_extended_with_the_same_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "DEMO_SIZES", {"train": 2, "val": 1, "test": 1})
    demo.ensure_benchmark(tmp_path)
    first = {p.name: p.read_bytes() for p in (tmp_path / "images" / "train").iterdir()}
    demo.ensure_benchmark(tmp_path)
    assert "already there" in capsys.readouterr().out
    monkeypatch.setattr(demo, "DEMO_SIZES", {"train": 3, "val": 1, "test": 1})
    demo.ensure_benchmark(tmp_path)
    assert "generating" in capsys.readouterr().out
    now = {p.name: p.read_bytes() for p in (tmp_path / "images" / "train").iterdir()}
    assert len(now) == 3 and all(now[name] == data for name, data in first.items())


def test_task_picks_the_first_demo_model_of_a_family():
    assert demo.demo_model(None, "refer") == "pbrec"
    assert demo.demo_model(None, "panoptic") == "panoptic"
    assert demo.demo_model(None, None) == "ppmn" and demo.demo_model("drmn", "grounding") == "drmn"
    for model, task in ((None, "x"), ("ppmn", "referring")):
        with pytest.raises(InputError):
            demo.demo_model(model, task)
