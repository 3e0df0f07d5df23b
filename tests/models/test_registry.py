"""Every registered model type, built tiny through its task family (timm's style): a model added
to ``groundkit.models`` is tested here with no edit.

Per model type: a train-mode forward gives a finite loss and a gradient on every trainable
parameter; eval mode returns the family's result type; save then load gives identical outputs;
an image's output does not depend on the other images of its batch.
"""
from __future__ import annotations

import copy
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

import groundkit
from groundkit.config import config_to_dict, load_config
from groundkit.engine.checkpoint import save_checkpoint
from groundkit.engine.tasks import place_for_inference, task_of
from groundkit.models import model_spec, model_types

CONFIGS = Path(groundkit.__file__).parent / "configs"


def tiny_experiment(model_type: str, root, size: int = 64):
    """The model type's synthetic config (its categories and recipe), shrunk."""
    task = task_of(model_type)
    config = CONFIGS / f"{model_type}_synthetic.yaml"
    overrides = [*task.tiny_overrides(model_type), f"data.root={root}",
                 *task.input_size_overrides(size)]
    return task, load_config(task.experiment_class(model_type),
                             config if config.exists() else None, overrides)


def shared_parts(model_type: str, text_encoder) -> dict:
    """The session's text encoder for builders that take one (it is loaded once per session)."""
    _, build = model_spec(model_type)
    return {"text_encoder": text_encoder} if "text_encoder" in inspect.signature(build).parameters else {}


@pytest.fixture(scope="module", params=model_types())
def built(request, tiny_synthetic, text_encoder):
    model_type = request.param
    task, cfg = tiny_experiment(model_type, tiny_synthetic)
    torch.manual_seed(0)
    model = task.build_model(cfg, **shared_parts(model_type, text_encoder))
    return model_type, task, cfg, model


def batch_of(task, cfg, root, split="train", sizes=(64,), train=False, items=None):
    """Items ``items`` (default 0, 1, 0, ...) of ``split``, each resized to its size in
    ``sizes``, collated."""
    items = items or [k % 2 for k in range(len(sizes))]
    chosen = []
    for index, size in zip(items, sizes):
        _, sized = tiny_experiment(cfg.model_type, root, size)
        chosen.append(task.dataset(sized, root, split, train=train)[index])
    return task.collate(chosen)


def same_result(a, b) -> bool:
    for key in a.keys():
        x, y = a[key], b[key]
        if isinstance(x, np.ndarray):
            if x.dtype == bool or np.issubdtype(x.dtype, np.integer):
                if not np.array_equal(x, y):
                    return False
            elif not np.allclose(x, y, atol=1e-5):
                return False
        elif x != y:
            return False
    return True


def test_train_forward_gives_a_finite_loss_and_a_gradient_on_every_trainable_parameter(
        built, tiny_synthetic):
    model_type, task, cfg, model = built
    model.train()
    batch = batch_of(task, cfg, tiny_synthetic, sizes=(64, 64), train=True)
    losses = model(batch)
    assert torch.isfinite(losses["loss"])
    model.zero_grad()
    losses["loss"].backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    no_grad = [n for n, p in trainable.items() if p.grad is None]
    assert not no_grad, f"{model_type}: no gradient for {no_grad}"
    model.zero_grad()


def test_eval_returns_the_family_result_type_at_the_original_size(built, tiny_synthetic):
    _, task, cfg, model = built
    batch = batch_of(task, cfg, tiny_synthetic, split="val", sizes=(64, 64))
    with torch.no_grad():
        results = model.eval()(batch)
    assert len(results) == 2
    for result, size in zip(results, batch["orig_sizes"]):
        assert isinstance(result, task.result_type)
        maps = [result[k] for k in result.image_fields]
        assert maps and all(m.shape[-2:] == tuple(size) for m in maps)


def test_save_then_load_gives_identical_outputs(built, tiny_synthetic, text_encoder, tmp_path):
    model_type, task, cfg, model = built
    save_checkpoint(tmp_path, model, config_to_dict(cfg), model_type)
    loaded, loaded_cfg = task.load(tmp_path, **shared_parts(model_type, text_encoder))
    assert loaded_cfg == cfg
    batch = batch_of(task, cfg, tiny_synthetic, split="val", sizes=(64, 64))
    # a loaded model is placed for inference (channels-last on the CPU): the same placement of
    # the model that was saved must give the very same numbers
    reference = place_for_inference(copy.deepcopy(model), "cpu")
    with torch.no_grad():
        before, after = reference(batch), loaded(batch)
    assert all(same_result(a, b) for a, b in zip(before, after))


def test_an_image_gives_the_same_output_alone_and_batched_with_other_sizes(built, tiny_synthetic):
    _, task, cfg, model = built
    model.eval()
    # 40 px pads to 64, 80 to 96, 120 to 128: batched, the 80 px image sits in 128 x 128. A family
    # whose inputs all have one size (letterboxed squares) is batched with other images instead.
    sizes = (80, 80, 80) if task.fixed_input_size else (40, 80, 120)
    with torch.no_grad():
        alone = model(batch_of(task, cfg, tiny_synthetic, split="val", sizes=sizes[1:2],
                               items=[1]))[0]
        mixed = batch_of(task, cfg, tiny_synthetic, split="val", sizes=sizes, items=[0, 1, 2])
        if not task.fixed_input_size:
            assert tuple(mixed["images"].shape[-2:]) == (128, 128)
        batched = model(mixed)
    assert same_result(alone, batched[1])
