from __future__ import annotations

import math

import pytest
import torch

from groundkit.engine.schedule import build_scheduler, cosine_factor, lr_factor_fn, step_factor
from groundkit.engine.trainer import TrainerConfig
from groundkit.errors import ConfigError


def lrs_per_step(config: TrainerConfig, steps_per_epoch: int, steps: int) -> list[float]:
    """The lr each optimizer step runs at, read from a real optimizer and LambdaLR."""
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch,
                                total_steps=config.epochs * steps_per_epoch)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_ppmn_schedule_halves_at_epoch_10_and_again_2_epochs_later():
    # PPMN: 14 epochs at 1e-4, halved at epoch 10 and every 2 epochs after (0-based epochs).
    assert [step_factor(e, (10, 12), 0.5) for e in range(14)] == [1.0] * 10 + [0.5] * 2 + [0.25] * 2
    lrs = lrs_per_step(TrainerConfig(), steps_per_epoch=3, steps=14 * 3)
    assert lrs == [1e-4] * 30 + [5e-5] * 6 + [2.5e-5] * 6


def test_cosine_with_warmup_by_literal_formula():
    config = TrainerConfig(epochs=2, lr=1.0, schedule="cosine", warmup_steps=4, min_lr_ratio=0.1)
    lrs = lrs_per_step(config, steps_per_epoch=7, steps=14)
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    for step in range(4, 14):
        progress = (step - 4) / 10
        assert lrs[step] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    assert cosine_factor(10, 10, 0.1) == pytest.approx(0.1)
    assert cosine_factor(99, 10) == pytest.approx(0.0)  # flat after the end


def test_step_schedule_with_warmup():
    fn = lr_factor_fn("step", steps_per_epoch=2, total_steps=8, milestones=(1,), gamma=0.1,
                      warmup_steps=2)
    assert [fn(s) for s in range(4)] == pytest.approx([0.5, 1.0, 0.1, 0.1])


def test_bad_schedules():
    with pytest.raises(ConfigError, match="trainer.schedule: expected 'step' or 'cosine'"):
        lr_factor_fn("linear", steps_per_epoch=1, total_steps=1)
    with pytest.raises(ConfigError, match="steps_per_epoch must be >= 1"):
        lr_factor_fn("step", steps_per_epoch=0, total_steps=1)
