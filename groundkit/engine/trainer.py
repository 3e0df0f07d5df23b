"""The training loop shared by every model (PPMN, DRMN, panoptic, PBREC, ...).

Contract with a model (an ``nn.Module``):

- ``model(batch) -> dict[str, Tensor]`` in train mode: scalar losses, with the total under
  ``"loss"`` (the one that is backpropagated); every entry is logged as a mean over ``log_every``
  steps. ``batch`` is whatever ``collate_fn`` returns; tensors inside dicts/lists/tuples are moved
  to the device first, anything else is passed through untouched.
- optional ``model.param_groups(lr, text_lr) -> list[dict]``: optimizer groups
  (``{"params": [...], "lr": ..., "name": "text"}``); parameters with ``requires_grad=False``
  are dropped. Without it, every trainable parameter gets ``lr``.
- the Trainer calls ``model.train()`` when training starts and after each evaluation; a model
  with frozen parts (BatchNorm of a frozen backbone) overrides ``train()`` to keep them in eval.

``evaluate_fn(model) -> dict[str, float]`` runs on rank 0 only, on the unwrapped model, in eval
mode under ``torch.no_grad()``, every ``eval_every`` epochs and after the last; its metrics are
logged as ``eval/<name>`` and saved in the checkpoint metadata. It cannot perturb training: the
RNG states are restored after it.

Outputs in ``config.out_dir``: ``metrics.jsonl`` (see :mod:`groundkit.engine.logging`),
``model.safetensors`` + ``config.json`` (see :func:`~groundkit.engine.checkpoint.save_checkpoint`)
and ``train_state.safetensors``, every ``checkpoint_every`` epochs, every
``checkpoint_every_steps`` optimizer steps (when > 0), on a stop signal and at the end. Every
file is replaced atomically and flushed to the disk; temporary files of a save that was killed
(``.model.safetensors.XXXXXXXX.tmp.safetensors``, ...) are removed when training next starts or
saves, and a full disk is a :class:`~groundkit.errors.WriteError` saying which file failed and
that the previous training state is intact.

Stopping: SIGINT (Ctrl-C) or SIGTERM (what schedulers and ``torchrun`` send) lets the current
step finish, saves a resumable state (the same as a step checkpoint) and raises
:class:`~groundkit.errors.TrainingInterrupted`, whose ``exit_code`` (130, 143: 128 + the signal, as
shells report it) ``groundkit train`` exits with after a one-line message; a second signal quits at
once. A signal during an evaluation or a save is acted on when it ends. Under torchrun the ranks
agree on when to stop: after every step each rank contributes the signal it received to a
max-all-reduce over a CPU (gloo) group, so all ranks stop after the same step whichever of them got
it (torchrun sends SIGTERM to every worker and kills them 30 s later by default, so a save must fit
in that grace period). DataLoader workers ignore both signals and are stopped by their process.

Exact resume: the data order of an epoch is a function of ``(seed, epoch, rank)`` only, and the
training state holds the model, optimizer (moments and step counters), scheduler, AMP scaler,
counters and every rank's RNG states, so ``fit(resume=True)`` continues the loss curve of an
uninterrupted run exactly (on a deterministic device) after a run stopped at an epoch's end, or
anywhere when items are loaded in the main process (``num_workers=0``); the losses of the steps
since the last log line are kept too, so the resumed log is the uninterrupted one. A DataLoader
worker's RNG is seeded from ``(seed, epoch, rank)`` at the start of an epoch, so random
augmentations drawn in workers repeat exactly per epoch but not from the middle of one.

Fine-tuning is not resuming: ``config.init_from`` names a model checkpoint whose weights the
model starts from (same model type and shapes, else a ConfigError listing the keys), with a fresh
optimizer, schedule, counters and log; a training state found by ``fit(resume=True)`` replaces them.

Typical use (what :meth:`groundkit.engine.tasks.Task.train` does for ``groundkit train``)::

    cfg = load_config(PPMNExperiment, yaml_path, overrides)     # groundkit.config
    seed_everything(cfg.trainer.seed)                           # same initial weights everywhere
    model = build_model(cfg.model_type, cfg.model)              # groundkit.models
    trainer = Trainer(model, dataset, collate_fn, cfg.trainer, evaluate_fn=evaluate,
                      model_type="ppmn", experiment_config=config_to_dict(cfg))
    metrics = trainer.fit(resume=True)
    cleanup_distributed()                                       # once, at the end of the job
"""
from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, NoReturn, Optional

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from groundkit._io import remove_stale_temps
from groundkit.config import config_to_dict
from groundkit.engine import distributed as gdist
from groundkit.engine.checkpoint import (
    CONFIG_NAME,
    TRAIN_STATE_NAME,
    WEIGHTS_NAME,
    capture_rng_state,
    load_initial_weights,
    load_train_state,
    restore_rng_state,
    save_checkpoint,
    save_train_state,
    seed_everything,
)
from groundkit.engine.logging import METRICS_NAME, MetricsLogger
from groundkit.engine.schedule import build_scheduler
from groundkit.errors import ConfigError, TrainingInterrupted, WriteError

