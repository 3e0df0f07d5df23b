"""The real COCO sample (two val2017 images, official panoptic PNGs and JSON) and edited copies."""
from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

from groundkit.errors import FormatError

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "coco_sample"


@pytest.fixture
def sample() -> Path:
    return SAMPLE


@pytest.fixture
def sample_copy(tmp_path: Path) -> Path:
    """A writable copy of the sample's panoptic JSON, PNGs and narratives."""
    out = tmp_path / "sample"
    shutil.copytree(SAMPLE, out, ignore=shutil.ignore_patterns("images"))
    for p in out.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)  # the fixture files are read-only
    return out


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=1))


@pytest.fixture
def edit_json():
    """``edit_json(path, change)``: load ``path``, let ``change(data)`` edit it, write it back."""
    return _edit_json


@contextmanager
def _raises_naming(path, item, field):
    with pytest.raises(FormatError) as info:
        yield info
    e = info.value
    assert (e.file, e.item, e.field) == (None if path is None else str(path), item, field), str(e)


@pytest.fixture
def raises_naming():
    """``with raises_naming(path, item, field):`` expects a FormatError that names ``path``,
    ``item`` and ``field`` (its attributes, not only its message)."""
    return _raises_naming
