"""File I/O helpers.

Atomic writes (:func:`atomic_path`): a crash never leaves a half-written file where a good one was,
and a full disk is a :class:`~groundkit.errors.WriteError` saying so. Restricted pickle reads
(:func:`safe_load_pickle`) live in :mod:`groundkit._pickle` and are imported here too.
"""
from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Collection, Iterator

from groundkit._pickle import safe_load_pickle  # noqa: F401  (its old home; refcoco imports it here)
from groundkit.errors import WriteError

_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


@contextmanager
def atomic_path(path: str | Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    The temporary file is ``.NAME.XXXXXXXX.tmpSUFFIX`` in the same folder (NAME = ``path.name``;
    a process killed mid-write leaves it behind, see :func:`remove_stale_temps`). With ``durable``
    its data is flushed to the disk (``fsync``) before the rename and the folder after it (where
    the system supports that), so the rename survives a power loss too; pass ``durable=False``
    for bulk files that can be made again (thousands of generated images).

    Raises:
        WriteError: the disk is full (``ENOSPC``, quota), or the flush or rename failed; the file
            at ``path`` before, if any, is intact and the temporary file is removed; ``path`` is a
            folder; its folder cannot be made. A device or FIFO at ``path`` (``/dev/null``) is
            written into, not replaced; a full one (``/dev/full``) is a WriteError too.
    """
    path = Path(path)
    if path.is_dir():
        raise WriteError(path, "could not write it: this is a folder, and a file was expected",
                         errno.EISDIR)
    if path.exists() and not path.is_file():  # a device (/dev/null, /dev/full) or a FIFO:
        yield from _write_through(path)          # write into it, never rename over it
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_error(path, e) from e
    tmp = _temp_file(path, path.parent)
    try:
        yield tmp
        try:
            if durable:
                _fsync_file(tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
            os.replace(tmp, path)
        except OSError as e:  # these steps concern this file only
            raise _write_error(path, e) from e
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, WriteError) and e.errno in _DISK_FULL:
            raise _write_error(path, e) from e
        raise
    if durable:
        _fsync_dir(path.parent)


def _temp_file(path: Path, folder: Path | None) -> Path:
    """An empty ``.NAME.XXXXXXXX.tmpSUFFIX`` file for ``path`` in ``folder`` (None: the system's
    temporary folder); failing to make it is a WriteError naming ``path``."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=folder)
    except OSError as e:
        raise _write_error(path, e) from e
    os.close(fd)
    return Path(tmp)


def _write_through(path: Path) -> Iterator[Path]:
    """:func:`atomic_path` for a target that is not a regular file: the block writes a temporary
    file, whose bytes are then copied into ``path`` (a full device is a WriteError)."""
    tmp = _temp_file(path, None)
    try:
        yield tmp
        try:
            with open(tmp, "rb") as src, open(path, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        except OSError as e:
            raise WriteError(path, f"could not write it: {_reason(e)}", e.errno) from e
    finally:
        tmp.unlink(missing_ok=True)


def check_output_dir(path: str | Path, what: str) -> Path:
    """Check, before any work, that the folder ``path`` (given as option ``what``, e.g.
    ``--out``) can be made and written: it is not a file, and a probe file can be created in it
    and removed. Folders it had to make for the probe are removed again; nothing is left behind.

    Raises:
        WriteError: naming ``what`` and ``path`` and why (a file is there, read-only, /proc, ...).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WriteError(path, f"{what}: expected a folder here, and this is a file", errno.ENOTDIR)
    made = []
    try:
        for folder in reversed([path, *path.parents]):
            if folder.exists() and not folder.is_dir():
                raise WriteError(path, f"{what}: cannot make this folder: {folder} is a file",
                                 errno.ENOTDIR)
            if not folder.exists():
                try:
                    folder.mkdir()
                except FileExistsError:  # made meanwhile by another process: theirs to keep
                    if folder.is_dir():
                        continue
                    raise WriteError(path, f"{what}: cannot make this folder: {folder} is a file",
                                     errno.ENOTDIR) from None
                except OSError as e:
                    raise WriteError(path, f"{what}: cannot make this folder: {_reason(e)}",
                                     e.errno) from e
                made.append(folder)
        fd, probe = tempfile.mkstemp(prefix=".groundkit-probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        if isinstance(e, WriteError):
            raise
        raise WriteError(path, f"{what}: cannot write in this folder: {_reason(e)}", e.errno) from e
    finally:
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:
                pass
    return path


def check_output_file(path: str | Path, what: str) -> Path:
    """Check, before any work, that the file ``path`` (option ``what``, e.g. ``--json``) can be
    written: it is not a folder, and its folder can be made and written (see
    :func:`check_output_dir`). A device or FIFO there (``/dev/null``) must be writable; it is
    written into, never replaced (a full one, ``/dev/full``, fails at the write as a WriteError).

    Raises:
        WriteError: naming ``what`` and ``path`` and why.
    """
    path = Path(path)
    if path.is_dir():
        raise WriteError(path, f"{what}: expected a file here, and this is a folder", errno.EISDIR)
    if path.exists() and not path.is_file():
        if not os.access(path, os.W_OK):
            raise WriteError(path, f"{what}: not writable", errno.EACCES)
        return path
    try:
        check_output_dir(path.parent, what)
    except WriteError as e:
        raise WriteError(path, e.message.replace("this folder", f"its folder {path.parent}")
                         .replace("expected a folder here, and this is a file",
                                  f"its folder {path.parent} is a file"), e.errno) from None
    return path


def _reason(e: OSError) -> str:
    return os.strerror(e.errno).lower() if e.errno else str(e)


def write_failure(path: str | Path, reason: str, code: int | None = None) -> WriteError:
    """The :class:`WriteError` for a write to ``path`` that failed for ``reason``, raised before
    anything was renamed over ``path`` (so what is there is intact)."""
    path = Path(path)
    kept = f"the previous {path.name} is intact" if path.exists() else "nothing was written there"
    return WriteError(path, f"could not write it: {reason}; {kept}", code)


def remove_stale_temps(directory: str | Path, names: Collection[str]) -> list[Path]:
    """Delete the temporary files that :func:`atomic_path` left in ``directory`` for the files
    named ``names`` when its process was killed mid-write; return their paths.

    Only regular files named exactly as :func:`atomic_path` names them (``.NAME.XXXXXXXX.tmp``
    + NAME's suffix) are touched; call it only when no other process is writing those files.
    """
    directory = Path(directory)
    patterns = [re.compile(re.escape(f".{name}.") + r"[A-Za-z0-9_]{6,16}"
                           + re.escape(".tmp" + Path(name).suffix)) for name in names]
    removed = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if (any(p.fullmatch(entry.name) for p in patterns)
                and entry.is_file(follow_symlinks=False)):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


def _write_error(path: Path, e: OSError) -> WriteError:
    reason = os.strerror(e.errno).lower() if e.errno else str(e)
    return write_failure(path, reason, e.errno)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Flush a rename in ``directory`` to the disk; a no-op where folders cannot be opened
    (Windows) or flushed (some network file systems)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: str | Path, obj: Any, indent: int | None = None) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent))


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
