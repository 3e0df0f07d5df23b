"""The restricted unpickler's numpy stand-ins: numeric arrays load from every protocol, exactly;
anything that would call more than an array constructor is refused."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from groundkit._pickle import load_array_pickle, safe_load_pickle
from groundkit.errors import FormatError

ARRAYS = {
    "f4": np.arange(6, dtype=np.float32).reshape(2, 3),
    "big_endian": np.array([1, -2], dtype=">i8"),
    "fortran": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(3, 2)),
    "empty": np.zeros((0, 4), np.float32),
    "half": np.ones(3, np.float16),
    "bool": np.array([True, False]),
    "scalar_shape": np.array(3.5, np.float32),
}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_numeric_arrays_load_from_every_protocol(tmp_path, protocol):
    data = {"model": ARRAYS, "__author__": "x", "n": [1, 2.0, None]}
    (tmp_path / "a.pkl").write_bytes(pickle.dumps(data, protocol=protocol))
    out = load_array_pickle(tmp_path / "a.pkl")
    assert out["__author__"] == "x" and out["n"] == [1, 2.0, None]
    for name, expected in ARRAYS.items():
        got = np.asarray(out["model"][name])
        assert type(got) is np.ndarray and got.shape == expected.shape, name
        assert got.dtype.kind == expected.dtype.kind and np.array_equal(got, expected), name


def test_plain_loader_still_refuses_arrays(tmp_path):
    (tmp_path / "a.p").write_bytes(pickle.dumps([np.zeros(2)], protocol=2))
    with pytest.raises(FormatError, match=r"a\.p: refused to load: the pickle refers to the global "
                                          r"'numpy\._?core\.multiarray\._reconstruct', and only "
                                          r"plain data \(lists, dicts, strings, numbers\) is"):
        safe_load_pickle(tmp_path / "a.p")


@pytest.mark.parametrize("payload", [
    b"c_codecs\nencode\n(Vabc\nVzlib\ntR.",          # a codec other than latin1
    b"cbuiltins\nbytes\n(I4000000000\ntR.",          # bytes(n) allocates n bytes
    b"cnumpy\ndtype\n(VO8\nI00\nI01\ntR.",            # object dtype
    b"cnumpy\ndtype\n(VU8\nI00\nI01\ntR.",            # strings are not weights
])
def test_stand_ins_refuse_anything_but_their_array_calls(tmp_path, payload):
    (tmp_path / "x.pkl").write_bytes(payload)
    with pytest.raises(FormatError, match=r"x\.pkl: not a readable pickle: UnpicklingError"):
        load_array_pickle(tmp_path / "x.pkl")


def test_other_globals_are_refused_naming_arrays(tmp_path):
    (tmp_path / "x.pkl").write_bytes(b"cnumpy\nload\n(Vx.npy\ntR.")
    with pytest.raises(FormatError, match=r"refers to the global 'numpy\.load', and only plain data "
                                          r"\(lists, dicts, strings, numbers\) and numeric numpy "
                                          r"arrays is accepted"):
        load_array_pickle(tmp_path / "x.pkl")
