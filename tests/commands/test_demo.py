"""groundkit demo: the bundled models' page on a tiny generated val split, the folders it refuses,
and the train-from-scratch recipe at toy size."""
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from groundkit.cli import main
from groundkit.commands import demo
from groundkit.config import config_to_dict, load_config
from groundkit.engine.checkpoint import save_checkpoint
from groundkit.engine.tasks import FAMILIES, task_of, task_of_checkpoint
from groundkit.errors import InputError
from groundkit.hub import bundled_names


class Page(HTMLParser):
    """What a test needs of a page: the files it references and the tables of each section."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.links: list[str] = []
        self.tables: dict[str, int] = {}
        self.section = ""
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "h2":
            self.section = attrs.get("id", "")
        if tag == "table" and self.section:
            self.tables[self.section] = self.tables.get(self.section, 0) + 1
        for key in ("src", "href"):
            if tag in ("img", "a") and attrs.get(key) and not attrs[key].startswith("#"):
                self.links.append(attrs[key])


def check_page(path: Path) -> Page:
    page = Page(path.read_text(encoding="utf-8"))
    assert page.links, "the page references no file"
    for link in page.links:
        assert "://" not in link, f"{link}: the page must work offline"
        assert (path.parent / link).is_file(), f"{path} references {link}, which is not there"
    return page


def test_the_demo_runs_every_bundled_model_and_writes_a_page_that_explains_itself(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "report"
    assert main(["demo", "--data", str(data), "--out", str(out), "--val-images", "4",
                 "--gallery", "2"]) == 0
    assert len(list((data / "images" / "val").iterdir())) == 4
    assert not (data / "images" / "train").exists()  # the val split only
    page = check_page(out / "index.html")
    families = {task_of_checkpoint(name).name for name in bundled_names()}
    assert families >= {"grounding", "panoptic"}
    for family in families:
        assert page.tables.get(family, 0) >= 1, f"no table in the {family} section"
    text = (out / "index.html").read_text()
    assert "paper, on real data" in text and "not comparable" in text and "59.4" in text
    for name in bundled_names():
        assert len(list((out / name / "gallery").glob("*.png"))) == 2
        assert json.loads((out / name / "scores.json").read_text())
    assert "ppmn-synthetic/recall_curves.png" in page.links
    assert "train/index.html" in page.links  # the recipe from random weights, not run yet
    assert "demo --train" in (out / "train" / "index.html").read_text()
    assert str((out / "index.html").resolve()) in capsys.readouterr().out
    # a second run finds the split it made (4 >= 1 images: used whole) and writes its page
    assert main(["demo", "--data", str(data), "--out", str(out), "--gallery", "1",
                 "--task", "pan", "--val-images", "1"]) == 0
    assert "already there" in capsys.readouterr().out
    assert Page((out / "index.html").read_text()).tables.keys() == {"panoptic"}


def test_the_demo_refuses_a_folder_it_did_not_make(tiny_synthetic, tmp_path, capsys):
    before = sorted(p for p in tiny_synthetic.rglob("*"))
    out = tmp_path / "report"
    # the benchmark of another seed and size: not the demo's, even though it is complete
    assert main(["demo", "--data", str(tiny_synthetic), "--out", str(out)]) == 2
    assert "not a synthetic benchmark made by groundkit demo" in capsys.readouterr().err
    assert sorted(p for p in tiny_synthetic.rglob("*")) == before and not out.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="never writes into a folder it did not make"):
        demo.ensure_benchmark(mine, {"val": 1})
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    with pytest.raises(InputError, match="not a synthetic benchmark"):
        demo.ensure_benchmark(mine / "notes.txt", {"val": 1})


def test_a_smaller_benchmark_is_extended_with_the_same_files(tmp_path, capsys):
    demo.ensure_benchmark(tmp_path, {"train": 2, "val": 1, "test": 1})
    first = {p.name: p.read_bytes() for p in (tmp_path / "images" / "train").iterdir()}
    demo.ensure_benchmark(tmp_path, {"train": 2, "val": 1})
    assert "already there" in capsys.readouterr().out
    demo.ensure_benchmark(tmp_path, {"train": 3, "val": 1, "test": 1})
    assert "generating" in capsys.readouterr().out
    now = {p.name: p.read_bytes() for p in (tmp_path / "images" / "train").iterdir()}
    assert len(now) == 3 and all(now[name] == data for name, data in first.items())
    # without its record (an earlier demo's folder) it is still recognised by its images
    (tmp_path / demo.MARKER).unlink()
    assert demo.demo_benchmark_sizes(tmp_path) == {"train": 3, "val": 1, "test": 1}


def test_bundled_checkpoints_in_family_order_and_filtered():
    found = demo.bundled_checkpoints()
    assert sorted(found) == bundled_names()
    order = [list(FAMILIES).index(task_of_checkpoint(name).name) for name in found]
    assert order == sorted(order)
    assert demo.bundled_checkpoints("drmn") == ["drmn-synthetic"]
    assert demo.bundled_checkpoints(task="pan") == ["panoptic-synthetic"]
    if "pbrec-synthetic" not in bundled_names():
        with pytest.raises(InputError, match="demo --train --task refer"):
            demo.bundled_checkpoints(task="refer")


def test_training_options_need_train(tmp_path, capsys):
    for extra in (["--train-images", "3"], ["--run-dir", "x"], ["trainer.epochs=1"]):
        assert main(["demo", "--data", str(tmp_path / "d"), *extra]) == 2
        assert "add --train" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_a_referring_checkpoint_gets_its_section_table_and_gallery(tiny_synthetic, text_encoder,
                                                                   tmp_path, monkeypatch):
    task = task_of("pbrec")
    cfg = load_config(task.experiment_class("pbrec"), None,
                      [*task.tiny_overrides("pbrec"), "model.num_classes=9",
                       f"data.root={tiny_synthetic}"])
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny_pbrec"
    save_checkpoint(checkpoint, task.build_model(cfg, text_encoder=text_encoder),
                    config_to_dict(cfg), "pbrec")
    monkeypatch.setattr("groundkit.models.referring.pbrec.TextEncoder",
                        lambda *a, **kw: text_encoder)
    out = tmp_path / "report"
    page = check_page(demo.write_demo_page([(checkpoint, "a tiny untrained model")],
                                           tiny_synthetic, out, 3))
    assert page.tables.get("referring", 0) >= 1
    assert "PBREC-MT" in (out / "index.html").read_text()
    assert len(list((out / "tiny_pbrec" / "gallery").glob("*.png"))) == 3


def test_train_generates_trains_and_writes_its_page(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "DEMO_SIZES", {"train": 4, "val": 3, "test": 1})
    data, report = tmp_path / "data", tmp_path / "report"
    tiny = [*task_of("ppmn").tiny_overrides("ppmn"), "trainer.batch_size=2"]
    code = main(["demo", "--train", "--data", str(data), "--out", str(report), "--train-images",
                 "3", "--run-dir", str(tmp_path / "run"), "--gallery", "2", *tiny])
    assert code == 0
    assert (data / "annotations" / "png_coco_val.json").exists()
    assert len(list((data / "images" / "train").iterdir())) == 3
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["config"]["data"]["max_items"] == 3
    run = report / "train" / "run"
    scores = json.loads((run / "scores.json").read_text())
    assert set(scores) >= {"overall", "things", "stuff", "singulars", "plurals"}
    assert len(json.loads((run / "predictions.json").read_text())) == 3
    assert (run / "recall_curves.png").read_bytes()[:4] == b"\x89PNG"
    page = check_page(report / "train" / "index.html")
    assert page.tables.get("grounding", 0) >= 1
    assert "from random weights" in (report / "train" / "index.html").read_text()
    assert str((report / "train" / "index.html").resolve()) in capsys.readouterr().out


def test_task_picks_the_first_demo_model_of_a_family():
    assert demo.demo_model(None, "refer") == "pbrec"
    assert demo.demo_model(None, "panoptic") == "panoptic"
    assert demo.demo_model(None, None) == "ppmn" and demo.demo_model("drmn", "grounding") == "drmn"
    for model, task in ((None, "x"), ("ppmn", "referring")):
        with pytest.raises(InputError):
            demo.demo_model(model, task)