_log = logging.getLogger("groundkit")
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_OWN_FILES = (WEIGHTS_NAME, CONFIG_NAME, TRAIN_STATE_NAME, METRICS_NAME)  # written in out_dir


@dataclass
class TrainerConfig:
    """Training settings; the defaults are PPMN's recipe (per process; the paper used 4 GPUs)."""

    epochs: int = 14
    batch_size: int = 12                       # per process
    lr: float = 1e-4
    text_lr: Optional[float] = 1e-5            # lr of the text encoder group; None = lr
    weight_decay: float = 0.0
    optimizer: Literal["adam", "adamw"] = "adam"
    # One fused kernel for the whole Adam update (CPU and CUDA) instead of ~10 small ops per
    # parameter tensor; false: torch's default implementation (same maths, other rounding).
    fused_optimizer: bool = True
    # torch's intra-op threads in this process; None keeps torch's default (one per core). Two
    # jobs side by side on a small machine run far faster at one thread each.
    threads: Optional[int] = None
    schedule: Literal["step", "cosine"] = "step"
    lr_milestones: tuple[int, ...] = (10, 12)  # 0-based epochs where lr *= lr_gamma ("step")
    lr_gamma: float = 0.5
    warmup_steps: int = 0                      # linear warmup, both schedules
    min_lr_ratio: float = 0.0                  # cosine floor, as a fraction of lr
    clip_grad_norm: Optional[float] = None     # max global grad norm; None = no clipping
    # Mixed precision on CUDA: the forward pass under torch.autocast in amp_dtype; float16 also
    # scales the loss (GradScaler; overflowing steps are skipped), bfloat16 needs no scaling
    # (Ampere or newer). Elsewhere a documented no-op: one warning, then float32, so that a GPU
    # recipe can be smoke-tested on a CPU unchanged (docs/gpu.md).
    amp: bool = False
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    # Convolution weights in channels-last layout (oneDNN's preferred one on CPU): PPMN's synthetic
    # step 3-4% faster on a quiet machine, ~10% with two trainings sharing it
    # (benchmarks/bench_grounding.py layout). Same numbers up to float rounding.
    channels_last: bool = False
    eval_every: int = 1                        # epochs; 0 = only after the last
    checkpoint_every: int = 1                  # epochs; 0 = only at the end
    # Also every N optimizer steps, inside epochs too (a preempted job loses at most N steps);
    # 0 = off. Both kinds write the same resumable files.
    checkpoint_every_steps: int = 0
    out_dir: str = "runs/train"
    seed: int = 0
    num_workers: int = 0
    log_every: int = 20                        # optimizer steps
    max_steps: Optional[int] = None            # stop early (smoke tests); the schedule ignores it
    shuffle: bool = True
    drop_last: bool = False
    find_unused_parameters: bool = False       # DDP option for models with conditional branches
    device: Optional[str] = None               # None: cuda:LOCAL_RANK when available, else cpu
    quiet: bool = False                        # no progress bar
    tensorboard: bool = True                   # also log to out_dir/tb when installed
    # Fine-tuning: start from the model weights of this checkpoint (folder, file or bundled name,
    # same model type and shapes); the optimizer, schedule and counters start afresh. Unlike
    # --resume, which continues a run from its training state (and wins when one exists).
    init_from: Optional[str] = None

    def __post_init__(self) -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                    "log_every": self.log_every, "lr_gamma": self.lr_gamma}
        non_negative = {"weight_decay": self.weight_decay, "warmup_steps": self.warmup_steps,
                        "eval_every": self.eval_every, "checkpoint_every": self.checkpoint_every,
                        "checkpoint_every_steps": self.checkpoint_every_steps,
                        "seed": self.seed, "num_workers": self.num_workers}
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"trainer.{name}: expected a value > 0, got {value}")
        for name, value in non_negative.items():
            if value < 0:
                raise ConfigError(f"trainer.{name}: expected a value >= 0, got {value}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"trainer.threads: expected null or >= 1, got {self.threads}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"trainer.max_steps: expected null or >= 1, got {self.max_steps}")
        if list(self.lr_milestones) != sorted(self.lr_milestones):
            raise ConfigError(f"trainer.lr_milestones: expected increasing epochs, "
                              f"got {list(self.lr_milestones)}")


