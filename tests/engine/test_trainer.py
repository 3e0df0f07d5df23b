from __future__ import annotations

import errno
import json
import logging
import os
import re
import signal
import subprocess
import sys

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from groundkit.engine import (
    Trainer,
    TrainerConfig,
    checkpoint,
    load_checkpoint,
    load_train_state,
    read_metrics,
    seed_everything,
)
from groundkit.errors import ConfigError, FormatError, TrainingInterrupted, WriteError

SETTINGS = dict(epochs=4, batch_size=5, lr=1e-2, text_lr=3e-3, quiet=True, log_every=1,
                tensorboard=False, seed=7)


def make_trainer(tiny, out_dir, evaluate_fn=None, model_type="tiny", model=None,
                 **overrides) -> Trainer:
    seed_everything(123)  # the initial weights; resumed runs overwrite them from the state
    config = TrainerConfig(**{**SETTINGS, "out_dir": str(out_dir), **overrides})
    return Trainer(model or tiny.TinyModel(), tiny.NoisyRegression(n=22), tiny.collate, config,
                   evaluate_fn=evaluate_fn, model_type=model_type)


def loss_curve(out_dir) -> list[tuple[int, float, float, float]]:
    return [(r["step"], r["loss"], r["mse"], r["lr"])
            for r in read_metrics(out_dir) if "loss" in r]


def final_params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("schedule, kill_at", [
    ({"lr_milestones": (1, 3), "lr_gamma": 0.5}, 10),           # killed after epoch 2 of 5 steps
    ({"schedule": "cosine", "warmup_steps": 3, "optimizer": "adamw", "weight_decay": 0.01,
      "clip_grad_norm": 0.5}, 7),                                # killed inside epoch 2
    ({"num_workers": 1, "lr_milestones": (1, 2)}, 15),          # items drawn in a worker
])
def test_resumed_run_follows_the_uninterrupted_loss_curve(tiny, tmp_path, schedule, kill_at):
    full = make_trainer(tiny, tmp_path / "full", **schedule)
    full.fit()
    first = make_trainer(tiny, tmp_path / "resumed", max_steps=kill_at, **schedule)
    first.fit()
    assert first.step == kill_at
    second = make_trainer(tiny, tmp_path / "resumed", **schedule)
    second.fit(resume=True)

    expected = loss_curve(tmp_path / "full")
    assert [s for s, *_ in expected] == list(range(1, 21))
    assert loss_curve(tmp_path / "resumed") == expected  # exactly equal, step by step
    for name, value in final_params(full).items():
        assert torch.equal(final_params(second)[name], value), name
    assert len({lr for *_, lr in expected}) > 2  # the schedule did move the lr


def test_resume_drops_records_logged_after_the_checkpoint(tiny, tmp_path):
    make_trainer(tiny, tmp_path, epochs=2, max_steps=5).fit()
    with open(tmp_path / "metrics.jsonl", "a") as f:  # what a killed run logged past its state
        f.write(json.dumps({"step": 7, "epoch": 1, "loss": 99.0}) + "\n")
    make_trainer(tiny, tmp_path, epochs=2).fit(resume=True)
    steps = [r["step"] for r in read_metrics(tmp_path) if "loss" in r]
    assert steps == list(range(1, 11))


def test_resume_without_state_starts_fresh_and_checks_model_type(tiny, tmp_path):
    make_trainer(tiny, tmp_path / "a", epochs=1).fit()
    make_trainer(tiny, tmp_path / "b", epochs=1).fit(resume=True)
    assert loss_curve(tmp_path / "a") == loss_curve(tmp_path / "b")
    with pytest.raises(ConfigError, match=r"training state of a 'tiny' model, cannot resume a "
                                          r"'other' model"):
        make_trainer(tiny, tmp_path / "a", model_type="other").fit(resume=True)


