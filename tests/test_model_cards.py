"""Model cards: every bundled model says what it was trained on, its input size and its scores,
in its header and in the JSON beside it; writing a card leaves the tensors bit for bit."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from groundkit.errors import FormatError
from groundkit.hub import (
    PRETRAINED_DIR,
    bundled_names,
    checkpoint_header,
    model_card,
    synthetic_only,
    write_model_card,
)


def bits(tensors: dict[str, torch.Tensor]) -> dict[str, tuple]:
    return {k: (t.dtype, tuple(t.shape), t.reshape(-1).view(torch.uint8).numpy().tobytes())
            for k, t in tensors.items()}


@pytest.mark.parametrize("name", bundled_names())
def test_every_bundle_has_a_card_in_its_header_and_its_json(name):
    header = checkpoint_header(name)
    assert header == json.loads((PRETRAINED_DIR / f"{name}.json").read_text())
    card = model_card(header)
    assert card, (f"{name} has no model card: add it to CARDS in scripts/model_cards.py and run "
                  f"`python scripts/model_cards.py {name}` (docs/models.md)")
    trained = card["trained_on"]
    assert synthetic_only(header) and trained["image_size"] == 128
    assert trained["description"] and (trained.get("images") or trained.get("sentences"))
    assert card["input_size"] == 128
    scores = card["scores"]
    assert scores["metric"] and scores["source"] and any(k.startswith("val") for k in scores)
    assert header["meta"]["metrics"]  # the training log's metrics stay beside the card


def test_writing_a_card_keeps_every_tensor_bit_for_bit(tmp_path):
    path = tmp_path / "panoptic-synthetic.safetensors"
    shutil.copy(PRETRAINED_DIR / path.name, path)
    before, header = load_file(str(path)), checkpoint_header(path)
    trained = {"data": "coco", "description": "COCO 2017 train", "images": 118287}
    scores = {"metric": "PQ", "val": 41.2}
    assert write_model_card(path, trained, 800, scores) == path
    assert bits(load_file(str(path))) == bits(before)
    after = checkpoint_header(path)
    assert model_card(after) == {"trained_on": trained, "input_size": 800, "scores": scores}
    assert not synthetic_only(after)
    assert after["meta"]["metrics"] == header["meta"]["metrics"]
    assert after["config"] == header["config"]
    assert json.loads(path.with_suffix(".json").read_text()) == after


def test_a_card_needs_a_groundkit_checkpoint_and_its_data(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(FormatError, match="not a groundkit model checkpoint"):
        write_model_card(plain, {"data": "synthetic"}, 128, {})
    bundle = tmp_path / "ppmn-synthetic.safetensors"
    shutil.copy(PRETRAINED_DIR / bundle.name, bundle)
    with pytest.raises(ValueError, match="'data'"):
        write_model_card(bundle, {"description": "?"}, 128, {})
    assert model_card({}) == {} and not synthetic_only({"meta": {"epoch": 1}})
