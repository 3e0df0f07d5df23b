"""A tiny regression task for engine tests; run as a script it is one rank of a DDP job.

Every item draws noise from the global torch RNG and the model has dropout, so a resumed run only
matches an uninterrupted one if the RNG states, the optimizer state and the data order all are
restored exactly.

Script use (environment as torchrun sets it: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT): ``python tiny_task.py OUT_DIR RESULT_JSON``; writes this rank's final parameters and
the dataset indices it saw to RESULT_JSON. With ``TINY_STOP=RANK:STEP`` that rank sends itself
SIGTERM during its step STEP (the job then exits with the signal's code); ``TINY_RESUME=1``
resumes from OUT_DIR.
"""
from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset


class NoisyRegression(Dataset):
    """``n`` fixed inputs ``x: (4,)`` with targets ``y = x . w``; remembers the indices it served."""

    def __init__(self, n: int = 24) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 3.0, 0.5])
        self.seen: list[int] = []

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen.append(int(i))
        return self.x[i] + 0.05 * torch.randn(4), self.y[i]


def collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {"x": torch.stack([x for x, _ in items]), "y": torch.stack([y for _, y in items])}


class TinyModel(nn.Module):
    """Linear-ReLU-Dropout-Linear; ``head`` plays the text encoder's group, ``frozen`` is frozen."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(8, 1)
        self.frozen = nn.Linear(1, 1)
        self.frozen.requires_grad_(False)

    def param_groups(self, lr: float, text_lr: float) -> list[dict[str, Any]]:
        return [{"params": list(self.body.parameters()) + list(self.frozen.parameters()),
                 "lr": lr, "name": "body"},
                {"params": list(self.head.parameters()), "lr": text_lr, "name": "text"}]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pred = self.frozen(self.head(self.drop(torch.relu(self.body(batch["x"]))))).squeeze(-1)
        mse = ((pred - batch["y"]) ** 2).mean()
        l1 = (pred - batch["y"]).abs().mean()
        return {"loss": mse + 0.1 * l1, "mse": mse, "l1": l1}


class SignalAt(TinyModel):
    """The tiny model, sending itself ``signum`` during its ``step``-th forward pass (1-based)."""

    def __init__(self, step: int, signum: int = signal.SIGTERM) -> None:
        super().__init__()
        self.step, self.signum, self.calls = step, signum, 0

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.calls += 1
        if self.calls == self.step:
            os.kill(os.getpid(), self.signum)
        return super().forward(batch)


def main(out_dir: str, result_path: str) -> int:
    from groundkit.engine import Trainer, TrainerConfig, cleanup_distributed
    from groundkit.errors import TrainingInterrupted

    faulthandler.enable()  # an abort (e.g. in a gloo thread at exit) prints every thread's stack
    rank = int(os.environ["RANK"])
    torch.manual_seed(rank)  # different inits: DDP must sync
    stop_rank, stop_step = map(int, os.environ.get("TINY_STOP", "-1:0").split(":"))
    dataset = NoisyRegression(n=20)
    config = TrainerConfig(epochs=2, batch_size=3, lr=1e-2, out_dir=out_dir, quiet=True,
                           log_every=1, tensorboard=False)
    model = SignalAt(stop_step) if rank == stop_rank else TinyModel()
    trainer = Trainer(model, dataset, collate, config, model_type="tiny")
    code = 0
    try:
        trainer.fit(resume=os.environ.get("TINY_RESUME") == "1")
    except TrainingInterrupted as e:
        code = e.exit_code
    params = {k: v.tolist() for k, v in trainer.model.state_dict().items()}
    with open(result_path, "w") as f:
        json.dump({"params": params, "seen": dataset.seen, "steps": trainer.step}, f)
    cleanup_distributed()  # as Task.train does: a barrier, then the teardown
    print(f"rank {rank}: process group destroyed", flush=True)  # tells a later abort's place
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
