"""Training metrics: one JSON object per line in ``metrics.jsonl``, mirrored to TensorBoard.

A record is a flat dict such as ``{"step": 120, "epoch": 3, "loss": 0.41, "loss_dice": 0.2,
"lr": 1e-4, "time": 81.2}`` or ``{"step": 480, "epoch": 3, "eval/AR": 59.4, "time": 99.0}``.
Only the main process writes; other ranks get a logger that does nothing.

A process killed mid-write (a full disk, a power loss) can leave the last line incomplete: readers
drop such a last line with a warning, while a bad line anywhere else is a
:class:`~groundkit.errors.FormatError` naming the file and line.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from groundkit._io import atomic_path
from groundkit.errors import FormatError, WriteError

METRICS_NAME = "metrics.jsonl"
_log = logging.getLogger("groundkit")


class MetricsLogger:
    """Appends records to ``out_dir/metrics.jsonl`` (and TensorBoard when it is installed)."""

    def __init__(self, out_dir: str | Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.path = Path(out_dir) / METRICS_NAME
        self.enabled = enabled
        self._tb = _tensorboard_writer(Path(out_dir) / "tb") if enabled and tensorboard else None

    def log(self, record: dict[str, Any]) -> None:
        """Append ``record``; numeric entries other than step/epoch also go to TensorBoard.

        Raises:
            WriteError: the line could not be written (disk full); the lines before it are kept
                (a part of this one may be there: readers drop an incomplete last line).
        """
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            reason = os.strerror(e.errno).lower() if e.errno else str(e)
            raise WriteError(self.path, f"could not append a record: {reason}", e.errno) from e
        if self._tb is not None:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, record.get("step", 0))

    def reset(self) -> None:
        """Start an empty log (a fresh run in an old ``out_dir``); the old one is not read."""
        if self.enabled and self.path.exists():
            with atomic_path(self.path) as tmp:
                tmp.write_text("")

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step``: what a killed run logged past its checkpoint is
        logged again, identically, by the resumed run. An incomplete last line is dropped with a
        warning."""
        if not self.enabled or not self.path.exists():
            return
        keep = [line for line, record in _parse(self.path) if record.get("step", 0) <= step]
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(line + "\n" for line in keep))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (or of ``dir/metrics.jsonl``), in order.

    An incomplete last line (a write cut short) is dropped with a warning.

    Raises:
        FormatError: a line other than the last is not a JSON object (names file and line).
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_NAME
    return [record for _, record in _parse(path)]


def _parse(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(line, record)`` for every non-blank line of ``path``; see :func:`read_metrics`."""
    lines = [(n, line) for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
             if line.strip()]
    out = []
    for i, (n, line) in enumerate(lines):
        try:
            record = json.loads(line)
            problem = None if isinstance(record, dict) else f"a JSON {type(record).__name__}"
        except json.JSONDecodeError as e:
            problem = f"not valid JSON ({e})"
        if problem is None:
            out.append((line, record))
        elif i == len(lines) - 1:
            _log.warning("%s: line %d is incomplete (a write cut short by a kill or a full disk); "
                         "ignoring it", path, n)
        else:
            raise FormatError(path, f"expected one JSON object per line, got {problem}",
                              item=f"line {n}")
    return out


def _tensorboard_writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional; metrics.jsonl has everything
        _log.debug("tensorboard not installed; logging to %s only", METRICS_NAME)
        return None
    return SummaryWriter(str(log_dir))
