"""VL-NMS through the commands: ``groundkit train`` with the synthetic recipes (2 steps on a tiny
split), ``groundkit evaluate`` with the proposal recall, the query-agnostic baseline as an
inference option, and prediction files without proposals still scored."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import groundkit
from groundkit.cli import main
from groundkit.data.formats import read_referring_predictions, write_referring_predictions
from groundkit.engine.tasks import get_task

CONFIGS = Path(groundkit.__file__).parent / "configs"


@pytest.fixture(autouse=True)
def session_encoder(monkeypatch, text_encoder):
    monkeypatch.setattr("groundkit.models.referring.vlnms_model.TextEncoder",
                        lambda *a, **kw: text_encoder)
    monkeypatch.setattr("groundkit.engine.referring.TextEncoder", lambda *a, **kw: text_encoder)


@pytest.fixture(scope="module", params=["fc", "trans"])
def trained(request, tmp_path_factory, tiny_synthetic, text_encoder):
    """A VL-NMS trained 2 steps by ``groundkit train`` on the recipe of its variant."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("groundkit.models.referring.vlnms_model.TextEncoder", lambda *a, **kw: text_encoder)
        mp.setattr("groundkit.engine.referring.TextEncoder", lambda *a, **kw: text_encoder)
        out = tmp_path_factory.mktemp("vlnms") / request.param
        assert main(["train", "--config", str(CONFIGS / f"vlnms_{request.param}_synthetic.yaml"),
                     f"data.root={tiny_synthetic}", "data.input_size=64", "data.max_items=null",
                     "trainer.max_steps=2", "trainer.batch_size=4", f"trainer.out_dir={out}",
                     "trainer.quiet=true", "trainer.tensorboard=false", "trainer.device=cpu",
                     "trainer.warmup_steps=0", "eval.batch_size=4", "eval.max_items=6"]) == 0
    return out


def test_train_writes_the_relatedness_module_only(trained):
    meta = json.loads((trained / "config.json").read_text())
    assert meta["model_type"] == "vlnms" and meta["config"]["model"]["contextual"] == "pseudo"
    assert meta["config"]["model"]["variant"] == trained.name
    log = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/proposal_recall@5" in r for r in log)


def test_evaluate_prints_and_writes_the_proposal_recall(trained, tiny_synthetic, tmp_path, capsys):
    pred = tmp_path / "pred"
    assert main(["evaluate", "--checkpoint", str(trained), "--data", str(tiny_synthetic),
                 "--split", "val", "--device", "cpu", "--batch-size", "4", "--pred-out", str(pred),
                 "--json", str(tmp_path / "scores.json")]) == 0
    out = capsys.readouterr().out
    assert "VLNMS on" in out and "recall of the referent (IoU > 0.5) among the first K proposals" in out
    scores = json.loads((tmp_path / "scores.json").read_text())
    recall = scores["all"]["proposals"]
    ks = ("recall@1", "recall@2", "recall@3", "recall@5")
    # the synthetic refs name each relation's anchor: its recall is measured too
    assert set(recall) == {*ks, "mean_proposals", "n", *(f"context_{k}" for k in ks), "context_n"}
    assert recall["context_n"] > 0 and "recall of the contextual objects" in out
    assert recall["recall@1"] <= recall["recall@2"] <= recall["recall@3"] <= recall["recall@5"]
    assert recall["recall@1"] <= scores["all"]["rec"]["acc@0.5"]  # the box is the first proposal
    records = read_referring_predictions(pred / "predictions.json")
    assert records and all(0 < len(r["proposals"]) <= 10 and r["box"] == r["proposals"][0]
                           for r in records)


def test_records_without_proposals_still_score(trained, tiny_synthetic, tmp_path):
    task = get_task("referring")
    model, cfg = task.load(trained)
    dataset = task.dataset(cfg, tiny_synthetic, "val")
    with_proposals = task.evaluate(model, dataset, 4, progress=False, pred_dir=tmp_path)
    path = tmp_path / "predictions.json"
    records = read_referring_predictions(path)
    write_referring_predictions(path, [{k: v for k, v in r.items() if k != "proposals"}
                                       for r in records])
    without = task.score(dataset, tmp_path)
    for group, scores in with_proposals.groups.items():
        assert without.groups[group] == {"rec": scores["rec"], "res": scores["res"]}
    assert "recall of the referent" not in without.table()
    assert "proposal_recall@1" not in without.log_metrics()
    assert "recall of the referent" in with_proposals.table()


def test_the_query_agnostic_baseline_is_an_inference_option(trained, tiny_synthetic, tmp_path):
    pred = tmp_path / "baseline"
    assert main(["evaluate", "--checkpoint", str(trained), "--data", str(tiny_synthetic),
                 "--split", "val", "--device", "cpu", "--pred-out", str(pred),
                 "rank_by=confidence"]) == 0
    assert all(r["proposals"] for r in read_referring_predictions(pred / "predictions.json"))
