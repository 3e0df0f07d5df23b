"""Restricted pickle reads: a pickle from elsewhere loads as data or not at all, never running code.

A pickle names the globals (functions, classes) it calls while it loads: that is how a
``__reduce__`` payload runs ``os.system``. :func:`safe_load_pickle` refuses every global it was not
told to admit, before importing or calling it. Two users:

- RefCOCO's ``refs(<splitBy>).p`` (plain lists, dicts, strings and numbers: no global at all);
- detectron2 / Detectron weight files (``model_final_*.pkl``, ``R-101.pkl``): numeric numpy
  arrays, admitted through :data:`NUMPY_ARRAYS`, a table of *stand-ins* for numpy's pickle globals.
  The stand-ins check every argument (dtype, shape, byte count) before numpy sees it, so an array
  is only ever built from bytes the file really holds, and nothing but an array can be built.
"""
from __future__ import annotations

import io
import pickle
import pickletools
from collections.abc import Collection, Mapping
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

from groundkit.errors import FormatError

PLAIN_DATA = "plain data (lists, dicts, strings, numbers)"


class _RestrictedUnpickler(pickle.Unpickler):
    """Refuses every global not in ``allowed``, so loading can call nothing else: with no globals
    a pickle can only build lists, dicts, tuples, sets, strings, bytes, bytearrays, numbers,
    bools and None. ``allowed`` maps ``(module, name)`` to the object to use instead of importing
    it (a stand-in), or to None to import the real one."""

    def __init__(self, file: Any, path: Path, allowed: Mapping[tuple[str, str], Any], what: str,
                 accepts: str, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._path, self._allowed, self._what, self._accepts = path, allowed, what, accepts

    def find_class(self, module: str, name: str) -> Any:
        # Checked against the names exactly as the file spells them, before anything is imported.
        if (module, name) not in self._allowed:
            raise FormatError(self._path, f"refused to load: the {self._what} refers to the global "
                                          f"'{module}.{name}', and only {self._accepts} is accepted")
        stand_in = self._allowed[(module, name)]
        return super().find_class(module, name) if stand_in is None else stand_in

    def persistent_load(self, pid: Any) -> Any:
        raise FormatError(self._path, f"refused to load: the {self._what} holds a persistent id, "
                                      f"and only {self._accepts} is accepted")


def safe_load_pickle(path: str | Path,
                     allowed: Collection[tuple[str, str]] | Mapping[tuple[str, str], Any] = (), *,
                     what: str = "pickle", encoding: str = "latin1", accepts: str = PLAIN_DATA,
                     check_lengths: bool = False) -> Any:
    """Unpickle ``path`` admitting no global but those in ``allowed``.

    ``allowed``: ``(module, name)`` pairs matched exactly as the file names them; a collection
    imports the real global (admit only callables that build data), a mapping gives the object to
    use in its place (e.g. :data:`NUMPY_ARRAYS`). ``accepts`` says what loads, in the refusal.

    ``encoding="latin1"`` reads Python 2 ``str`` (bytes) as ``str`` with every byte kept
    (``s.encode("latin1")`` gives the bytes back), as numpy and the RefCOCO ``refer`` API files
    need. ``check_lengths`` first checks that every length field in the file (bytes, strings)
    fits in what the file holds; see the note in the code for why it is optional. Any failure
    (missing file, truncated or non-pickle bytes, a refused global) is a :class:`FormatError`
    naming the file; ``what`` names the kind of file in its message.
    """
    path = Path(path)
    table = allowed if isinstance(allowed, Mapping) else dict.fromkeys(allowed)
    try:
        # From memory, not the file: reading a file, the unpickler allocates what a length field
        # claims (4 GB for a flipped byte) before it finds the data short; from a buffer it checks.
        # Except for bytes (protocol 3+, never in a Python 2 refs file): it reserves their claimed
        # length, up to 4 GB left untouched (RSS does not grow), then fails; a longer claim is a
        # MemoryError, a FormatError below. The pickletools scan of ``check_lengths`` stops that
        # at no allocation; it costs 2-3x the load time of a refs file (millions of small items),
        # little for a weight file (a few thousand large arrays), where bytes are the bulk.
        data = path.read_bytes()
        if check_lengths:
            _check_lengths(data)
        return _RestrictedUnpickler(io.BytesIO(data), path, table, what, accepts,
                                    encoding=encoding).load()
    except FileNotFoundError:
        raise FormatError(path, "file not found") from None
    except FormatError:
        raise
    except Exception as e:  # unpickling arbitrary bytes can raise almost any exception type
        raise FormatError(path, f"not a readable {what}: {type(e).__name__}: {e}") from None


def _check_lengths(data: bytes) -> None:
    """Walk the opcodes of ``data`` without building anything: pickletools reads a counted
    argument with ``read(n)``, which returns what is there, so a length field larger than the
    file is a ValueError here, before the unpickler would reserve it."""
    for _ in pickletools.genops(io.BytesIO(data)):
        pass


# --- numpy arrays --------------------------------------------------------------------------------
# numpy pickles an array (protocols 0-4) as
#   _reconstruct(ndarray, (0,), b"b") then BUILD (1, shape, dtype, fortran_order, raw_bytes)
# with dtype = dtype("f4", False, True) then BUILD (3, "<", None, None, None, -1, -1, 0);
# protocol 5 as _frombuffer(bytes, dtype, shape, order). Protocol 2 writes bytes as
# _codecs.encode(latin1_text, "latin1"). The stand-ins below take exactly these shapes of call.

# Numeric kinds only: object arrays would hold arbitrary objects, strings are not weights.
_NUMERIC = {f"{kind}{size}" for kind, sizes in (("f", "248"), ("i", "1248"), ("u", "1248"))
            for size in sizes} | {"b1"}
_BYTE_ORDERS = {"<", ">", "|", "="}


class _NdarrayToken:
    """Stands in for ``numpy.ndarray`` in a file: only ever an argument of ``_reconstruct``; not
    callable, so a file cannot allocate an array of a shape of its choosing with it."""

    def __repr__(self) -> str:
        return "<numpy.ndarray token>"


_NDARRAY = _NdarrayToken()


class _DtypeSpec:
    """Stands in for a ``numpy.dtype``: a numeric type code and, after BUILD, its byte order."""

    def __init__(self, code: str, byte_order: str = "=") -> None:
        self.code, self.byte_order = code, byte_order

    def __setstate__(self, state: Any) -> None:
        # (version, byte order, subarray, names, fields, itemsize, alignment, flags[, metadata]):
        # a plain numeric dtype has no subarray, names or fields and flags 0.
        if (not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4)
                or state[1] not in _BYTE_ORDERS or state[2:5] != (None, None, None)
                or state[7] != 0 or (len(state) == 9 and state[8] is not None)):
            raise pickle.UnpicklingError(f"unsupported dtype state {_short(state)}")
        self.byte_order = state[1]

    def dtype(self) -> np.dtype:
        return np.dtype(self.code).newbyteorder(self.byte_order)


