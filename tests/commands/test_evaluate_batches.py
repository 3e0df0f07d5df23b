"""``groundkit evaluate`` gives the same predictions and scores at any batch size (to float
precision), on a folder of
real COCO images of different aspect ratios (the fixtures' images and a portrait copy), for every
model type."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from groundkit.cli import main
from groundkit.config import config_to_dict, load_config
from groundkit.engine.checkpoint import save_checkpoint
from groundkit.engine.tasks import task_of
from groundkit.models import model_types
from groundkit.ops.masks import decode_rle

SAMPLE = Path(__file__).parents[1] / "fixtures" / "coco_sample"


@pytest.fixture(scope="module")
def coco_folder(tmp_path_factory):
    """The fixture's images and annotations in the COCO / PNG / RefCOCO layout, as split ``val``,
    with a transposed (portrait) copy of the first image: at 128 px the three pad alone to
    96 x 128, 96 x 128 and 128 x 96, so a batch of them pads each differently."""
    root = tmp_path_factory.mktemp("coco")
    images, annotations = root / "images" / "val", root / "annotations"
    shutil.copytree(SAMPLE / "images", images)
    shutil.copytree(SAMPLE / "panoptic", annotations / "panoptic_val")
    shutil.copytree(SAMPLE / "refcoco", root / "refcoco")
    panoptic = json.loads((SAMPLE / "panoptic.json").read_text())
    narratives = json.loads((SAMPLE / "png_narratives.json").read_text())
    record, ann = panoptic["images"][0], panoptic["annotations"][0]
    portrait = 1_142_238
    Image.open(images / record["file_name"]).transpose(Image.Transpose.TRANSPOSE).save(
        images / f"{portrait}.png")
    Image.open(annotations / "panoptic_val" / ann["file_name"]).transpose(
        Image.Transpose.TRANSPOSE).save(annotations / "panoptic_val" / f"{portrait}.png")
    panoptic["images"].append({**record, "id": portrait, "file_name": f"{portrait}.png",
                               "height": record["width"], "width": record["height"]})
    panoptic["annotations"].append({**ann, "image_id": portrait, "file_name": f"{portrait}.png",
                                    "segments_info": [{**seg, "bbox": [seg["bbox"][i] for i in (1, 0, 3, 2)]}
                                                      for seg in ann["segments_info"]]})
    narratives += [{**n, "image_id": str(portrait)} for n in narratives
                   if str(n["image_id"]) == str(record["id"])]
    (annotations / "panoptic_val.json").write_text(json.dumps(panoptic))
    (annotations / "png_coco_val.json").write_text(json.dumps(narratives))
    return root


def tiny_checkpoint(model_type: str, out: Path, data: Path) -> Path:
    """An untrained tiny model with the default (COCO) categories, saved as a checkpoint."""
    task = task_of(model_type)
    cfg = load_config(task.experiment_class(model_type), None,
                      [*task.tiny_overrides(model_type), *task.input_size_overrides(128)])
    cfg = task.prepare(cfg, task.dataset(cfg, data, "val"))   # what a training run fills in
    torch.manual_seed(0)
    save_checkpoint(out, task.build_model(cfg), config_to_dict(cfg), model_type)
    return out


def evaluated_files(checkpoint: Path, data: Path, out: Path, *options: str) -> dict[Path, bytes]:
    """``groundkit evaluate`` of the val split on the CPU into ``out``: every file written there
    (relative path -> bytes)."""
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--split", "val",
                 "--device", "cpu", "--pred-out", str(out), *options]) == 0
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("model_type", model_types())
def test_evaluate_at_batch_size_1_and_4_writes_the_same_predictions_and_scores(
        model_type, coco_folder, text_encoder, tmp_path, monkeypatch):
    # grounding models take the session's text encoder instead of loading it again
    monkeypatch.setattr("groundkit.models.grounding.TextEncoder", lambda *a, **kw: text_encoder)
    checkpoint = tiny_checkpoint(model_type, tmp_path / "ckpt", coco_folder)
    one, four = (evaluated_files(checkpoint, coco_folder, tmp_path / f"bs{b}", "--batch-size", str(b),
                                 "--json", str(tmp_path / f"bs{b}" / "scores.json"))
                 for b in (1, 4))
    assert one.keys() == four.keys() and any(p.name == "scores.json" for p in one)
    for path in one:
        if path.suffix == ".json":  # predictions and scores to float precision
            assert same_json(json.loads(one[path]), json.loads(four[path])), path
        else:
            assert one[path] == four[path], path


def same_json(a, b, tolerance: float = 1e-5) -> bool:
    """Equal JSON values to float precision: floats within ``tolerance`` (relative above 1: a
    float32 pixel coordinate of a few hundred has a last bit of 3e-5; a score is a float32 mean
    of probabilities behind ~50 layers, and the same image convolved in a batch of 1 or of 2
    gives DRMN logits up to 9e-6 apart, so a score may move by a few 1e-6), RLE masks with at most
    0.1% of their pixels different (a convolution over 2 images may round differently from one
    over 1 image in the last bit, and an untrained model's probabilities sit at the 0.5 threshold)."""
    if isinstance(a, dict) and set(a) == {"size", "counts"}:
        x, y = decode_rle(a), decode_rle(b)
        return x.shape == y.shape and (x != y).mean() <= 1e-3
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k], tolerance) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y, tolerance) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= tolerance * max(1.0, abs(a), abs(b))
    return a == b


@pytest.mark.parametrize("model_type", ["ppmn", "panoptic", "pbrec"])
def test_evaluate_with_loader_workers_writes_the_same_files(model_type, coco_folder, text_encoder,
                                                            tmp_path, monkeypatch):
    """--workers 2 reads the items in two processes: the same batches, so the same bytes."""
    monkeypatch.setattr("groundkit.models.grounding.TextEncoder", lambda *a, **kw: text_encoder)
    checkpoint = tiny_checkpoint(model_type, tmp_path / "ckpt", coco_folder)
    outputs = [evaluated_files(checkpoint, coco_folder, tmp_path / f"w{w}", "--batch-size", "2",
                               "--workers", str(w)) for w in (0, 2)]
    assert outputs[0] and outputs[0] == outputs[1]


@pytest.mark.parametrize("value", ["-1", "65", "two"])
def test_evaluate_refuses_a_worker_count_out_of_bounds(value, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "--checkpoint", "x", "--data", "y", "--workers", value])
    assert stop.value.code == 2 and "from 0 to 64" in capsys.readouterr().err
