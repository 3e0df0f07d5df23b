"""A synthetic-only model warns once when given a photograph-like image; `groundkit predict`
prints the note. The model knows what it was trained on from its card (``trained_on``)."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np

import groundkit
from groundkit.api import Grounder, Referrer, Segmenter, SyntheticModelWarning, as_rgb, photo_like
from groundkit.cli import main
from groundkit.hub import write_model_card

EXAMPLES = Path(groundkit.__file__).parent / "app" / "examples"
PHOTO = EXAMPLES / "coco-142238.jpg"
SCENES = sorted(EXAMPLES.glob("synthetic-*.png"))
SYNTHETIC = {"data": "synthetic", "description": "shapes", "image_size": 128, "images": 6}


def carded(checkpoint: Path, tmp_path: Path, trained_on: dict = SYNTHETIC) -> Path:
    """A copy of a checkpoint folder with a model card."""
    copy = tmp_path / checkpoint.name
    shutil.copytree(checkpoint, copy)
    write_model_card(copy, trained_on, 128, {"metric": "AR", "val": 1.0})
    return copy


def domain_warnings(call) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in caught if issubclass(w.category, SyntheticModelWarning)]


def test_photo_like_tells_photographs_from_the_synthetic_scenes():
    assert SCENES and all(photo_like(as_rgb(p)) is None for p in SCENES)
    photo = as_rgb(PHOTO)
    assert photo_like(photo) == "is 512 x 342 px (the scenes are 128 px)"
    small = photo[::3, ::4]  # 114 x 128: the size is a scene's, the colours are not
    assert photo_like(small).startswith("has ") and "distinct colours" in photo_like(small)
    assert photo_like(np.zeros((300, 200, 3), np.uint8)) == "is 200 x 300 px (the scenes are 128 px)"
    assert photo_like(np.zeros((300, 200, 3), np.uint8), scene_size=512) is None


def test_segmenter_of_a_synthetic_bundle_warns_once_on_photos_only():
    s = Segmenter.from_pretrained("panoptic-synthetic", device="cpu")
    assert s.card["trained_on"]["data"] == "synthetic"
    assert domain_warnings(lambda: s.segment(SCENES[0])) == []
    found = domain_warnings(lambda: (s.segment(PHOTO), s([PHOTO, PHOTO])))
    assert len(found) == 1 and "trained on synthetic scenes only" in found[0]
    assert "512 x 342 px" in found[0]


def test_grounder_warns_once_and_a_model_without_a_synthetic_card_never(tiny_ppmn_checkpoint,
                                                                        tmp_path):
    g = Grounder.from_pretrained(carded(tiny_ppmn_checkpoint, tmp_path / "a"), device="cpu")
    found = domain_warnings(lambda: (g.set_image(PHOTO), g.set_image(PHOTO),
                                     g([PHOTO], ["[a man]"])))
    assert len(found) == 1
    real = {"data": "coco", "description": "COCO 2017 train"}
    g = Grounder.from_pretrained(carded(tiny_ppmn_checkpoint, tmp_path / "b", real), device="cpu")
    assert domain_warnings(lambda: g.set_image(PHOTO)) == []
    g = Grounder.from_pretrained(tiny_ppmn_checkpoint, device="cpu")  # no card at all
    assert g.card == {} and domain_warnings(lambda: g.set_image(PHOTO)) == []


def test_referrer_warns_once(tiny_pbrec_checkpoint, text_encoder, tmp_path, monkeypatch):
    monkeypatch.setattr("groundkit.models.referring.pbrec.TextEncoder",
                        lambda *a, **kw: text_encoder)
    r = Referrer.from_pretrained(carded(tiny_pbrec_checkpoint, tmp_path), device="cpu")
    assert domain_warnings(lambda: r.set_image(SCENES[0])) == []
    found = domain_warnings(lambda: (r([PHOTO], ["the man"]), r.set_image(PHOTO)))
    assert len(found) == 1


def test_predict_prints_the_note_once(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(PHOTO, photos / name)
    assert main(["predict", "--checkpoint", "panoptic-synthetic", "--image", str(photos),
                 "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert err.count("groundkit predict: note: this model was trained on synthetic scenes") == 1
    assert main(["predict", "--checkpoint", "panoptic-synthetic", "--image", str(SCENES[0]),
                 "--out", str(tmp_path / "scene"), "--device", "cpu"]) == 0
    assert "note:" not in capsys.readouterr().err
