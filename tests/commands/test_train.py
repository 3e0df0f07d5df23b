"""``groundkit train`` stopped by a signal: a one-line message and the shell's exit code."""
from __future__ import annotations

import importlib.util
import signal
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from groundkit.cli import main
from groundkit.engine import Trainer, TrainerConfig, seed_everything
from groundkit.engine import tasks as engine_tasks

TINY_TASK = Path(__file__).parents[1] / "engine" / "tiny_task.py"


@pytest.fixture(scope="module")
def tiny():
    spec = importlib.util.spec_from_file_location("groundkit_tests_tiny_task_cli", TINY_TASK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class TinyExperiment:
    model_type: str = "tiny"
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


class SignalledTask:
    """Trains the tiny task; the model sends itself ``signum`` during step 3 (of 5 per epoch)."""

    def __init__(self, tiny, signum):
        self.tiny, self.signum = tiny, signum

    def experiment_class(self, model_type):
        return TinyExperiment

    def train(self, cfg, resume=False):
        seed_everything(0)
        model = self.tiny.SignalAt(3, self.signum) if self.signum else self.tiny.TinyModel()
        trainer = Trainer(model, self.tiny.NoisyRegression(n=10), self.tiny.collate, cfg.trainer,
                          model_type="tiny")
        return trainer.fit(resume=resume)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_exits_with_the_shells_code_and_one_line(tiny, tmp_path, monkeypatch, capsys,
                                                               signum, code):
    monkeypatch.setattr(engine_tasks, "task_of", lambda *a, **k: SignalledTask(tiny, signum))
    (tmp_path / "tiny.yaml").write_text("model_type: tiny\n")
    out = tmp_path / "run"
    args = ["train", "--config", str(tmp_path / "tiny.yaml"), f"trainer.out_dir={out}",
            "trainer.epochs=2", "trainer.batch_size=2", "trainer.quiet=true",
            "trainer.tensorboard=false", "trainer.device=cpu"]
    assert main(args) == code
    name = signal.Signals(signum).name
    assert capsys.readouterr().err == (f"groundkit train: stopped by {name} after step 3 (epoch 1, "
                                       f"step 3 of 5); the training state is saved in {out}: "
                                       f"continue with --resume\n")
    monkeypatch.setattr(engine_tasks, "task_of", lambda *a, **k: SignalledTask(tiny, 0))
    assert main(args + ["--resume"]) == 0
    assert capsys.readouterr().out == f"trained tiny; checkpoint in {out}\n"


def test_ctrl_c_outside_training_is_one_line_and_130(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine_tasks, "task_of", interrupted)
    (tmp_path / "tiny.yaml").write_text("model_type: tiny\n")
    assert main(["train", "--config", str(tmp_path / "tiny.yaml")]) == 130
    assert capsys.readouterr().err == "groundkit train: interrupted\n"


def test_an_empty_val_split_is_refused_before_training(tmp_path, capsys):
    """A folder without val images (e.g. `groundkit generate --val 0`) used to fail only at the
    evaluation after the last step, losing the run; now before the first step."""
    from groundkit.data.synthetic import generate_benchmark

    root = tmp_path / "noval"
    generate_benchmark(root, seed=1, sizes={"train": 2, "val": 0, "test": 0}, image_size=64,
                       progress=False)
    out = tmp_path / "run"
    assert main(["train", "--config", "pbrec_synthetic", f"data.root={root}", "data.input_size=64",
                 "data.max_items=null", f"trainer.out_dir={out}", "trainer.device=cpu"]) == 2
    assert "data.val_split: the split 'val'" in capsys.readouterr().err
    assert not (out / "model.safetensors").exists()


def test_threads_flag_reaches_the_trainer_config(tiny, tmp_path, monkeypatch):
    seen = {}

    class RecordingTask(SignalledTask):
        def train(self, cfg, resume=False):
            seen["threads"] = cfg.trainer.threads
            return {}

    monkeypatch.setattr(engine_tasks, "task_of", lambda *a, **k: RecordingTask(tiny, 0))
    (tmp_path / "tiny.yaml").write_text("model_type: tiny\n")
    config = ["train", "--config", str(tmp_path / "tiny.yaml"), f"trainer.out_dir={tmp_path}/r"]
    assert main(config + ["--threads", "1"]) == 0 and seen["threads"] == 1
    assert main(config) == 0 and seen["threads"] is None