def build_optimizer(model: torch.nn.Module, config: TrainerConfig,
                    param_groups: Sequence[Mapping[str, Any]] | None = None
                    ) -> torch.optim.Optimizer:
    """Adam/AdamW over ``param_groups``, else ``model.param_groups(lr, text_lr)``, else all
    trainable parameters at ``config.lr``; frozen parameters and empty groups are dropped."""
    if param_groups is None and hasattr(model, "param_groups"):
        text_lr = config.text_lr if config.text_lr is not None else config.lr
        param_groups = model.param_groups(config.lr, text_lr)
    if param_groups is None:
        param_groups = [{"params": list(model.parameters())}]
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in param_groups]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ConfigError("trainer: the model has no trainable parameters")
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    devices = {p.device.type for g in groups for p in g["params"]}
    fused = config.fused_optimizer and devices <= {"cpu", "cuda"}  # the fused kernel's devices
    return cls(groups, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None)


def _state_in_param_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-element optimizer state (Adam's moments) its parameter's memory layout.

    A saved state comes back contiguous; torch's fused Adam reads a channels-last parameter and a
    contiguous moment element by element in memory order, silently pairing the wrong elements
    (measured: a 0.17 weight error after one step), so the layouts must agree.
    """
    for group in optimizer.param_groups:
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if torch.is_tensor(value) and value.shape == param.shape:
                    optimizer.state[param][name] = torch.empty_like(param).copy_(value)


class Trainer:
    """Trains ``model`` on ``train_dataset``; see the module docstring for the contract.

    Args:
        model: an ``nn.Module`` obeying the contract above (not yet wrapped in DDP).
        train_dataset: a map-style dataset (``__len__`` + ``__getitem__``).
        collate_fn: list of items -> batch.
        config: the :class:`TrainerConfig`.
        evaluate_fn: ``model -> {metric: value}``, run on rank 0 only.
        param_groups: explicit optimizer groups (overrides ``model.param_groups``).
        model_type: builder name stored in the checkpoint (``"ppmn"``).
        experiment_config: the full JSON-ready config saved beside the weights (model, data,
            trainer sections); default ``{"trainer": <config>}``.
    Under torchrun, the process group is started here, the model is wrapped in DDP and each rank
    sees its own shard of every epoch; only rank 0 logs and writes files.
    """

    def __init__(self, model: torch.nn.Module, train_dataset: Dataset, collate_fn: Callable,
                 config: TrainerConfig, evaluate_fn: Callable[[torch.nn.Module], dict] | None = None,
                 param_groups: Sequence[Mapping[str, Any]] | None = None, *,
                 model_type: str = "model", experiment_config: Mapping[str, Any] | None = None):
        self.config = config
        self.experiment_config = dict(experiment_config or {"trainer": config_to_dict(config)})
        if config.init_from:  # before DDP wraps it; every rank reads the same file
            load_initial_weights(model, config.init_from, model_type,
                                 self.experiment_config.get("model"))
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        self.dist = gdist.init_distributed()
        self.device = _pick_device(config.device, self.dist.local_rank)
        self.model = (model.to(self.device, memory_format=torch.channels_last)
                      if config.channels_last else model.to(self.device))
        self.evaluate_fn = evaluate_fn
        self.model_type = model_type
        self.out_dir = Path(config.out_dir)

        self.sampler = _SkippingSampler(DistributedSampler(
            train_dataset, num_replicas=self.dist.world_size, rank=self.dist.rank,
            shuffle=config.shuffle, seed=config.seed))
        self._loader_generator = torch.Generator()  # seeds the workers; reseeded every epoch
        self.loader = DataLoader(
            train_dataset, batch_size=config.batch_size, sampler=self.sampler,
            collate_fn=collate_fn, num_workers=config.num_workers, drop_last=config.drop_last,
            pin_memory=self.device.type == "cuda", generator=self._loader_generator,
            worker_init_fn=_worker_ignores_stop_signals)
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise ConfigError(f"trainer: {len(train_dataset)} training items give no batch of "
                              f"{config.batch_size} per process (drop_last={config.drop_last})")

        self.optimizer = build_optimizer(self.model, config, param_groups)
        self.scheduler = build_scheduler(self.optimizer, config, self.steps_per_epoch,
                                         total_steps=config.epochs * self.steps_per_epoch)
        self._autocast_dtype = _amp_dtype(config, self.device)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self._autocast_dtype == torch.float16)
        self.train_model = self.model
        if self.dist.is_distributed:
            self.train_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=config.find_unused_parameters)
        self.logger = MetricsLogger(self.out_dir, enabled=self.dist.is_main,
                                    tensorboard=config.tensorboard)

        self.epoch = 0          # epochs completed
        self.step = 0           # optimizer steps completed
        self.step_in_epoch = 0  # steps of the current, unfinished epoch
        self.last_metrics: dict[str, float] = {}
        self._step_lrs: list[float] = []
        self._window: list[dict[str, torch.Tensor]] = []  # losses of the steps since the last log
        self._signal: int | None = None      # the stop signal this process received
        self._stopped_by = 0                 # the one every rank agreed to stop on
        self._saved_step: int | None = None  # step of the last training state written
        self._elapsed_before = 0.0  # seconds spent by the runs this one resumes
        self._start = time.time()

    # ------------------------------------------------------------------------- main loop

    def fit(self, resume: bool = False) -> dict[str, float]:
        """Train until ``config.epochs`` (or ``max_steps``); return the last eval metrics.

        ``resume=True`` continues from ``out_dir/train_state.safetensors`` when it exists (and
        starts afresh otherwise), so a preempted job can always be relaunched with it.

        Raises:
            TrainingInterrupted: SIGINT or SIGTERM stopped it after a step; the state is saved.
            WriteError: a file could not be written (disk full); the last state is intact.
        """
        cfg = self.config
        self._signal, self._stopped_by = None, 0
        try:
            with self._stop_signals_caught():
                self._remove_stale_temps()
                if not (resume and self._resume()):
                    seed_everything(cfg.seed + self.dist.rank)
                    self._window = []
                    self.logger.reset()  # a fresh run in an old out_dir starts a fresh log
                self._start = time.time()
                self.train_model.train()
                while self.epoch < cfg.epochs and not self._out_of_steps():
                    if self._train_epoch(self.epoch):  # stopped by a signal inside the epoch
                        self.save()
                        self._interrupted()
                    finished = self.step_in_epoch == self.steps_per_epoch
                    if finished:
                        self.epoch, self.step_in_epoch = self.epoch + 1, 0
                    last = self.epoch >= cfg.epochs or self._out_of_steps()
                    if last or (finished and _due(self.epoch, cfg.eval_every)):
                        self._evaluate()
                    saved = last or (finished and (_due(self.epoch, cfg.checkpoint_every) or
                                                   _due(self.step, cfg.checkpoint_every_steps)))
                    if saved:
                        self.save()
                    if not last and self._stop_requested():  # e.g. received during evaluation
                        if not saved:
                            self.save()
                        self._interrupted()
                gdist.barrier()
        except WriteError as e:
            kept = (f"training can continue from step {self._saved_step} with --resume once the "
                    f"file can be written" if self._saved_step is not None
                    else "this run has saved no training state yet")
            raise WriteError(e.file, f"{e.message}; {kept}", e.errno) from e
        finally:
            self.logger.close()
        return self.last_metrics

    def _train_epoch(self, epoch: int) -> bool:
        """Run the rest of ``epoch``, up to its end or ``max_steps``; True when a stop signal
        ended it earlier (after the same step on every rank)."""
        cfg = self.config
        self.sampler.set_epoch(epoch, skip=self.step_in_epoch * cfg.batch_size)
        self._loader_generator.manual_seed(_mix_seed(cfg.seed, epoch, self.dist.rank))
        with tqdm(self.loader, total=self.steps_per_epoch, initial=self.step_in_epoch,
                  desc=f"epoch {epoch + 1}/{cfg.epochs}", dynamic_ncols=True,
                  disable=cfg.quiet or not self.dist.is_main) as progress:
            for batch in progress:
                self._window.append(self._train_step(batch))
                self.step += 1
                self.step_in_epoch += 1
                end = self.step_in_epoch == self.steps_per_epoch or self._out_of_steps()
                if self.step % cfg.log_every == 0 or end:
                    progress.set_postfix(loss=f"{self._log_window():.4f}")
                if end:  # fit evaluates, saves and checks for a stop signal
                    break
                if self._stop_requested():
                    return True
                if _due(self.step, cfg.checkpoint_every_steps):
                    self.save()
        return False

    def _train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        batch = move_to_device(batch, self.device)
        with self._autocast():
            losses = self.train_model(batch)
        _check_losses(losses)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        if self.config.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.clip_grad_norm)
        self._step_lrs = [g["lr"] for g in self.optimizer.param_groups]  # the lrs of this step
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {name: value.detach().float() for name, value in losses.items()}

    def _autocast(self) -> Any:
        if self._autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self._autocast_dtype)

    def _log_window(self) -> float:
        """Log the mean over steps and ranks of each loss term since the last log; one sync."""
        window, self._window = self._window, []
        names = sorted(window[-1])
        sums = torch.stack([sum(losses[n] for losses in window) for n in names])
        means = gdist.all_reduce_mean(sums / len(window)).tolist()
        record: dict[str, Any] = {"step": self.step, "epoch": self._epoch_of_last_step(),
                                  **dict(zip(names, means))}
        for i, (group, lr) in enumerate(zip(self.optimizer.param_groups, self._step_lrs)):
            record["lr" if i == 0 else f"lr/{group.get('name', i)}"] = lr
        record["time"] = round(self._elapsed(), 3)
        if not math.isfinite(record["loss"]) and self._autocast_dtype != torch.float16:
            # fp16 AMP skips overflowing steps by itself; anywhere else NaN is fatal.
            raise FloatingPointError(f"step {self.step}: loss is {record['loss']} ({record})")
        self.logger.log(record)
        return record["loss"]

    # ------------------------------------------------------------------------- eval, save, resume

    def _evaluate(self) -> None:
        if self.evaluate_fn is None:
            return
        if self.dist.is_main:
            self.model.eval()
            with _rng_preserved(), torch.no_grad():
                metrics = self.evaluate_fn(self.model)
            self.train_model.train()
            self.last_metrics = {str(k): float(v) for k, v in metrics.items()}
            self.logger.log({"step": self.step, "epoch": self._epoch_of_last_step(),
                             **{f"eval/{k}": v for k, v in self.last_metrics.items()},
                             "time": round(self._elapsed(), 3)})
        gdist.barrier()

    def save(self) -> None:
        """Write ``model.safetensors`` + ``config.json`` and ``train_state.safetensors``."""
        # Every rank's RNG states and unlogged losses, for an exact resume.
        ranks = gdist.all_gather_objects({"rng": capture_rng_state(),
                                          "window": _window_state(self._window)})
        if self.dist.is_main:
            self._remove_stale_temps()
            meta = {"epoch": self.epoch, "step": self.step, "metrics": self.last_metrics}
            save_checkpoint(self.out_dir, self.model, self.experiment_config, self.model_type, meta)
            save_train_state(self.out_dir / TRAIN_STATE_NAME, self._train_state(
                [r["rng"] for r in ranks], [r["window"] for r in ranks]))
        self._saved_step = self.step
        gdist.barrier()

    def _train_state(self, rng: list[dict], windows: list[dict]) -> dict[str, Any]:
        return {"model_type": self.model_type, "epoch": self.epoch, "step": self.step,
                "step_in_epoch": self.step_in_epoch, "elapsed": self._elapsed(),
                "world_size": self.dist.world_size, "batch_size": self.config.batch_size,
                "last_metrics": self.last_metrics, "rng": rng, "log_window": windows,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()}

    def _resume(self) -> bool:
        """Load ``out_dir/train_state.safetensors`` if present; False when there is none."""
        path = self.out_dir / TRAIN_STATE_NAME
        if not path.exists():
            _log.info("no training state in %s: starting a new run", self.out_dir)
            return False
        state = load_train_state(path)
        if state["model_type"] != self.model_type:
            raise ConfigError(f"{path}: training state of a {state['model_type']!r} model, "
                              f"cannot resume a {self.model_type!r} model")
        layout = (state["world_size"], state["batch_size"])
        if state["step_in_epoch"] and layout != (self.dist.world_size, self.config.batch_size):
            raise ConfigError(f"{path}: stopped inside an epoch with (world size, batch size) = "
                              f"{layout}; resume with the same values")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            _state_in_param_layouts(self.optimizer)
        except (RuntimeError, ValueError, KeyError) as e:
            raise ConfigError(f"{path}: does not fit this model/optimizer: {e}") from None
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.step_in_epoch, self._elapsed_before = state["step_in_epoch"], state["elapsed"]
        self.last_metrics = state["last_metrics"]
        same_layout = len(state["rng"]) == self.dist.world_size
        if same_layout:
            restore_rng_state(state["rng"][self.dist.rank])
        else:  # another world size: exactness is lost anyway, keep runs reproducible
            seed_everything(_mix_seed(self.config.seed, self.epoch, self.dist.rank))
        windows = state.get("log_window")  # absent from states of older versions
        self._window = (_window_of(windows[self.dist.rank], self.device)
                        if windows and same_layout else [])
        self._saved_step = self.step
        self.logger.truncate_after(self.step)
        return True

    # ------------------------------------------------------------------------- stop signals

    @contextmanager
    def _stop_signals_caught(self) -> Iterator[None]:
        """While training, SIGINT and SIGTERM ask for a stop after the current step (a second
        one quits at once); the previous handlers are restored after. Python lets only the main
        thread set handlers: elsewhere the signals keep theirs."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS}

        def request_stop(signum: int, frame: Any) -> None:
            if self._signal is not None:  # asked twice: quit now, as without this handler
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
                return
            self._signal = signum
            if self.dist.is_main:
                _log.warning("%s received: stopping after this step and saving a resumable state "
                             "in %s (send it again to quit at once)",
                             signal.Signals(signum).name, self.out_dir)

        for signum in _STOP_SIGNALS:
            signal.signal(signum, request_stop)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                if handler is not None:  # None: set outside Python, cannot be put back
                    signal.signal(signum, handler)

    def _stop_requested(self) -> bool:
        """Whether any rank received a stop signal; every rank must ask after the same step."""
        signum = self._signal or 0
        if self.dist.is_distributed:
            signum = gdist.max_over_ranks(signum)
        self._stopped_by = signum
        return signum != 0

    def _interrupted(self) -> NoReturn:
        where = (f"epoch {self.epoch + 1}, step {self.step_in_epoch} of {self.steps_per_epoch}"
                 if self.step_in_epoch else f"end of epoch {self.epoch}")
        name = signal.Signals(self._stopped_by).name
        raise TrainingInterrupted(f"stopped by {name} after step {self.step} ({where}); the "
                                  f"training state is saved in {self.out_dir}: continue with "
                                  f"--resume", self._stopped_by)

    def _remove_stale_temps(self) -> None:
        """Delete what saves killed mid-write left in out_dir (rank 0, the only writer)."""
        if self.dist.is_main:
            for path in remove_stale_temps(self.out_dir, _OWN_FILES):
                _log.warning("removed %s, left behind by an interrupted save", path)

    def _epoch_of_last_step(self) -> int:
        """0-based epoch of the latest optimizer step (the one records are logged at)."""
        return max(0, self.step - 1) // self.steps_per_epoch

    def _out_of_steps(self) -> bool:
        return self.config.max_steps is not None and self.step >= self.config.max_steps

    def _elapsed(self) -> float:
        return self._elapsed_before + time.time() - self._start


# ----------------------------------------------------------------------------- helpers


class _SkippingSampler(Sampler[int]):
    """A DistributedSampler whose epoch can start after its first ``skip`` indices (mid-epoch
    resume); its order depends only on (seed, epoch, rank)."""

    def __init__(self, sampler: DistributedSampler) -> None:
        self.sampler = sampler
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.sampler.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.sampler)[self.skip:])

    def __len__(self) -> int:
        return len(self.sampler) - self.skip


