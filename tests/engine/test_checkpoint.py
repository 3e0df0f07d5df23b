from __future__ import annotations

import errno
import json
import random

import numpy as np
import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from groundkit.engine import checkpoint as ckpt
from groundkit.engine.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    load_initial_weights,
    load_train_state,
    restore_rng_state,
    save_checkpoint,
    save_train_state,
)
from groundkit.errors import ConfigError, FormatError, WriteError


class Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(5, 3)
        self.out = torch.nn.Linear(3, 5, bias=False)
        self.out.weight = self.embed.weight  # tied: safetensors refuses shared memory as is
        self.norm = torch.nn.BatchNorm1d(3)  # an int64 buffer (num_batches_tracked)


def test_model_checkpoint_round_trip(tmp_path):
    model = Tied()
    weights = save_checkpoint(tmp_path, model, {"model": {"dim": 3}}, "ppmn", {"epoch": 4})
    assert weights == tmp_path / "model.safetensors"
    state, meta = load_checkpoint(tmp_path, expected_model_type="ppmn")
    assert state.keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():
        assert torch.equal(state[name], value) and state[name].dtype == value.dtype
    assert meta["model_type"] == "ppmn" and meta["config"] == {"model": {"dim": 3}}
    assert meta["meta"] == {"epoch": 4}
    assert json.loads((tmp_path / "config.json").read_text()) == meta  # the readable copy
    Tied().load_state_dict(state)


def test_checkpoint_file_paths_and_plain_safetensors(tmp_path):
    save_checkpoint(tmp_path / "best.safetensors", {"w": torch.ones(2)}, {}, "drmn")
    assert (tmp_path / "best.json").exists()
    assert load_checkpoint(tmp_path / "best.safetensors")[1]["model_type"] == "drmn"
    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    state, meta = load_checkpoint(tmp_path / "plain.safetensors")
    assert meta == {} and torch.equal(state["w"], torch.zeros(1))
    with pytest.raises(ConfigError, match="checkpoint has no model type, expected a 'ppmn'"):
        load_checkpoint(tmp_path / "plain.safetensors", expected_model_type="ppmn")


def test_checkpoint_errors_name_file_and_types(tmp_path):
    save_checkpoint(tmp_path, {"w": torch.ones(2)}, {}, "drmn")
    with pytest.raises(ConfigError, match=r"model.safetensors: checkpoint is a 'drmn' model, "
                                          r"expected a 'ppmn' model"):
        load_checkpoint(tmp_path, expected_model_type="ppmn")
    with pytest.raises(ConfigError, match="missing/model.safetensors: no such checkpoint file"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(FormatError, match="bad.safetensors: not a readable safetensors file"):
        load_checkpoint(tmp_path / "bad.safetensors")
    with pytest.raises(FormatError, match="not a groundkit training state"):
        load_train_state(tmp_path / "model.safetensors")


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, {"w": torch.ones(2)}, {}, "ppmn")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, {"w": torch.zeros(2)}, {}, "ppmn")
    assert torch.equal(load_checkpoint(tmp_path)[0]["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_full_disk_during_a_save_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, {"w": torch.ones(2)}, {}, "ppmn")
    save_train_state(tmp_path / "train_state.safetensors", {"step": 5})

    def full(tensors, path, metadata=None):  # what safetensors raises when the disk is full
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr(ckpt, "save_file", full)
    with pytest.raises(WriteError) as caught:
        save_checkpoint(tmp_path, {"w": torch.zeros(2)}, {}, "ppmn")
    assert str(caught.value) == (f"{tmp_path / 'model.safetensors'}: could not write it: no space "
                                 "left on device; the previous model.safetensors is intact")
    assert caught.value.errno == errno.ENOSPC
    with pytest.raises(WriteError, match="train_state.safetensors: could not write it: no space "
                                         "left on device; the previous train_state.safetensors "
                                         "is intact"):
        save_train_state(tmp_path / "train_state.safetensors", {"step": 6})
    assert torch.equal(load_checkpoint(tmp_path)[0]["w"], torch.ones(2))
    assert load_train_state(tmp_path / "train_state.safetensors") == {"step": 5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors",
                                                          "train_state.safetensors"]

    def other(tensors, path, metadata=None):
        raise SafetensorError("something else")

    monkeypatch.setattr(ckpt, "save_file", other)
    with pytest.raises(WriteError, match="could not write it: safetensors: something else") as caught:
        save_checkpoint(tmp_path / "new.safetensors", {"w": torch.zeros(2)}, {}, "ppmn")
    assert caught.value.errno is None and "nothing was written there" in str(caught.value)


def adam_after_steps(model: torch.nn.Module, steps: int) -> torch.optim.Optimizer:
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.ones(2, 3)).pow(2).sum().backward()
        optimizer.step()
    return optimizer


def with_text_encoder(frozen: bool) -> torch.nn.Module:
    """A model whose ``text_encoder`` a frozen run leaves out of its checkpoints, as PBREC's."""
    from groundkit.text.encoder import leave_out_of_checkpoints
    model = torch.nn.Module()
    model.text_encoder, model.head = torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)
    if frozen:
        leave_out_of_checkpoints(model, "text_encoder")
    return model


