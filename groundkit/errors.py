"""Errors a user can act on: each names the file, the item and the field at fault."""
from __future__ import annotations

from functools import partial
from pathlib import Path


class GroundkitError(Exception):
    """Base class of every error groundkit raises on purpose."""


class FormatError(GroundkitError, ValueError):
    """A file does not follow its format.

    Example message: ``panoptic_val.json: annotation of image 42, segment 7: field 'category_id':
    expected an id listed in 'categories', got 999``.
    """

    def __init__(self, file: str | Path | None, message: str, *, item: str | None = None,
                 field: str | None = None) -> None:
        self.file = None if file is None else str(file)
        self.message = message
        self.item = item
        self.field = field
        where = [p for p in (self.file, item, f"field '{field}'" if field else None) if p]
        super().__init__(": ".join(where + [message]))

    def __reduce__(self):
        # The default rebuilds from the joined message alone; a worker process's error must
        # arrive whole (e.g. from a multiprocessing pool).
        return (partial(FormatError, item=self.item, field=self.field), (self.file, self.message))


class ConfigError(GroundkitError, ValueError):
    """A configuration key or value is not valid (unknown key, wrong type, out of range)."""


class InputError(GroundkitError, ValueError):
    """An argument given to the API or CLI cannot be used (bad caption, span, image, ...)."""


class WriteError(GroundkitError, OSError):
    """A file could not be written (disk full, quota, permissions); the file that was at its path
    before, if any, is intact (writes go through a temporary file renamed over it).

    Example message: ``runs/x/model.safetensors: could not write it: no space left on device;
    the previous model.safetensors is intact``. ``errno`` is the cause's (``ENOSPC``) when known.
    """

    def __init__(self, file: str | Path, message: str, errno: int | None = None) -> None:
        self.file = str(file)
        self.message = message
        super().__init__(f"{self.file}: {message}")
        self.errno = errno

    def __reduce__(self):
        return (WriteError, (self.file, self.message, self.errno))


class TrainingInterrupted(GroundkitError):
    """Training stopped on SIGINT or SIGTERM after saving a resumable state.

    ``signal_number`` is the signal; ``exit_code`` what a shell reports for it (128 + number:
    130 for SIGINT, 143 for SIGTERM), which ``groundkit train`` exits with.
    """

    def __init__(self, message: str, signal_number: int) -> None:
        self.signal_number = signal_number
        self.exit_code = 128 + signal_number
        super().__init__(message)

    def __reduce__(self):
        return (TrainingInterrupted, (str(self), self.signal_number))