def _window_state(window: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The unlogged losses as ``{name: (steps,) float32 CPU tensor}`` (storable)."""
    if not window:
        return {}
    return {name: torch.stack([losses[name] for losses in window]).cpu() for name in window[0]}


def _window_of(state: dict[str, torch.Tensor], device: torch.device
               ) -> list[dict[str, torch.Tensor]]:
    steps = len(next(iter(state.values()))) if state else 0
    return [{name: values[i].to(device) for name, values in state.items()} for i in range(steps)]


def _worker_ignores_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the training process, which stops them after
    saving: a Ctrl-C reaches the whole process group, and a worker killed by it would fail the
    step (schedulers signal every process of a job too)."""
    for signum in _STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def move_to_device(obj: Any, device: torch.device) -> Any:
    """Tensors inside (nested) dicts, lists and tuples moved to ``device``; the rest unchanged."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: move_to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to_device(v, device) for v in obj)
    return obj


def _check_losses(losses: Any) -> None:
    if not isinstance(losses, Mapping) or "loss" not in losses:
        raise TypeError("model(batch) in train mode must return a dict of scalar loss tensors "
                        f"with the total under 'loss'; got {type(losses).__name__}"
                        + (f" with keys {sorted(losses)}" if isinstance(losses, Mapping) else ""))


def _pick_device(device: str | None, local_rank: int) -> torch.device:
    """``trainer.device`` checked (:func:`~groundkit.engine.distributed.resolve_device`); None,
    or ``cuda`` without an index, is ``cuda:LOCAL_RANK`` when CUDA is there (each torchrun rank
    on its own GPU), else the CPU."""
    if device is not None:
        dev = gdist.resolve_device(device)
        return torch.device("cuda", local_rank) if dev.type == "cuda" and dev.index is None else dev
    return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")


def _amp_dtype(config: TrainerConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``trainer.amp`` on ``device``: None (float32) when off or off CUDA
    (with a warning); bfloat16 on a GPU without it is a ConfigError."""
    if not config.amp:
        return None
    if device.type != "cuda":
        _log.warning("trainer.amp is for CUDA only; training in float32 on %s", device)
        return None
    if config.amp_dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"trainer.amp_dtype=bfloat16: {torch.cuda.get_device_name(device)} "
                          f"has no bfloat16 support (Ampere or newer); use float16")
    return torch.float16 if config.amp_dtype == "float16" else torch.bfloat16


def _due(epoch: int, every: int) -> bool:
    return every > 0 and epoch % every == 0


def _mix_seed(seed: int, epoch: int, rank: int) -> int:
    """A well-mixed 32-bit seed for (seed, epoch, rank): neighbours give unrelated streams."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


@contextmanager
def _rng_preserved() -> Iterator[None]:
    """Restore every global RNG on exit, so that evaluation cannot change the training run."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)
