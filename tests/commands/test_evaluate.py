"""groundkit evaluate writes nothing it was not asked for, and names every file it writes."""
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
