"""Learning-rate schedules as pure functions of the optimizer step.

Both schedules are multiplicative factors on each param group's base lr, evaluated every optimizer
step by a ``LambdaLR``; being pure functions of the global step, they resume exactly from the step
counter alone.

- ``"step"`` (PPMN, DRMN): ``gamma ** (number of milestones <= epoch)``, with 0-based epochs. PPMN's
  "halve at epoch 10 and again every 2 epochs" over 14 epochs is ``milestones=(10, 12)``,
  ``gamma=0.5``: epochs 0-9 at lr, 10-11 at lr/2, 12-13 at lr/4.
- ``"cosine"`` (PBREC): half a cosine from 1 down to ``min_lr_ratio`` over the steps after warmup.

Both may start with a linear warmup over ``warmup_steps`` steps.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from groundkit.errors import ConfigError


class ScheduleConfig(Protocol):
    """The schedule fields of a config (``groundkit.engine.trainer.TrainerConfig`` has them)."""

    schedule: str
    lr_milestones: Sequence[int]
    lr_gamma: float
    warmup_steps: int
    min_lr_ratio: float


def step_factor(epoch: int, milestones: Sequence[int], gamma: float) -> float:
    """``gamma`` raised to the number of milestones reached by the 0-based ``epoch``."""
    return gamma ** sum(epoch >= m for m in milestones)


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear ramp ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, then 1."""
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def cosine_factor(step: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Half a cosine from 1 at ``step=0`` to ``min_ratio`` at ``step=total_steps`` (then flat)."""
    progress = min(1.0, step / max(1, total_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_factor_fn(schedule: str, *, steps_per_epoch: int, total_steps: int,
                 milestones: Sequence[int] = (), gamma: float = 0.1, warmup_steps: int = 0,
                 min_lr_ratio: float = 0.0) -> Callable[[int], float]:
    """The lr factor as a function of the 0-based global optimizer step."""
    if steps_per_epoch < 1:
        raise ConfigError(f"lr schedule: steps_per_epoch must be >= 1, got {steps_per_epoch}")
    milestones = tuple(milestones)

    def factor(step: int) -> float:
        if schedule == "step":
            base = step_factor(step // steps_per_epoch, milestones, gamma)
        elif schedule == "cosine":
            base = cosine_factor(max(0, step - warmup_steps), total_steps - warmup_steps,
                                 min_lr_ratio)
        else:
            raise ConfigError(f"trainer.schedule: expected 'step' or 'cosine', got {schedule!r}")
        return base * warmup_factor(step, warmup_steps)

    factor(0)  # an unknown schedule fails here, not at the first training step
    return factor


def build_scheduler(optimizer: Optimizer, config: ScheduleConfig, steps_per_epoch: int,
                    total_steps: int) -> LambdaLR:
    """A per-step ``LambdaLR`` for ``config.schedule`` (call ``scheduler.step()`` every step)."""
    fn = lr_factor_fn(config.schedule, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                      milestones=config.lr_milestones, gamma=config.lr_gamma,
                      warmup_steps=config.warmup_steps, min_lr_ratio=config.min_lr_ratio)
    return LambdaLR(optimizer, fn)
