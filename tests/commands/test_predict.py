"""groundkit predict: a folder of images, phrases as --spans, clear errors."""
import json
import shutil

import pytest

from groundkit.cli import main


@pytest.fixture
def folder(tiny_synthetic, tmp_path):
    """Two val images (b.png, a.png) and a file that is not an image."""
    images = sorted((tiny_synthetic / "images" / "val").iterdir())[:2]
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(images[0], folder / "b.png")
    shutil.copy(images[1], folder / "a.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def predict(checkpoint, image, out, *extra):
    return main(["predict", "--checkpoint", str(checkpoint), "--image", str(image), "--out",
                 str(out), "--device", "cpu", *extra])


def test_a_folder_gives_one_result_per_image_in_name_order(tiny_ppmn_checkpoint, folder, tmp_path,
                                                           capsys):
    out = tmp_path / "out"
    assert predict(tiny_ppmn_checkpoint, folder, out, "--caption", "[the sky] above [a star]") == 0
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]
    for name in ["a", "b"]:
        result = json.loads((out / name / "result.json").read_text())
        assert result["image"] == str(folder / f"{name}.png")
        assert [p["utterance"] for p in result["phrases"]] == ["the sky", "a star"]
    printed = capsys.readouterr().out
    assert printed.index(str(out / "a")) < printed.index(str(out / "b"))


def test_images_whose_stems_collide_keep_their_whole_names(tiny_ppmn_checkpoint, folder, tmp_path):
    shutil.copy(folder / "a.png", folder / "a.PNG")  # a suffix in capitals is an image too
    out = tmp_path / "out"
    assert predict(tiny_ppmn_checkpoint, folder, out, "--caption", "[the sky]") == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.PNG", "a.png", "b"]


@pytest.mark.parametrize("content, message", [({}, "the folder is empty"),
                                               ({"x.txt": "hi"}, "holds no image")])
def test_a_folder_without_images_is_a_clear_error(tiny_ppmn_checkpoint, tmp_path, capsys,
                                                  content, message):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, text in content.items():
        (folder / name).write_text(text)
    assert predict(tiny_ppmn_checkpoint, folder, tmp_path / "out", "--caption", "[a]") == 2
    err = capsys.readouterr().err
    assert message in err and ".jpg, .jpeg, .png" in err


def test_spans_give_the_phrases(tiny_ppmn_checkpoint, folder, tmp_path):
    out = tmp_path / "out"
    caption = "There is a red circle on the grass."
    assert predict(tiny_ppmn_checkpoint, folder / "a.png", out, "--caption", caption,
                   "--spans", "9:21,25:34") == 0
    result = json.loads((out / "result.json").read_text())
    assert result["caption"] == caption
    assert [(p["utterance"], p["span"]) for p in result["phrases"]] == [
        ("a red circle", [9, 21]), ("the grass", [25, 34])]


@pytest.mark.parametrize("spans, message", [
    ("9:99", "span 0 (9, 99): expected 0 <= start < end <= 35"),
    ("9:21,20:30", "overlap"),
    ("9:9", "span 0 (9, 9)"),
    ("8:9", "covers only spaces"),
    ("9-21", "expected START:END"),
    ("", "got nothing"),
])
def test_bad_spans_are_clear_errors(tiny_ppmn_checkpoint, folder, tmp_path, capsys, spans, message):
    code = predict(tiny_ppmn_checkpoint, folder / "a.png", tmp_path / "out", "--caption",
                   "There is a red circle on the grass.", "--spans", spans)
    assert code == 2 and message in capsys.readouterr().err


def test_the_no_phrase_error_says_how_to_pass_spans(tiny_ppmn_checkpoint, folder, tmp_path,
                                                     capsys, monkeypatch):
    import groundkit.api
    monkeypatch.setattr(groundkit.api, "noun_chunk_spans", lambda caption: [])
    code = predict(tiny_ppmn_checkpoint, folder / "a.png", tmp_path / "out", "--caption",
                   "a caption without marks")
    assert code == 2 and "--spans 9:21" in capsys.readouterr().err


def test_spans_are_for_grounding_only(folder, tmp_path, capsys):
    code = main(["predict", "--task", "panoptic", "--image", str(folder / "a.png"), "--out",
                 str(tmp_path / "out"), "--device", "cpu", "--spans", "0:1"])
    assert code == 2 and "panoptic prediction takes no phrase spans" in capsys.readouterr().err


def test_a_folder_with_the_panoptic_model(folder, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", "--task", "panoptic", "--image", str(folder), "--out", str(out),
                 "--device", "cpu"]) == 0
    for name in ["a", "b"]:
        assert {p.name for p in (out / name).iterdir()} == {"overlay.png", "result.json",
                                                            "panoptic.png"}