def test_evaluation_is_logged_and_cannot_change_training(tiny, tmp_path):
    calls = []

    def evaluate(model):
        assert not model.training and not torch.is_grad_enabled()
        calls.append(torch.rand(3))  # draws from the global RNG, which training also uses
        return {"score": len(calls)}

    make_trainer(tiny, tmp_path / "eval", epochs=3, eval_every=2, evaluate_fn=evaluate).fit()
    make_trainer(tiny, tmp_path / "plain", epochs=3).fit()
    assert loss_curve(tmp_path / "eval") == loss_curve(tmp_path / "plain")
    evals = [r for r in read_metrics(tmp_path / "eval") if "eval/score" in r]
    assert [(r["step"], r["epoch"], r["eval/score"]) for r in evals] == [(10, 1, 1.0), (15, 2, 2.0)]


def test_param_groups_frozen_parameters_and_checkpoint(tiny, tmp_path):
    trainer = make_trainer(tiny, tmp_path, epochs=2, lr_milestones=(1,), lr_gamma=0.5)
    frozen_before = trainer.model.frozen.weight.clone()
    trainer.fit()
    records = [r for r in read_metrics(tmp_path) if "loss" in r]
    assert (records[0]["lr"], records[0]["lr/text"]) == (1e-2, 3e-3)
    assert (records[-1]["lr"], records[-1]["lr/text"]) == (5e-3, 1.5e-3)  # halved at epoch 1
    assert all(p is not trainer.model.frozen.weight
               for g in trainer.optimizer.param_groups for p in g["params"])
    assert torch.equal(trainer.model.frozen.weight, frozen_before)

    state, meta = load_checkpoint(tmp_path, expected_model_type="tiny")
    assert meta["meta"]["step"] == 10 and meta["config"]["trainer"]["epochs"] == 2
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(state[name], value)


def test_init_from_starts_from_the_weights_with_a_fresh_optimizer_and_schedule(tiny, tmp_path):
    base = make_trainer(tiny, tmp_path / "base", epochs=2, lr_milestones=(1,))
    base.fit()
    tuned = make_trainer(tiny, tmp_path / "tuned", epochs=2, lr_milestones=(1,),
                         init_from=str(tmp_path / "base"))
    for name, value in final_params(base).items():  # another seed's weights were replaced
        assert torch.equal(tuned.model.state_dict()[name], value), name
    assert tuned.step == 0 and not tuned.optimizer.state
    tuned.fit(resume=True)  # no training state in its out_dir: init_from still holds
    records = [r for r in read_metrics(tmp_path / "tuned") if "loss" in r]
    assert records[0]["step"] == 1 and records[0]["lr"] == 1e-2  # the schedule starts afresh
    fresh = [r for r in read_metrics(tmp_path / "base") if "loss" in r]
    assert records[0]["loss"] < fresh[0]["loss"]  # it starts where the base run ended


def test_init_from_rejects_another_model_type_or_other_shapes(tiny, tmp_path):
    make_trainer(tiny, tmp_path / "base", epochs=1).fit()
    with pytest.raises(ConfigError, match="a 'tiny' checkpoint; this run trains a 'other' model"):
        make_trainer(tiny, tmp_path / "x", model_type="other", init_from=str(tmp_path / "base"))
    state = final_params(make_trainer(tiny, tmp_path / "y"))
    state["body.weight"] = torch.zeros(16, 4)
    state["extra"] = state.pop("head.bias")
    checkpoint.save_checkpoint(tmp_path / "other", state, {}, "tiny")
    with pytest.raises(ConfigError) as error:
        make_trainer(tiny, tmp_path / "z", init_from=str(tmp_path / "other"))
    message = str(error.value)
    assert "missing keys (1): head.bias" in message and "unexpected keys (1): extra" in message
    assert "body.weight (16, 4) vs (8, 4)" in message
    with pytest.raises(ConfigError, match="no checkpoint 'nope'"):
        make_trainer(tiny, tmp_path / "z", init_from="nope")


