"""Output paths and devices: every command checks them before the work and fails in one line."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from groundkit.cli import main

SAMPLE = Path(__file__).parents[1] / "fixtures" / "coco_sample"
PROC = "/proc/groundkit-test/out"  # /proc refuses new folders, even to root
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def one_line_error(capsys, command: str, after_progress: bool = False) -> str:
    """The error line; the only line on stderr unless the work ran (its progress bar)."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert after_progress or len(lines) == 1, captured.err
    assert lines[-1].startswith(f"groundkit {command}: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[-1]


@pytest.fixture
def afile(tmp_path):
    path = tmp_path / "afile"
    path.write_text("keep me")
    return path


def score_panoptic_args(out: str | Path) -> list[str]:
    """``score panoptic`` of the ground truth against itself (cheap, every sample found)."""
    return ["score", "panoptic", "--gt-json", str(SAMPLE / "panoptic.json"), "--gt-dir",
            str(SAMPLE / "panoptic"), "--pred-json", str(SAMPLE / "panoptic.json"), "--pred-dir",
            str(SAMPLE / "panoptic"), "--json", str(out)]


# --- score ----------------------------------------------------------------------------------------

def test_score_json_onto_a_folder_is_refused_before_scoring(tmp_path, capsys):
    assert main(score_panoptic_args(tmp_path)) == 2
    line = one_line_error(capsys, "score")
    assert line.endswith(f"{tmp_path}: --json: expected a file here, and this is a folder")
    assert "PQ" not in capsys.readouterr().out  # nothing was scored


@pytest.mark.parametrize("where", ["proc", "under_file"])
def test_score_json_where_no_file_can_be(tmp_path, afile, capsys, where):
    out = {"proc": PROC + ".json", "under_file": afile / "scores.json"}[where]
    assert main(score_panoptic_args(out)) == 2
    line = one_line_error(capsys, "score")
    assert f"{out}: --json: " in line
    assert afile.read_text() == "keep me"


def test_score_json_to_a_full_device_is_a_write_error(dev_full, capsys):
    assert main(score_panoptic_args(dev_full)) == 2
    line = one_line_error(capsys, "score")
    assert line == f"groundkit score: error: {dev_full}: could not write it: no space left on device"


def test_score_json_to_dev_null_works(capsys):
    assert main(score_panoptic_args(os.devnull)) == 0
    assert os.path.exists(os.devnull) and not os.path.isfile(os.devnull)


# --- generate -------------------------------------------------------------------------------------

@pytest.mark.parametrize("where, message", [
    ("proc", f"{PROC}: --out: cannot make this folder: "),
    ("file", "afile: --out: expected a folder here, and this is a file"),
    ("under_file", "afile/sub: --out: cannot make this folder: "),
])
def test_generate_out_that_cannot_be_a_folder(tmp_path, afile, capsys, where, message):
    out = {"proc": PROC, "file": afile, "under_file": afile / "sub"}[where]
    assert main(["generate", "--out", str(out), "--train", "1", "--val", "0", "--test", "0",
                 "--size", "32"]) == 2
    assert message in one_line_error(capsys, "generate")
    assert afile.read_text() == "keep me"


# --- predict --------------------------------------------------------------------------------------

@pytest.fixture
def never_loaded(monkeypatch):
    """Fails the test if a command loads a model (the checks must come first)."""
    from groundkit.engine import tasks

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr(tasks.Task, "load", load)


@pytest.mark.parametrize("where", ["proc", "file", "under_file"])
def test_predict_checks_out_before_the_model_runs(tmp_path, afile, capsys, never_loaded, where):
    out = {"proc": PROC, "file": afile, "under_file": afile / "sub"}[where]
    assert main(["predict", "--image", "missing.png", "--caption", "[a circle]", "--out",
                 str(out), "--device", "cpu"]) == 2
    assert f"{out}: --out: " in one_line_error(capsys, "predict")


@pytest.mark.parametrize("device, message", [
    ("banana", "device 'banana': not a device; expected cpu, cuda, cuda:N (N = 0, 1, ...) or mps"),
    ("tpu", "device 'tpu': "),
    ("cuda:-1", "device 'cuda:-1': "),
])
def test_predict_unknown_device(tmp_path, capsys, never_loaded, device, message):
    assert main(["predict", "--image", "x.png", "--caption", "[a]", "--out", str(tmp_path / "o"),
                 "--device", device]) == 2
    assert message in one_line_error(capsys, "predict")


def test_predict_cuda_without_cuda(tmp_path, capsys, never_loaded):
    if torch.cuda.is_available():
        device = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU
        expected = f"there are {torch.cuda.device_count()} CUDA devices"
    else:
        device, expected = "cuda", "device 'cuda': CUDA is not available ("
    assert main(["predict", "--image", "x.png", "--caption", "[a]", "--out", str(tmp_path / "o"),
                 "--device", device]) == 2
    assert expected in one_line_error(capsys, "predict")


# --- evaluate -------------------------------------------------------------------------------------

@pytest.mark.parametrize("option, where, message", [
    ("--pred-out", "proc", f"{PROC}: --pred-out: cannot make this folder"),
    ("--pred-out", "file", "afile: --pred-out: expected a folder here, and this is a file"),
    ("--json", "dir", ": --json: expected a file here, and this is a folder"),
    ("--json", "proc", f"{PROC}: --json: cannot make"),
    ("--plot", "dir", ": --plot: expected a file here, and this is a folder"),
    ("--plot", "under_file", "afile/c.png: --plot: its folder"),
])
def test_evaluate_checks_outputs_before_the_model_runs(tmp_path, afile, capsys, never_loaded,
                                                       option, where, message):
    out = {"proc": PROC, "file": afile, "dir": tmp_path, "under_file": afile / "c.png"}[where]
    assert main(["evaluate", "--checkpoint", "any", "--data", str(tmp_path), option,
                 str(out)]) == 2
    assert message in one_line_error(capsys, "evaluate")
    assert afile.read_text() == "keep me"


def test_evaluate_default_plot_beside_json_is_checked_too(tmp_path, capsys, never_loaded):
    (tmp_path / "s_recall_curves.png").mkdir()
    assert main(["evaluate", "--checkpoint", "any", "--data", str(tmp_path), "--json",
                 str(tmp_path / "s.json")]) == 2
    assert "s_recall_curves.png: the recall curves (--plot): expected a file" in \
        one_line_error(capsys, "evaluate")


def test_evaluate_bad_device(tmp_path, capsys, never_loaded):
    assert main(["evaluate", "--checkpoint", "any", "--data", str(tmp_path), "--device",
                 "banana"]) == 2
    assert "device 'banana': not a device" in one_line_error(capsys, "evaluate")


def test_evaluate_json_to_a_full_device(tiny_ppmn_checkpoint, tiny_synthetic, dev_full, tmp_path,
                                        capsys):
    assert main(["evaluate", "--checkpoint", str(tiny_ppmn_checkpoint), "--data",
                 str(tiny_synthetic), "--max-items", "1", "--device", "cpu", "--json",
                 str(dev_full), "--plot", str(tmp_path / "c.png")]) == 2
    line = one_line_error(capsys, "evaluate", after_progress=True)
    assert line == f"groundkit evaluate: error: {dev_full}: could not write it: no space left on device"


# --- train ----------------------------------------------------------------------------------------

@pytest.fixture
def never_trained(monkeypatch):
    from groundkit.engine import tasks

    def train(*args, **kwargs):
        raise AssertionError("training started before trainer.out_dir was checked")

    monkeypatch.setattr(tasks.Task, "train", train)


@pytest.mark.parametrize("where, message", [
    ("proc", f"{PROC}: trainer.out_dir: cannot make this folder"),
    ("file", "afile: trainer.out_dir: expected a folder here, and this is a file"),
])
def test_train_checks_out_dir_before_the_work(tmp_path, afile, capsys, never_trained, where,
                                              message):
    (tmp_path / "c.yaml").write_text("model_type: ppmn\n")
    out = {"proc": PROC, "file": afile}[where]
    assert main(["train", "--config", str(tmp_path / "c.yaml"), f"trainer.out_dir={out}"]) == 2
    assert message in one_line_error(capsys, "train")


def test_train_bad_device(tmp_path, capsys, never_trained):
    (tmp_path / "c.yaml").write_text("model_type: ppmn\n")
    assert main(["train", "--config", str(tmp_path / "c.yaml"),
                 f"trainer.out_dir={tmp_path / 'run'}", "trainer.device=banana"]) == 2
    assert "device 'banana': not a device" in one_line_error(capsys, "train")


def test_train_size_bound_is_a_config_error(tmp_path, capsys, never_trained):
    (tmp_path / "c.yaml").write_text("model_type: ppmn\n")
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "model.hidden_dim=1000000"]) == 2
    line = one_line_error(capsys, "train")
    assert "key 'model.hidden_dim': 1000000 is out of range" in line and "16384" in line


