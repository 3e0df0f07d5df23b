"""Training engine shared by every model: the loop, checkpoints, schedules, logs, torchrun."""
from groundkit.engine.checkpoint import (
                                         load_checkpoint,
                                         load_train_state,
                                         save_checkpoint,
                                         save_train_state,
                                         seed_everything,
)
from groundkit.engine.distributed import cleanup_distributed, init_distributed, is_main_process
from groundkit.engine.logging import MetricsLogger, read_metrics
from groundkit.engine.schedule import build_scheduler
from groundkit.engine.trainer import Trainer, TrainerConfig, build_optimizer, move_to_device

__all__ = [
    "Trainer", "TrainerConfig", "build_optimizer", "build_scheduler", "move_to_device",
    "save_checkpoint", "load_checkpoint", "save_train_state", "load_train_state",
    "seed_everything", "init_distributed", "cleanup_distributed", "is_main_process",
    "MetricsLogger", "read_metrics",
]
