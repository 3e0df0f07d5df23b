"""File I/O helpers.

Atomic writes: a crash never leaves a half-written file where a good one was. Restricted pickle
reads (:func:`safe_load_pickle`): a pickle from elsewhere loads as plain data or not at all, never
running code.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Collection, Iterator

from groundkit.errors import FormatError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any, indent: int | None = None) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent))


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


class _RestrictedUnpickler(pickle.Unpickler):
    """Refuses every global not in ``allowed``, so loading can call nothing else: with no globals
    a pickle can only build lists, dicts, tuples, sets, strings, bytes, bytearrays, numbers,
    bools and None."""

    def __init__(self, file: Any, path: Path, allowed: frozenset[tuple[str, str]], what: str,
                 **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._path, self._allowed, self._what = path, allowed, what

    def find_class(self, module: str, name: str) -> Any:
        # Checked against the names exactly as the file spells them, before anything is imported.
        if (module, name) in self._allowed:
            return super().find_class(module, name)
        raise FormatError(self._path, f"refused to load: the {self._what} refers to the global "
                                      f"'{module}.{name}', and only plain data (lists, dicts, "
                                      f"strings, numbers) is accepted")

    def persistent_load(self, pid: Any) -> Any:
        raise FormatError(self._path, f"refused to load: the {self._what} holds a persistent id, "
                                      f"and only plain data is accepted")


def safe_load_pickle(path: str | Path, allowed: Collection[tuple[str, str]] = (), *,
                     what: str = "pickle", encoding: str = "latin1") -> Any:
    """Unpickle ``path`` admitting no global but the ``(module, name)`` pairs in ``allowed``.

    A pickle calls the globals it names while it loads (that is how a ``__reduce__`` payload runs
    code); this loader refuses each one not allowed before importing or calling it, so a hostile
    file is a :class:`FormatError` and runs nothing. With the default ``allowed=()`` only plain
    data loads. ``allowed`` pairs are matched exactly as the file names them (e.g. a future
    ``("numpy.core.multiarray", "_reconstruct")``); admit only callables that build data.

    ``encoding="latin1"`` reads Python 2 ``str`` (bytes) as ``str`` with every byte kept
    (``s.encode("latin1")`` gives the bytes back), as numpy and the RefCOCO ``refer`` API files
    need. Any failure (missing file, truncated or non-pickle bytes, a refused global) is a
    :class:`FormatError` naming the file; ``what`` names the kind of file in its message.
    """
    path = Path(path)
    try:
        # From memory, not the file: reading a file, the unpickler allocates what a length field
        # claims (4 GB for a flipped byte) before it finds the data short; from a buffer it checks.
        # Except for bytes (protocol 3+, never in a Python 2 refs file): it reserves their claimed
        # length, up to 4 GB left untouched (RSS does not grow), then fails; a longer claim is a
        # MemoryError, a FormatError below. A pickletools scan first would stop it at 2-3x the
        # load time of a real refs file.
        data = io.BytesIO(path.read_bytes())
        return _RestrictedUnpickler(data, path, frozenset(allowed), what, encoding=encoding).load()
    except FileNotFoundError:
        raise FormatError(path, "file not found") from None
    except FormatError:
        raise
    except Exception as e:  # unpickling arbitrary bytes can raise almost any exception type
        raise FormatError(path, f"not a readable {what}: {type(e).__name__}: {e}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
