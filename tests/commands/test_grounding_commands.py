"""evaluate / predict / train on a tiny checkpoint and a tiny generated split."""
import json
from pathlib import Path

import pytest
import torch

import groundkit
from groundkit.cli import main
from groundkit.data.formats import read_grounding_predictions
from groundkit.engine.tasks import task_of
from groundkit.metrics.files import score_png_files


def test_evaluate_writes_predictions_that_score_the_same(tiny_ppmn_checkpoint, tiny_synthetic,
                                                         tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(tiny_ppmn_checkpoint), "--data",
                 str(tiny_synthetic), "--split", "val", "--json", str(out / "scores.json"),
                 "--pred-out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "overall" in printed and "plurals" in printed
    assert (out / "recall_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    scores = json.loads((out / "scores.json").read_text())
    ann = tiny_synthetic / "annotations"
    again = score_png_files(ann / "png_coco_val.json", ann / "panoptic_val.json",
                            ann / "panoptic_val", out / "predictions.json").scores()
    assert scores["overall"]["ar"] == pytest.approx(again["overall"]["ar"], abs=1e-12)
    assert len(read_grounding_predictions(out / "predictions.json")) == 4


def test_predict_writes_overlay_and_rle_json(tiny_ppmn_checkpoint, tiny_synthetic, tmp_path):
    image = next((tiny_synthetic / "images" / "val").iterdir())
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(tiny_ppmn_checkpoint), "--image", str(image),
                 "--caption", "There is [a red circle] on [the grass].", "--out", str(out),
                 "--device", "cpu"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert [p["utterance"] for p in result["phrases"]] == ["a red circle", "the grass"]
    assert result["phrases"][0]["mask"]["size"] == [64, 64]
    assert [p["span"] for p in result["phrases"]] == [[9, 21], [25, 34]]
    assert (out / "overlay.png").stat().st_size > 0
    # its phrases are records of the prediction files: the same keys, read by the same reader
    as_file = tmp_path / "predictions.json"
    as_file.write_text(json.dumps([{"image_id": "1", "caption": result["caption"],
                                    "phrases": result["phrases"]}]))
    read = read_grounding_predictions(as_file)[0]["phrases"]
    assert [(p["segment_index"], p["utterance"]) for p in read] == [(0, "a red circle"),
                                                                     (1, "the grass")]


def test_predict_bad_caption_is_an_error_not_a_traceback(tiny_ppmn_checkpoint, tiny_synthetic,
                                                         tmp_path, capsys):
    image = next((tiny_synthetic / "images" / "val").iterdir())
    code = main(["predict", "--checkpoint", str(tiny_ppmn_checkpoint), "--image", str(image),
                 "--caption", "an [unclosed phrase", "--out", str(tmp_path)])
    assert code == 2 and "never closed" in capsys.readouterr().err


def test_train_resumes_and_rejects_unknown_keys(tiny_synthetic, tmp_path, capsys):
    from groundkit.engine.checkpoint import load_checkpoint
    config = Path(groundkit.__file__).parent / "configs" / "ppmn_synthetic.yaml"
    args = ["train", "--config", str(config), f"data.root={tiny_synthetic}",
            *task_of("ppmn").tiny_overrides("ppmn"), "trainer.batch_size=2",
            f"trainer.out_dir={tmp_path / 'run'}"]
    assert main(args) == 0
    state, meta = load_checkpoint(tmp_path / "run")
    assert meta["model_type"] == "ppmn" and meta["meta"]["epoch"] == 1
    assert 0 <= meta["meta"]["metrics"]["ar"] <= 1  # evaluated on val after the last epoch
    assert sum(v.numel() for v in state.values()) < 2_000_000  # no text encoder inside
    assert state["semantic_head.weight"].shape[0] == 16  # the config's auxiliary loss trained
    assert main(args[:3] + ["model.roundz=2"]) == 2
    assert "did you mean 'model.rounds'" in capsys.readouterr().err
    assert main(args + ["model.semantic_classes=3"]) == 2
    assert "has 16 categories" in capsys.readouterr().err


def test_train_init_from_a_checkpoint_fine_tunes_it(tiny_synthetic, tmp_path, capsys):
    from groundkit.engine.checkpoint import load_checkpoint
    config = Path(groundkit.__file__).parent / "configs" / "ppmn_synthetic.yaml"
    args = ["train", "--config", str(config), f"data.root={tiny_synthetic}",
            *task_of("ppmn").tiny_overrides("ppmn"), "trainer.batch_size=2",
            "trainer.max_steps=1", "eval.max_items=1"]
    assert main([*args, f"trainer.out_dir={tmp_path / 'a'}"]) == 0
    # lr 1e-12: the one Adam step cannot move the weights, so b ends where it started: a's
    assert main([*args, f"trainer.out_dir={tmp_path / 'b'}", "trainer.lr=1e-12",
                 "trainer.text_lr=1e-12", "trainer.seed=5",
                 f"trainer.init_from={tmp_path / 'a'}"]) == 0
    (a, _), (b, meta) = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert meta["meta"]["step"] == 1 and meta["config"]["trainer"]["init_from"] == str(tmp_path / "a")
    for name, value in a.items():
        torch.testing.assert_close(b[name], value, rtol=0, atol=1e-9)
    capsys.readouterr()
    assert main([*args, f"trainer.out_dir={tmp_path / 'c'}", "trainer.init_from=ppmn-synthetic"]) == 2
    err = capsys.readouterr().err
    assert "do not fit this 'ppmn' model" in err and "shapes (checkpoint vs model)" in err
    assert "model.hidden_dim=64 (here: 16)" in err  # the settings that differ
    assert main([*args, f"trainer.out_dir={tmp_path / 'c'}", "trainer.init_from=drmn-synthetic"]) == 2
    assert "a 'drmn' checkpoint; this run trains a 'ppmn' model" in capsys.readouterr().err


@pytest.mark.parametrize("model_type, overrides", [
    ("ppmn", ["model.semantic_classes=0", "model.pixel_coords=false"]),  # bundled before both
    ("drmn", [])])
def test_the_bundled_models_fit_their_shipped_configs(model_type, overrides, text_encoder):
    """What the README says: fine-tuning a bundled model from its config file."""
    from groundkit.config import load_config
    from groundkit.engine.checkpoint import load_checkpoint, load_initial_weights
    task = task_of(model_type)
    config = Path(groundkit.__file__).parent / "configs" / f"{model_type}_synthetic.yaml"
    model = task.build_model(load_config(task.experiment_class(model_type), config, overrides),
                             text_encoder=text_encoder)
    load_initial_weights(model, f"{model_type}-synthetic", model_type)
    bundled, _ = load_checkpoint(Path(groundkit.__file__).parent / "pretrained"
                                 / f"{model_type}-synthetic.safetensors")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in bundled.items())
