from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest

from groundkit.config import config_from_dict, config_to_dict, load_config, parse_override, peek_value
from groundkit.errors import ConfigError


@dataclass
class Model:
    rounds: int = 3
    dropout: float = 0.1
    frozen: bool = True
    name: str = "ppmn"
    checkpoint: Optional[str] = None
    milestones: tuple[int, ...] = (10, 12)
    sizes: list[int] = field(default_factory=lambda: [800, 1333])
    pair: tuple[int, float] = (1, 2.0)
    kind: Literal["adam", "adamw"] = "adam"
    root: Path = Path("data")


@dataclass
class Trainer:
    lr: float = 1e-4
    epochs: int = 14


@dataclass
class Experiment:
    model_type: str = "ppmn"
    model: Model = field(default_factory=Model)
    trainer: Trainer = field(default_factory=Trainer)


@dataclass
class Required:
    n: int


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_defaults_then_yaml_then_overrides(tmp_path):
    path = write(tmp_path, "model:\n  rounds: 2\n  milestones: [5, 7]\ntrainer:\n  lr: 1e-3\n")
    cfg = load_config(Experiment, path, ["trainer.lr=3e-4", "model.kind=adamw", "model_type=drmn"])
    assert cfg.model.rounds == 2 and cfg.model.milestones == (5, 7)
    assert cfg.trainer.lr == 3e-4 and isinstance(cfg.trainer.lr, float)  # "3e-4" is a str in YAML
    assert cfg.model.kind == "adamw" and cfg.model_type == "drmn"
    assert cfg.trainer.epochs == 14 and cfg.model.dropout == 0.1  # untouched defaults
    assert load_config(Experiment) == Experiment()


def test_override_wins_over_yaml_and_keeps_sibling_keys(tmp_path):
    path = write(tmp_path, "model: {rounds: 2, dropout: 0.5}\n")
    cfg = load_config(Experiment, path, ["model.rounds=4"])
    assert (cfg.model.rounds, cfg.model.dropout) == (4, 0.5)


def test_value_types_are_converted():
    cfg = config_from_dict(Model, {"dropout": 1, "checkpoint": "w.safetensors", "pair": [3, 4],
                                   "root": "/data/coco", "sizes": (1, 2)})
    assert cfg.dropout == 1.0 and isinstance(cfg.dropout, float)
    assert cfg.pair == (3, 4.0) and cfg.root == Path("/data/coco") and cfg.sizes == [1, 2]
    assert config_from_dict(Model, {"checkpoint": None}).checkpoint is None


def test_round_trip_through_json():
    cfg = load_config(Experiment, None, ["model.pair=[5, 0.5]", "model.root=/x"])
    d = json.loads(json.dumps(config_to_dict(cfg)))
    assert d["model"]["milestones"] == [10, 12] and d["model"]["root"] == "/x"
    assert config_from_dict(Experiment, d) == cfg


@pytest.mark.parametrize("d, expected", [
    ({"model": {"rounds": 2.5}}, "key 'model.rounds': expected an integer, got 2.5 (float)"),
    ({"model": {"rounds": True}}, "key 'model.rounds': expected an integer"),
    ({"model": {"frozen": 1}}, "key 'model.frozen': expected true or false, got 1"),
    ({"model": {"name": 7}}, "key 'model.name': expected a string, got 7 (int)"),
    ({"model": {"kind": "sgd"}}, "key 'model.kind': expected one of 'adam', 'adamw', got 'sgd'"),
    ({"model": {"milestones": [1, "x"]}}, "key 'model.milestones[1]': expected an integer"),
    ({"model": {"milestones": 3}}, "key 'model.milestones': expected a list of integers"),
    ({"model": {"pair": [1]}}, "key 'model.pair': expected a list of 2 items"),
    ({"model": {"checkpoint": 3}}, "key 'model.checkpoint': expected a string or null"),
    ({"trainer": {"lr": "fast"}}, "key 'trainer.lr': expected a number, got 'fast' (str)"),
    ({"trainer": 3}, "key 'trainer': expected a mapping of Trainer keys, got 3 (int)"),
])
def test_wrong_types_name_source_key_and_expectation(d, expected):
    with pytest.raises(ConfigError) as e:
        config_from_dict(Experiment, d, source="exp.yaml")
    assert str(e.value).startswith("exp.yaml: ") and expected in str(e.value)


def test_unknown_keys_suggest_close_names(tmp_path):
    path = write(tmp_path, "trainer:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: key 'trainer.lrr': unknown key; "
                                          r"did you mean 'trainer.lr'\?"):
        load_config(Experiment, path)
    with pytest.raises(ConfigError, match=r"key 'lr': unknown key; did you mean 'trainer.lr'\?"):
        load_config(Experiment, None, ["lr=0.1"])
    with pytest.raises(ConfigError, match=r"valid keys here: 'trainer.lr', 'trainer.epochs'"):
        load_config(Experiment, None, ["trainer.zzzz=1"])


@pytest.mark.parametrize("text", ["trainer.lr", "=3", "trainer..lr=1", "trainer.lr=[1,", "a-b=1"])
def test_malformed_overrides(text):
    with pytest.raises(ConfigError, match=re.escape(f"override '{text}'")):
        load_config(Experiment, None, [text])


def test_override_errors_name_the_override():
    with pytest.raises(ConfigError, match=r"override 'trainer.epochs=many': key 'trainer.epochs'"):
        load_config(Experiment, None, ["trainer.epochs=many"])


def test_parse_override_values():
    assert parse_override("a.b=[10, 12]") == ("a.b", [10, 12])
    assert parse_override("x=null") == ("x", None)
    assert parse_override("name=a=b") == ("name", "a=b")
    assert parse_override("name=") == ("name", "")


