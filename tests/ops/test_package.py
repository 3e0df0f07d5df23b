"""``groundkit.ops`` loads its names on first use, so that the mask codecs come without torch (the
scorers need them), and its names are what they were when it imported them all: the functions of
its modules (``roi_align`` the function, not the submodule of that name)."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import groundkit
import groundkit.ops as ops
import groundkit.ops.roi_align  # noqa: F401  (binds the submodule on the package: see below)


def test_every_name_is_the_function_of_its_module():
    for name in ops.__all__:
        module = importlib.import_module(f"groundkit.ops.{ops._MODULE_OF[name]}")
        assert getattr(ops, name) is getattr(module, name), name
    assert not isinstance(ops.roi_align, types.ModuleType)
    from groundkit.ops import boxes, roi_align
    assert isinstance(boxes, types.ModuleType) and roi_align is ops.roi_align
    assert set(ops.__all__) <= set(dir(ops))
    with pytest.raises(AttributeError, match="no attribute 'box_nms'"):
        ops.box_nms  # noqa: B018


def test_mask_codecs_import_no_torch():
    code = ("import sys, groundkit.ops, groundkit.ops.masks\n"
            "assert 'torch' not in sys.modules, 'imported torch'\n"
            "groundkit.ops.decode_rle(groundkit.ops.encode_rle([[1, 0]]))\n"
            "assert 'torch' not in sys.modules, 'imported torch'\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(groundkit.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