def test_model_contract_and_config_errors(tiny, tmp_path):
    class NoTotal(tiny.TinyModel):
        def forward(self, batch):
            return {"mse": super().forward(batch)["mse"]}

    class NaNLoss(tiny.TinyModel):
        def forward(self, batch):
            return {"loss": super().forward(batch)["loss"] * float("nan")}

    with pytest.raises(TypeError, match=r"with the total under 'loss'; got dict with keys \['mse'"):
        make_trainer(tiny, tmp_path, model=NoTotal()).fit()
    with pytest.raises(FloatingPointError, match="step 1: loss is nan"):
        make_trainer(tiny, tmp_path, model=NaNLoss()).fit()
    with pytest.raises(ConfigError, match=r"trainer.batch_size: expected a value > 0, got 0"):
        TrainerConfig(batch_size=0)
    with pytest.raises(ConfigError, match=r"lr_milestones: expected increasing epochs"):
        TrainerConfig(lr_milestones=(12, 10))
    with pytest.raises(ConfigError, match="give no batch of 50"):
        make_trainer(tiny, tmp_path, batch_size=50, drop_last=True)


class ConvTiny(torch.nn.Module):
    """The tiny regression through a 3x3 convolution, for the channels-last option."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 6, 3, padding=1)
        self.out = torch.nn.Linear(6, 1)

    def forward(self, batch):
        x = torch.relu(self.conv(batch["x"].view(-1, 2, 1, 2)))
        pred = self.out(x.mean((2, 3))).squeeze(-1)
        mse = ((pred - batch["y"]) ** 2).mean()
        return {"loss": mse, "mse": mse}


def conv_trainer(tiny, out_dir, **overrides) -> Trainer:
    seed_everything(0)  # the same initial weights for every run
    return make_trainer(tiny, out_dir, model=ConvTiny(), lr_milestones=(2,), **overrides)


def test_channels_last_trains_the_same_and_resumes_exactly(tiny, tmp_path):
    plain = conv_trainer(tiny, tmp_path / "plain")
    plain.fit()
    fast = conv_trainer(tiny, tmp_path / "fast", channels_last=True)
    assert fast.model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not fast.model.conv.weight.is_contiguous()
    fast.fit()
    want = loss_curve(tmp_path / "plain")
    got = loss_curve(tmp_path / "fast")
    assert [s for s, *_ in got] == [s for s, *_ in want]
    assert [loss for _, loss, *_ in got] == pytest.approx([loss for _, loss, *_ in want], rel=1e-4)
    conv_trainer(tiny, tmp_path / "resumed", channels_last=True, max_steps=7).fit()
    conv_trainer(tiny, tmp_path / "resumed", channels_last=True).fit(resume=True)
    assert loss_curve(tmp_path / "resumed") == got
    state, _ = load_checkpoint(tmp_path / "fast")
    assert torch.equal(state["conv.weight"], fast.model.conv.weight.contiguous())


def test_fused_adam_trains_as_the_per_tensor_loop_does(tiny, tmp_path):
    loop = conv_trainer(tiny, tmp_path / "loop", fused_optimizer=False)
    fused = conv_trainer(tiny, tmp_path / "fused", fused_optimizer=True)
    assert not loop.optimizer.defaults["fused"] and fused.optimizer.defaults["fused"]
    loop.fit()
    fused.fit()
    want, got = loss_curve(tmp_path / "loop"), loss_curve(tmp_path / "fused")
    assert [loss for _, loss, *_ in got] == pytest.approx([loss for _, loss, *_ in want], rel=1e-4)


def test_a_resumed_fused_adam_keeps_channels_last_moments_in_their_parameters_layout(
        tiny, tmp_path):
    conv_trainer(tiny, tmp_path / "run", channels_last=True, max_steps=3).fit()
    resumed = conv_trainer(tiny, tmp_path / "run", channels_last=True, max_steps=4)
    resumed.fit(resume=True)
    weight = resumed.model.conv.weight
    for moment in ("exp_avg", "exp_avg_sq"):
        assert resumed.optimizer.state[weight][moment].stride() == weight.stride()


def test_threads_sets_torch_intra_op_threads(tiny, tmp_path):
    before = torch.get_num_threads()
    try:
        make_trainer(tiny, tmp_path, threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match="trainer.threads: expected null or >= 1, got 0"):
        TrainerConfig(threads=0)


# ----------------------------------------------------------------------------- interruptions


def records(out_dir) -> list[dict]:
    """Every record of the log but its wall-clock time."""
    return [{k: v for k, v in r.items() if k != "time"} for r in read_metrics(out_dir)]


def weight_sum(model) -> dict[str, float]:  # a deterministic "evaluation"
    return {"w": float(model.body.weight.sum())}


def signalling(tiny, step, signum):
    seed_everything(123)  # the initial weights of make_trainer
    return tiny.SignalAt(step, signum)


@pytest.mark.parametrize("signum, stop_at, where, overrides", [
    # inside epoch 2; losses of step 7 not logged yet (log_every=3): the state keeps them
    (signal.SIGTERM, 7, "epoch 2, step 2 of 5", {"log_every": 3}),
    # the last step of epoch 2: its evaluation and checkpoint run, then the stop
    (signal.SIGINT, 10, "end of epoch 2", {"log_every": 4, "checkpoint_every": 3}),
    # no epoch checkpoints at all, another schedule
    (signal.SIGTERM, 13, "epoch 3, step 3 of 5", {"schedule": "cosine", "warmup_steps": 3,
                                                  "clip_grad_norm": 0.5, "checkpoint_every": 0}),
])
def test_stop_signal_saves_and_resume_matches_the_uninterrupted_run(tiny, tmp_path, signum,
                                                                    stop_at, where, overrides):
    full = make_trainer(tiny, tmp_path / "full", evaluate_fn=weight_sum, **overrides)
    full.fit()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stopped = make_trainer(tiny, tmp_path / "run", evaluate_fn=weight_sum,
                           model=signalling(tiny, stop_at, signum), **overrides)
    with pytest.raises(TrainingInterrupted) as caught:
        stopped.fit()
    name = signal.Signals(signum).name
    assert str(caught.value) == (f"stopped by {name} after step {stop_at} ({where}); the training "
                                 f"state is saved in {tmp_path / 'run'}: continue with --resume")
    assert caught.value.exit_code == 128 + signum and caught.value.signal_number == signum
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # put back
    assert load_train_state(tmp_path / "run" / "train_state.safetensors")["step"] == stop_at
    assert load_checkpoint(tmp_path / "run")[1]["meta"]["step"] == stop_at

    resumed = make_trainer(tiny, tmp_path / "run", evaluate_fn=weight_sum, **overrides)
    assert resumed.fit(resume=True) == full.last_metrics
    assert records(tmp_path / "run") == records(tmp_path / "full")  # losses, lrs, evaluations
    for name, value in final_params(full).items():
        assert torch.equal(final_params(resumed)[name], value), name


def test_step_checkpoints_bound_what_a_hard_kill_loses(tiny, tmp_path):
    class KilledAt8(tiny.TinyModel):  # a SIGKILL: nothing is saved at the kill
        calls = 0

        def forward(self, batch):
            KilledAt8.calls += 1
            if KilledAt8.calls == 8:
                raise RuntimeError("killed")
            return super().forward(batch)

    settings = dict(epochs=3, checkpoint_every_steps=3, log_every=4)
    full = make_trainer(tiny, tmp_path / "full", **settings)
    full.fit()
    seed_everything(123)
    with pytest.raises(RuntimeError, match="killed"):
        make_trainer(tiny, tmp_path / "run", model=KilledAt8(), **settings).fit()
    state = load_train_state(tmp_path / "run" / "train_state.safetensors")
    assert (state["step"], state["epoch"], state["step_in_epoch"]) == (6, 1, 1)
    assert len(state["log_window"][0]["loss"]) == 1  # step 6, to be logged with 7 and 8
    resumed = make_trainer(tiny, tmp_path / "run", **settings)
    resumed.fit(resume=True)
    assert records(tmp_path / "run") == records(tmp_path / "full")
    assert [r["step"] for r in records(tmp_path / "full")] == [4, 5, 8, 10, 12, 15]
    for name, value in final_params(full).items():
        assert torch.equal(final_params(resumed)[name], value), name
    with pytest.raises(ConfigError, match="checkpoint_every_steps: expected a value >= 0"):
        TrainerConfig(checkpoint_every_steps=-1)


def test_truncated_metrics_line_then_resume_then_fresh_train(tiny, tmp_path, caplog):
    make_trainer(tiny, tmp_path / "full", epochs=2).fit()
    make_trainer(tiny, tmp_path / "run", epochs=2, max_steps=7).fit()
    log = tmp_path / "run" / "metrics.jsonl"
    with log.open("a") as f:  # the disk filled up in the middle of a line
        f.write('{"step": 8, "epoch": 1, "loss": 0.12')
    with caplog.at_level(logging.WARNING, logger="groundkit"):
        make_trainer(tiny, tmp_path / "run", epochs=2).fit(resume=True)
    assert "metrics.jsonl: line 8 is incomplete" in caplog.text
    assert records(tmp_path / "run") == records(tmp_path / "full")

    with log.open("a") as f:
        f.write('{"step": 11, "ep')
    make_trainer(tiny, tmp_path / "run", epochs=2).fit()  # a fresh run in the same folder
    assert records(tmp_path / "run") == records(tmp_path / "full")

    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:3] + ['{"step": 4, "ep'] + lines[3:]) + "\n")
    with pytest.raises(FormatError, match=r"metrics.jsonl: line 4: expected one JSON object"):
        make_trainer(tiny, tmp_path / "run", epochs=2).fit(resume=True)


KILL_DURING_SAVE = """
import importlib.util, json, os, sys
import torch
from groundkit.engine import Trainer, TrainerConfig, checkpoint, seed_everything

