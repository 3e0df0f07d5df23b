"""The real COCO sample (two val2017 images, official panoptic PNGs and JSON) and edited copies."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

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
