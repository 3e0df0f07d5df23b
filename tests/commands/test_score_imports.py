"""`groundkit score png|panoptic|rec|res` as whole commands: each runs in a fresh interpreter without
ever importing torch (a metric runs on files without it, shared/DESIGN.md), and writes the scores
of the in-process scorers; and the parallel PQ equals the serial one to the last bit."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import groundkit
from groundkit.cli import main
from groundkit.data.formats import load_panoptic, read_scores, write_scores
from groundkit.errors import FormatError
from groundkit.metrics import files

# pycocotools' decoder trips a NumPy 2 deprecation on every call; the result is right
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _load_score_cases():
    path = Path(__file__).with_name("score_cases.py")  # by path: tests are imported in importlib mode
    spec = importlib.util.spec_from_file_location("groundkit_tests_score_cases", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cases = _load_score_cases()

# The command as the `groundkit` entry point runs it, then a look at what it imported.
RUN_COMMAND = """import runpy, sys
sys.argv = ["groundkit", *sys.argv[1:]]
try:
    runpy.run_module("groundkit.cli", run_name="__main__")
except SystemExit as e:
    if e.code:
        raise
heavy = sorted(m for m in ("torch", "transformers", "matplotlib") if m in sys.modules)
assert not heavy, f"imported {heavy}"
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("score")
    assert main(["generate", "--out", str(root), "--seed", "0", "--train", "0", "--val", "6",
                 "--test", "0"]) == 0
    cases.write_predictions(root, root / "predictions")
    return root


def in_process_scores(data: Path, task: str) -> dict:
    """The scores of ``task`` by the scorer the command calls, in this process."""
    ann, pred = data / "annotations", data / "predictions"
    if task == "png":
        return files.score_png_files(ann / "png_coco_val.json", ann / "panoptic_val.json",
                                     ann / "panoptic_val", pred / "grounding.json").scores()
    if task == "panoptic":
        return files.score_panoptic_files(ann / "panoptic_val.json", ann / "panoptic_val",
                                          pred / "panoptic.json", pred / "panoptic")
    return files.score_referring_files(task, data / "refcoco" / "refs(unc).p",
                                       data / "refcoco" / "instances.json", "val",
                                       pred / "referring.json")[0]


@pytest.mark.parametrize("task", cases.TASKS)
def test_score_command_imports_no_torch_and_scores_as_in_process(data, task, tmp_path):
    out, expected = tmp_path / "scores.json", tmp_path / "expected.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(groundkit.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", RUN_COMMAND, "score",
                           *cases.score_arguments(data, data / "predictions", task),
                           "--json", str(out)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    write_scores(expected, in_process_scores(data, task))  # the same JSON rounding of floats
    assert read_scores(out) == read_scores(expected)


def test_parallel_pq_equals_serial_pq(data, monkeypatch):
    ann, pred = data / "annotations", data / "predictions"
    gt = load_panoptic(ann / "panoptic_val.json", ann / "panoptic_val")
    predicted = load_panoptic(pred / "panoptic.json", pred / "panoptic", reference=gt)
    serial = files.score_panoptic(gt, predicted, workers=1)
    monkeypatch.setattr(files, "PARALLEL_MIN_IMAGES", 2)  # 6 images: 2 workers, 3 runs of 2
    assert files.score_panoptic(gt, predicted, workers=2) == serial
    assert 0 < serial["All"]["pq"] < 1


def test_a_bad_png_is_named_from_a_worker(data, monkeypatch, tmp_path):
    ann, pred = data / "annotations", data / "predictions"
    gt = load_panoptic(ann / "panoptic_val.json", ann / "panoptic_val")
    predicted = load_panoptic(pred / "panoptic.json", pred / "panoptic", reference=gt)
    broken = tmp_path / "pred"
    broken.mkdir()
    for png in (pred / "panoptic").iterdir():
        (broken / png.name).write_bytes(png.read_bytes())
    last = gt.annotations[list(gt.annotations)[-1]].file_name
    (broken / last).write_bytes(b"not a png")
    predicted.png_dir = broken
    monkeypatch.setattr(files, "PARALLEL_MIN_IMAGES", 2)
    with pytest.raises(FormatError, match=f"{last}: cannot read the segment PNG"):
        files.score_panoptic(gt, predicted, workers=2)
