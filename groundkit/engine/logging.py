"""Training metrics: one JSON object per line in ``metrics.jsonl``, mirrored to TensorBoard.

A record is a flat dict such as ``{"step": 120, "epoch": 3, "loss": 0.41, "loss_dice": 0.2,
"lr": 1e-4, "time": 81.2}`` or ``{"step": 480, "epoch": 3, "eval/AR": 59.4, "time": 99.0}``.
Only the main process writes; other ranks get a logger that does nothing.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from groundkit._io import atomic_path

METRICS_NAME = "metrics.jsonl"
_log = logging.getLogger("groundkit")


class MetricsLogger:
    """Appends records to ``out_dir/metrics.jsonl`` (and TensorBoard when it is installed)."""

    def __init__(self, out_dir: str | Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.path = Path(out_dir) / METRICS_NAME
        self.enabled = enabled
        self._tb = _tensorboard_writer(Path(out_dir) / "tb") if enabled and tensorboard else None

    def log(self, record: dict[str, Any]) -> None:
        """Append ``record``; numeric entries other than step/epoch also go to TensorBoard."""
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, record.get("step", 0))

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step``: what a killed run logged past its checkpoint is
        logged again, identically, by the resumed run."""
        if not self.enabled or not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(line + "\n" for line in keep))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (or of ``dir/metrics.jsonl``), in order."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_NAME
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _tensorboard_writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional; metrics.jsonl has everything
        _log.debug("tensorboard not installed; logging to %s only", METRICS_NAME)
        return None
    return SummaryWriter(str(log_dir))
