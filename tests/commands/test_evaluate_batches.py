"""``groundkit evaluate`` gives the same predictions and scores at any batch size, on a folder of
real COCO images of different aspect ratios (the two images of the fixtures), for every model type."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from groundkit.cli import main
from groundkit.config import config_to_dict, load_config
from groundkit.engine.checkpoint import save_checkpoint
from groundkit.engine.tasks import task_of
from groundkit.models import model_types

SAMPLE = Path(__file__).parents[1] / "fixtures" / "coco_sample"
# 427 x 640 -> 128 x 192 and 360 x 640 -> 128 x 228: padded alone to 128 x 192 and 128 x 256
# (not smaller: at 64 px the panoptic detector's P7 is 1 x 1, too small for its GroupNorm)
RESIZE = ["data.resize.short_side=128", "data.resize.max_size=400"]


@pytest.fixture(scope="module")
def coco_folder(tmp_path_factory):
    """The fixture's images and annotations in the COCO / PNG layout, as split ``val``."""
    root = tmp_path_factory.mktemp("coco")
    shutil.copytree(SAMPLE / "images", root / "images" / "val")
    (root / "annotations").mkdir()
    shutil.copy(SAMPLE / "panoptic.json", root / "annotations" / "panoptic_val.json")
    shutil.copytree(SAMPLE / "panoptic", root / "annotations" / "panoptic_val")
    shutil.copy(SAMPLE / "png_narratives.json", root / "annotations" / "png_coco_val.json")
    return root


def tiny_checkpoint(model_type: str, out: Path) -> Path:
    """An untrained tiny model with the default (COCO) categories, saved as a checkpoint."""
    task = task_of(model_type)
    cfg = load_config(task.experiment_class(model_type), None,
                      [*task.tiny_overrides(model_type), *RESIZE])
    torch.manual_seed(0)
    save_checkpoint(out, task.build_model(cfg), config_to_dict(cfg), model_type)
    return out


@pytest.mark.parametrize("model_type", model_types())
def test_evaluate_at_batch_size_1_and_4_writes_the_same_predictions_and_scores(
        model_type, coco_folder, text_encoder, tmp_path, monkeypatch):
    # grounding models take the session's text encoder instead of loading it again
    monkeypatch.setattr("groundkit.models.grounding.TextEncoder", lambda *a, **kw: text_encoder)
    checkpoint = tiny_checkpoint(model_type, tmp_path / "ckpt")
    outputs = []
    for batch_size in (1, 4):
        out = tmp_path / f"bs{batch_size}"
        assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(coco_folder),
                     "--split", "val", "--batch-size", str(batch_size), "--device", "cpu",
                     "--pred-out", str(out), "--json", str(out / "scores.json")]) == 0
        outputs.append({p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*"))
                        if p.is_file()})
    one, four = outputs
    assert one.keys() == four.keys() and any(p.name == "scores.json" for p in one)
    for path in one:
        assert one[path] == four[path], path
    assert json.loads(one[Path("scores.json")])  # the scores, equal above, are there