def _dtype(code: Any, align: Any = False, copy: Any = True) -> _DtypeSpec:
    """Stand-in for ``numpy.dtype(code, align, copy)``: numeric type codes only."""
    if isinstance(code, bytes):
        code = code.decode("latin1")
    if code not in _NUMERIC:
        raise pickle.UnpicklingError(f"unsupported array type {_short(code)}: only numeric "
                                     f"arrays ({', '.join(sorted(_NUMERIC))}) are accepted")
    return _DtypeSpec(code)


class _PickledArray(np.ndarray):
    """What ``_reconstruct`` returns: an empty array whose BUILD checks the state it is given
    before numpy fills it. ``np.asarray`` of it is a plain ndarray."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 4:  # numpy < 1.0 files: no version
            state = (1, *state)
        if not isinstance(state, tuple) or len(state) != 5 or state[0] != 1:
            raise pickle.UnpicklingError(f"unsupported array state {_short(state)}")
        _, shape, spec, fortran, raw = state
        dtype = _checked_dtype(spec)
        raw = _checked_bytes(raw, _checked_shape(shape), dtype)
        np.ndarray.__setstate__(self, (1, shape, dtype, bool(fortran), raw))


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> _PickledArray:
    """Stand-in for ``numpy.core.multiarray._reconstruct``: an empty array whatever ``shape`` the
    file claims (BUILD sets the real shape, checked against the bytes)."""
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError("_reconstruct of something other than numpy.ndarray")
    return np.ndarray.__new__(_PickledArray, (0,), np.uint8)


def _frombuffer(buffer: Any, spec: Any, shape: Any, order: Any) -> np.ndarray:
    """Stand-in for ``numpy.core.numeric._frombuffer`` (protocol 5, data in the file)."""
    dtype = _checked_dtype(spec)
    raw = _checked_bytes(buffer, _checked_shape(shape), dtype)
    if order not in ("C", "F"):
        raise pickle.UnpicklingError(f"unsupported array order {_short(order)}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape, order=order)


def _latin1_encode(text: Any, encoding: Any = "latin1") -> bytes:
    """Stand-in for ``_codecs.encode``: protocol 2's spelling of bytes, and nothing else (other
    codecs could decompress or import)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is accepted only as latin1 text -> bytes")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    """Stand-in for ``bytes`` (protocols 0-2 spell ``b""`` as ``bytes()``); ``bytes(n)`` would
    allocate n bytes the file does not hold, so only the call without arguments is accepted."""
    if args:
        raise pickle.UnpicklingError("bytes(...) is accepted only without arguments")
    return b""


def _checked_dtype(spec: Any) -> np.dtype:
    if not isinstance(spec, _DtypeSpec):
        raise pickle.UnpicklingError(f"array dtype is not a numpy dtype: {_short(spec)}")
    return spec.dtype()


def _checked_shape(shape: Any) -> tuple[int, ...]:
    if (not isinstance(shape, tuple) or len(shape) > 32
            or not all(type(n) is int and n >= 0 for n in shape)):
        raise pickle.UnpicklingError(f"bad array shape {_short(shape)}")
    return shape


def _checked_bytes(raw: Any, shape: tuple[int, ...], dtype: np.dtype) -> bytes | bytearray:
    """The array's bytes, checked to be exactly what ``shape`` needs: Python integers cannot
    overflow, so a claimed shape of 10^30 elements is refused here, before numpy allocates."""
    if isinstance(raw, str):  # Python 2 str read with encoding="latin1"
        raw = raw.encode("latin1")
    if not isinstance(raw, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"array data is not bytes: {type(raw).__name__}")
    need = prod(shape) * dtype.itemsize
    if len(raw) != need:
        raise pickle.UnpicklingError(f"array of shape {_short(shape)} and type {dtype.str} needs "
                                     f"{_short(need)} bytes, the file holds {len(raw)}")
    return raw


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 200 else "a huge number"
    return text if len(text) <= limit else text[:limit] + "..."


_CORES = ("numpy.core", "numpy._core")  # numpy 1 and numpy 2 spell the module differently
NUMPY_ARRAYS: Mapping[tuple[str, str], Any] = {
    **{(f"{core}.multiarray", "_reconstruct"): _reconstruct for core in _CORES},
    **{(f"{core}.numeric", "_frombuffer"): _frombuffer for core in _CORES},
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _latin1_encode,
    **{(builtins, "bytes"): _empty_bytes for builtins in ("builtins", "__builtin__")},
}
"""Stand-ins for the globals numpy's array pickles name: pass as ``allowed`` (with
``accepts=PLAIN_DATA_AND_ARRAYS``) to load numeric arrays and plain data, and nothing else."""

PLAIN_DATA_AND_ARRAYS = PLAIN_DATA + " and numeric numpy arrays"


def load_array_pickle(path: str | Path, what: str = "pickle") -> Any:
    """Unpickle ``path`` admitting plain data and numeric numpy arrays only (e.g. a detectron2
    weight file); length fields are checked first, so nothing larger than the file is
    allocated. FormatError naming the file for anything else."""
    return safe_load_pickle(path, NUMPY_ARRAYS, what=what, accepts=PLAIN_DATA_AND_ARRAYS,
                            check_lengths=True)
