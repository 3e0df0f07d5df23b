from __future__ import annotations

import json

import pytest
import torch

from groundkit.engine import Trainer, TrainerConfig, load_checkpoint, read_metrics, seed_everything
from groundkit.errors import ConfigError


def make_trainer(tiny, out_dir, evaluate_fn=None, model_type="tiny", model=None,
                 **overrides) -> Trainer:
    seed_everything(123)  # the initial weights; resumed runs overwrite them from the state
    settings = dict(epochs=4, batch_size=5, lr=1e-2, text_lr=3e-3, out_dir=str(out_dir),
                    quiet=True, log_every=1, tensorboard=False, seed=7)
    config = TrainerConfig(**{**settings, **overrides})
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