def test_fine_tuning_unfreezes_a_text_encoder_the_checkpoint_left_out(tmp_path):
    """trainer.init_from a checkpoint trained with a frozen encoder and model.freeze_text=false:
    the rest comes from the checkpoint, the encoder stays the installed one; with another
    encoder, or a head key missing, the weights still do not fit."""
    frozen = with_text_encoder(frozen=True)
    save_checkpoint(tmp_path / "ck", frozen, {"model": {"freeze_text": True, "text_encoder": None}},
                    "tiny")
    assert set(load_checkpoint(tmp_path / "ck")[0]) == {"head.weight", "head.bias"}
    unfrozen = with_text_encoder(frozen=False)
    installed = unfrozen.text_encoder.weight.detach().clone()
    load_initial_weights(unfrozen, tmp_path / "ck", "tiny",
                         {"freeze_text": False, "text_encoder": None})
    assert torch.equal(unfrozen.head.weight, frozen.head.weight)
    assert torch.equal(unfrozen.text_encoder.weight, installed)
    for config in ({"freeze_text": False, "text_encoder": "/my/bert"},
                   {"freeze_text": True, "text_encoder": None}, None):
        with pytest.raises(ConfigError, match=r"missing keys \(2\): text_encoder.weight"):
            load_initial_weights(with_text_encoder(frozen=False), tmp_path / "ck", "tiny", config)
    wider = with_text_encoder(frozen=False)
    wider.head = torch.nn.Linear(3, 4)   # what the checkpoint holds must still fit
    with pytest.raises(ConfigError, match=r"shapes \(checkpoint vs model\)"):
        load_initial_weights(wider, tmp_path / "ck", "tiny", {"freeze_text": False, "text_encoder": None})


def test_train_state_restores_an_optimizer_exactly(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = adam_after_steps(model, 3)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "epoch": 2, "nested": {"pair": (1, 2.5), 7: [None, True, "x"]}}
    save_train_state(tmp_path / "s.safetensors", state)
    loaded = load_train_state(tmp_path / "s.safetensors")
    assert loaded["epoch"] == 2 and loaded["nested"] == {"pair": (1, 2.5), 7: [None, True, "x"]}
    assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.9)
    assert set(loaded["optimizer"]["state"]) == {0, 1}  # int keys, as load_state_dict needs

    clone = torch.nn.Linear(3, 2)
    clone.load_state_dict(loaded["model"])
    clone_opt = torch.optim.Adam(clone.parameters(), lr=1.0)
    clone_opt.load_state_dict(loaded["optimizer"])
    for m, opt in ((model, optimizer), (clone, clone_opt)):  # one more step on each
        opt.zero_grad()
        m(torch.ones(2, 3)).pow(2).sum().backward()
        opt.step()
    assert torch.equal(model.weight, clone.weight) and torch.equal(model.bias, clone.bias)
    assert clone_opt.state_dict()["state"][0]["step"].item() == 4


def test_train_state_rejects_unstorable_values(tmp_path):
    with pytest.raises(TypeError, match="at 'x/0': cannot store a set"):
        save_train_state(tmp_path / "s.safetensors", {"x": [{1, 2}]})


def test_rng_state_round_trip_through_a_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    save_train_state(tmp_path / "rng.safetensors", {"rng": capture_rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(2))
    restore_rng_state(load_train_state(tmp_path / "rng.safetensors")["rng"])
    again = (random.random(), np.random.rand(), torch.rand(2))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])