spec = importlib.util.spec_from_file_location("tiny", sys.argv[1])
tiny = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tiny)
real_save_file, saves = checkpoint.save_file, []

def save_file(tensors, path, metadata=None):
    saves.append(path)
    if len(saves) == 3:  # the weights of the second save: the process dies half-way through
        with open(path, "wb") as f:
            f.write(b"x" * 100)
        os._exit(137)
    real_save_file(tensors, path, metadata=metadata)

checkpoint.save_file = save_file
torch.set_num_threads(1)
seed_everything(123)
config = TrainerConfig(**json.loads(sys.argv[3]), out_dir=sys.argv[2])
Trainer(tiny.TinyModel(), tiny.NoisyRegression(n=22), tiny.collate, config,
        model_type="tiny").fit()
"""


def test_a_kill_during_a_save_keeps_the_previous_checkpoint_and_the_next_start_cleans_up(
        tiny, tmp_path, caplog):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, tiny.__file__, str(run),
                           json.dumps({**SETTINGS, "epochs": 2})],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 137, done.stderr
    temps = [p.name for p in run.iterdir() if p.name.startswith(".")]
    assert len(temps) == 1 and re.fullmatch(r"\.model\.safetensors\.\w+\.tmp\.safetensors", temps[0])
    assert load_checkpoint(run, expected_model_type="tiny")[1]["meta"]["step"] == 5  # epoch 1
    assert load_train_state(run / "train_state.safetensors")["step"] == 5

    full = make_trainer(tiny, tmp_path / "full", epochs=2)
    full.fit()
    resumed = make_trainer(tiny, run, epochs=2)
    with caplog.at_level(logging.WARNING, logger="groundkit"):
        resumed.fit(resume=True)
    assert f"removed {run / temps[0]}, left behind by an interrupted save" in caplog.text
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "metrics.jsonl",
                                                     "model.safetensors", "train_state.safetensors"]
    assert records(run) == records(tmp_path / "full")
    for name, value in final_params(full).items():
        assert torch.equal(final_params(resumed)[name], value), name


def test_a_full_disk_names_the_file_and_the_step_to_resume_from(tiny, tmp_path, monkeypatch):
    calls = []

    def full_on_second_save(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 3:
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: '
                                  'StorageFull, message: "No space left on device" })')
        save_file(tensors, path, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", full_on_second_save)
    with pytest.raises(WriteError) as caught:
        make_trainer(tiny, tmp_path, epochs=3).fit()
    weights = tmp_path / "model.safetensors"
    assert str(caught.value) == (f"{weights}: could not write it: no space left on device; the "
                                 "previous model.safetensors is intact; training can continue "
                                 "from step 5 with --resume once the file can be written")
    assert caught.value.errno == errno.ENOSPC
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    monkeypatch.setattr(checkpoint, "save_file", save_file)
    make_trainer(tiny, tmp_path / "full", epochs=3).fit()
    make_trainer(tiny, tmp_path, epochs=3).fit(resume=True)
    assert records(tmp_path) == records(tmp_path / "full")