# --- demo -----------------------------------------------------------------------------------------

def test_demo_out_that_cannot_be_a_folder(tmp_path, afile, capsys, monkeypatch):
    from groundkit.commands import demo

    def ensure(*args, **kwargs):
        raise AssertionError("the benchmark was made before --out was checked")

    monkeypatch.setattr(demo, "ensure_benchmark", ensure)
    assert main(["demo", "--data", str(tmp_path / "data"), "--out", str(afile)]) == 2
    assert "afile: --out: expected a folder here" in one_line_error(capsys, "demo")
    assert main(["demo", "--data", str(tmp_path / "data"), "--out", PROC]) == 2
    assert f"{PROC}: --out: cannot make this folder" in one_line_error(capsys, "demo")


# --- a checkpoint header that would allocate without bound -----------------------------------------

def test_a_checkpoint_header_with_a_huge_width_is_a_config_error(tiny_ppmn_checkpoint, tmp_path,
                                                                 capsys):
    from groundkit.engine.checkpoint import load_checkpoint, save_checkpoint

    state, meta = load_checkpoint(tiny_ppmn_checkpoint)
    meta["config"]["model"]["hidden_dim"] = 10**6  # would allocate until the machine gives out
    bad = save_checkpoint(tmp_path / "huge", state, meta["config"], meta["model_type"])
    assert main(["evaluate", "--checkpoint", str(bad), "--data", str(tmp_path), "--device",
                 "cpu"]) == 2
    line = one_line_error(capsys, "evaluate")
    assert "key 'model.hidden_dim': 1000000 is out of range" in line and "16384" in line


