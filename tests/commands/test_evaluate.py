"""groundkit evaluate writes nothing it was not asked for, and names every file it writes."""
from pathlib import Path

from PIL import Image

from groundkit.cli import main


def test_evaluate_leaves_the_working_directory_clean(tiny_ppmn_checkpoint, tiny_synthetic,
                                                     tmp_path, monkeypatch, capsys):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    args = ["evaluate", "--checkpoint", str(tiny_ppmn_checkpoint), "--data", str(tiny_synthetic),
            "--device", "cpu"]
    assert main(args) == 0
    assert list(cwd.iterdir()) == []
    assert "overall" in capsys.readouterr().out
    # the curves go beside the scores, and both are printed
    out = tmp_path / "out"
    assert main([*args, "--json", str(out / "ppmn.json")]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["ppmn.json", "ppmn_recall_curves.png"]
    assert f"scores: {out / 'ppmn.json'}" in printed
    assert f"recall curves: {out / 'ppmn_recall_curves.png'}" in printed
    assert main([*args, "--plot", str(out / "curves.png")]) == 0
    assert (out / "curves.png").is_file() and list(cwd.iterdir()) == []


def test_evaluate_with_the_ppmn_protocol_names_it(tiny_ppmn_checkpoint, tiny_synthetic, tmp_path,
                                                  capsys):
    from groundkit.commands.evaluate import evaluate_checkpoint

    args = ["evaluate", "--checkpoint", str(tiny_ppmn_checkpoint), "--data", str(tiny_synthetic),
            "--device", "cpu", "--protocol", "ppmn"]
    assert main(args) == 0
    assert "PPMN protocol: short side 64, long side <= 64" in capsys.readouterr().out
    original = evaluate_checkpoint(str(tiny_ppmn_checkpoint), tiny_synthetic, "val", tmp_path / "a")
    ppmn = evaluate_checkpoint(str(tiny_ppmn_checkpoint), tiny_synthetic, "val", tmp_path / "b",
                               protocol="ppmn")
    assert "original image resolution" in original.table and "PPMN" in ppmn.table
    assert len(ppmn.evaluation.phrases.ious) == len(original.evaluation.phrases.ious)


def test_the_ppmn_protocol_is_for_grounding_checkpoints(tiny_pbrec_checkpoint, tiny_synthetic,
                                                        capsys):
    args = ["evaluate", "--checkpoint", str(tiny_pbrec_checkpoint), "--data", str(tiny_synthetic),
            "--device", "cpu", "--protocol", "ppmn"]
    assert main(args) == 2
    assert "grounding checkpoints" in capsys.readouterr().err


def _printed_paths(printed: str) -> list[Path]:
    lines = printed.split("gallery: ", 1)[1].splitlines()
    return [Path(lines[0].split(" (")[0])] + [Path(line.strip()) for line in lines[1:]
                                              if line.startswith("  ")]


def test_evaluate_gallery_writes_the_files_it_prints_and_nothing_in_the_working_directory(
        tiny_ppmn_checkpoint, tiny_synthetic, tmp_path, monkeypatch, capsys):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    args = ["evaluate", "--checkpoint", str(tiny_ppmn_checkpoint), "--data", str(tiny_synthetic),
            "--device", "cpu", "--gallery", "3"]
    pred = tmp_path / "pred"
    assert main([*args, "--pred-out", str(pred)]) == 0
    printed = _printed_paths(capsys.readouterr().out)
    gallery = pred / "gallery"
    assert printed[0] == gallery / "index.html"
    assert sorted(printed) == sorted(gallery.iterdir())  # every file written is printed
    assert [p.name for p in printed[1:]] == ["001.png", "002.png", "003.png"]
    for picture in printed[1:]:
        with Image.open(picture) as im:
            assert im.format == "PNG" and im.width > 2 * 384  # truth beside prediction
    page = (gallery / "index.html").read_text()
    assert all(f'src="{p.name}"' in page for p in printed[1:]) and "IoU" in page
    assert list(cwd.iterdir()) == []
    # or into a folder of its own, without keeping the predictions
    own = tmp_path / "pictures"
    assert main([*args, "--gallery-out", str(own)]) == 0
    printed = _printed_paths(capsys.readouterr().out)
    assert sorted(printed) == sorted(own.iterdir()) and len(printed) == 4
    assert list(cwd.iterdir()) == []


def test_evaluate_gallery_with_nowhere_to_go_is_refused_before_the_model_runs(
        tiny_ppmn_checkpoint, tiny_synthetic, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["evaluate", "--checkpoint", str(tiny_ppmn_checkpoint), "--data", str(tiny_synthetic),
            "--device", "cpu"]
    for extra, words in [(["--gallery", "3"], "--gallery: say where the pictures go"),
                         (["--gallery", "0", "--gallery-out", "g"], "N >= 1"),
                         (["--gallery-out", "g"], "--gallery N")]:
        assert main([*args, *extra]) == 2
        captured = capsys.readouterr()
        assert words in captured.err and "overall" not in captured.out  # nothing evaluated
    assert list(tmp_path.iterdir()) == []