def test_missing_required_key_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="r.yaml: Required: .*'n'"):
        config_from_dict(Required, {}, source="r.yaml")
    assert config_from_dict(Required, {"n": 2}).n == 2
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Experiment, write(tmp_path, "model: [1,\n"))
    with pytest.raises(ConfigError, match="expected a mapping of keys to values"):
        load_config(Experiment, write(tmp_path, "- 1\n"))
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(Experiment, tmp_path / "missing.yaml")
    assert load_config(Experiment, write(tmp_path, "")) == Experiment()


def test_peek_value_sees_yaml_then_overrides(tmp_path):
    path = write(tmp_path, "model_type: drmn\n")
    assert peek_value(path, [], "model_type") == "drmn"
    assert peek_value(path, ["model_type=ppmn"], "model_type") == "ppmn"
    assert peek_value(None, [], "model.rounds", default=3) == 3


# --- bounds on the values that size tensors --------------------------------------------------------

@pytest.mark.parametrize("key, value, limit", [
    ("hidden_dim", 10**6, 16384), ("ffn_dim", 20000, 16384), ("heads", 1000, 256),
    ("rounds", 129, 128), ("kernel_mlp_layers", 500, 128), ("neck_channels", -1, 16384),
    ("semantic_classes", 10**7, 100000),
])
def test_values_that_size_tensors_are_bounded(key, value, limit):
    from groundkit.models.ppmn import PPMNConfig

    with pytest.raises(ConfigError) as e:
        config_from_dict(PPMNConfig, {key: value}, source="ckpt")
    assert str(e.value) == (f"ckpt: key '{key}': {value} is out of range: it sizes tensors and "
                            f"must be between 0 and {limit}")
    assert config_from_dict(PPMNConfig, {key: limit}) is not None  # the limit itself is allowed


def test_bounds_apply_to_nested_sections_and_overrides():
    from groundkit.config import override_config
    from groundkit.engine.referring import PBRECExperiment

    with pytest.raises(ConfigError, match=r"key 'data.input_size': 5000 is out of range.* 4096"):
        config_from_dict(PBRECExperiment, {"data": {"input_size": 5000}})
    with pytest.raises(ConfigError, match=r"key 'model.layers': 1000 .* 128"):
        override_config(PBRECExperiment(), ["model.layers=1000"])
    with pytest.raises(ConfigError, match=r"key 'model.backbone.fpn_channels': 100000"):
        override_config(PBRECExperiment(), ["model.backbone.fpn_channels=100000"])
    # keys that do not size tensors are not bounded here (they have their own checks)
    assert override_config(PBRECExperiment(), ["trainer.batch_size=100000"]).trainer.batch_size \
        == 100000


def test_every_default_config_is_within_the_bounds():
    import dataclasses

    from groundkit.config import size_limit
    from groundkit.engine.tasks import task_of
    from groundkit.models import model_types

    def walk(cfg, prefix=""):
        for f in dataclasses.fields(cfg):
            value = getattr(cfg, f.name)
            if dataclasses.is_dataclass(value):
                yield from walk(value, f"{prefix}{f.name}.")
            elif size_limit(f.name) is not None and isinstance(value, int):
                yield f"{prefix}{f.name}", value, size_limit(f.name)

    checked = 0
    for model_type in model_types():
        for key, value, limit in walk(task_of(model_type).experiment_class(model_type)()):
            assert 0 <= value <= limit, (model_type, key, value)
            checked += 1
    assert checked > 20


# ----------------------------------------------------------------------------- --config by name


def test_a_shipped_config_is_found_by_bare_name_with_or_without_yaml(tmp_path, monkeypatch):
    from groundkit.config import SHIPPED_CONFIGS, resolve_config, shipped_configs

    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    assert {"ppmn_png", "drmn_png", "panoptic_coco", "pbrec_refcoco", "vlnms_fc_refcoco",
            "matcher_refcoco", "ppmn_synthetic"} <= set(shipped_configs())
    for name in ("ppmn_png", "ppmn_png.yaml"):
        assert resolve_config(name) == SHIPPED_CONFIGS / "ppmn_png.yaml"
    (tmp_path / "ppmn_png").mkdir()   # a folder (a run?) of that name is not a config
    assert resolve_config("ppmn_png") == SHIPPED_CONFIGS / "ppmn_png.yaml"


def test_a_path_that_exists_wins_over_a_shipped_name(tmp_path, monkeypatch):
    from groundkit.config import SHIPPED_CONFIGS, resolve_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ppmn_png.yaml").write_text("model_type: ppmn\n")
    assert resolve_config("ppmn_png.yaml") == Path("ppmn_png.yaml")
    assert resolve_config(tmp_path / "ppmn_png.yaml") == tmp_path / "ppmn_png.yaml"
    assert resolve_config("ppmn_png") == SHIPPED_CONFIGS / "ppmn_png.yaml"  # no such file here


def test_an_unknown_config_is_an_error_listing_the_shipped_names(tmp_path, monkeypatch):
    from groundkit.config import resolve_config, shipped_configs

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        resolve_config("ppmn_pgn")
    message = str(e.value)
    assert "no config 'ppmn_pgn'" in message and "did you mean 'ppmn_png'" in message
    assert all(name in message for name in shipped_configs())
    # a path is never taken for a name, but the message says how to name the shipped one
    with pytest.raises(ConfigError, match=r"not a file.*the shipped 'ppmn_png' is `--config ppmn_png`"):
        resolve_config("configs/ppmn_png.yaml")
    (tmp_path / "runs").mkdir()
    with pytest.raises(ConfigError, match="'runs' is a folder"):
        resolve_config("runs")