# --- serve, demo --train: the device and the run folder, before anything starts --------------------

def test_serve_bad_device_before_binding(capsys, monkeypatch):
    pytest.importorskip("fastapi")
    from groundkit.app import server

    def bind(*args, **kwargs):
        raise AssertionError("bound a port before --device was checked")

    monkeypatch.setattr(server, "bind", bind)
    assert main(["serve", "--device", "banana", "--port", "0"]) == 2
    assert "device 'banana': not a device" in one_line_error(capsys, "serve")


def test_demo_train_checks_its_run_dir_first(tmp_path, afile, capsys, monkeypatch):
    from groundkit.commands import demo

    def ensure(*args, **kwargs):
        raise AssertionError("the benchmark was made before --run-dir was checked")

    monkeypatch.setattr(demo, "ensure_benchmark", ensure)
    assert main(["demo", "--train", "--data", str(tmp_path / "data"), "--out",
                 str(tmp_path / "report"), "--run-dir", str(afile)]) == 2
    assert "afile: --run-dir: expected a folder here" in one_line_error(capsys, "demo")
    assert not (tmp_path / "report").exists()


def test_score_png_plot_onto_a_folder(tmp_path, capsys):
    assert main(["score", "png", "--narratives", str(SAMPLE / "png_narratives.json"),
                 "--panoptic-json", str(SAMPLE / "panoptic.json"), "--panoptic-dir",
                 str(SAMPLE / "panoptic"), "--pred", str(tmp_path / "missing.json"),
                 "--plot", str(tmp_path)]) == 2
    assert f"{tmp_path}: --plot: expected a file here" in one_line_error(capsys, "score")
