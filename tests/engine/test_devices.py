"""GPU readiness checked on any machine: device errors, AMP, NCCL under torchrun, CUDA ranks.

The CUDA branches are reached with ``torch.cuda`` patched, so these run on the CPU build; what
needs a real GPU is `benchmarks/bench_coco_size.py --device cuda` (docs/gpu.md).
"""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import groundkit
from groundkit.cli import main
from groundkit.engine import Trainer, TrainerConfig
from groundkit.engine import distributed as gdist
from groundkit.engine import trainer as trainer_module
from groundkit.errors import ConfigError

PPMN_YAML = Path(groundkit.__file__).parent / "configs" / "ppmn_synthetic.yaml"
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def tiny_trainer(tiny, tmp_path, **overrides) -> Trainer:
    config = TrainerConfig(epochs=1, batch_size=5, lr=1e-2, quiet=True, tensorboard=False,
                           out_dir=str(tmp_path), **overrides)
    return Trainer(tiny.TinyModel(), tiny.NoisyRegression(n=10), tiny.collate, config,
                   model_type="tiny")


def test_amp_off_cuda_is_a_logged_no_op_that_trains_in_float32(tiny, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="groundkit"):
        trainer = tiny_trainer(tiny, tmp_path, amp=True, device="cpu")
    assert "trainer.amp is for CUDA only; training in float32 on cpu" in caplog.text
    assert trainer._autocast_dtype is None and not trainer.scaler.is_enabled()
    trainer.fit()
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


@pytest.mark.parametrize("amp_dtype, expected", [("float16", torch.float16),
                                                 ("bfloat16", torch.bfloat16)])
def test_amp_on_cuda_autocasts_in_the_asked_dtype(monkeypatch, amp_dtype, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    config = TrainerConfig(amp=True, amp_dtype=amp_dtype)
    assert trainer_module._amp_dtype(config, torch.device("cuda", 0)) == expected
    assert trainer_module._amp_dtype(TrainerConfig(), torch.device("cuda", 0)) is None


def test_bfloat16_amp_on_a_gpu_without_it_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")
    with pytest.raises(ConfigError, match="bfloat16: Tesla V100 has no bfloat16 support"):
        trainer_module._amp_dtype(TrainerConfig(amp=True, amp_dtype="bfloat16"),
                                  torch.device("cuda", 0))


def test_cuda_without_an_index_is_the_gpu_of_the_local_rank(monkeypatch):
    monkeypatch.setattr(gdist, "resolve_device", lambda device: torch.device(device))
    assert trainer_module._pick_device("cuda", 3) == torch.device("cuda", 3)
    assert trainer_module._pick_device("cuda:1", 3) == torch.device("cuda", 1)
    assert trainer_module._pick_device("cpu", 3) == torch.device("cpu")


@pytest.mark.parametrize("cuda, backend", [(True, "nccl"), (False, "gloo")])
def test_torchrun_starts_nccl_on_cuda_and_gloo_otherwise(monkeypatch, cuda, backend):
    started = {}
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: started.setdefault("gpu", index))
    monkeypatch.setattr(dist, "init_process_group",
                        lambda name, **kwargs: started.update(backend=name, **kwargs))
    info = gdist.init_distributed()
    assert info == gdist.DistInfo(1, 2, 1)
    assert started["backend"] == backend and started["rank"] == 1
    assert started.get("gpu") == (1 if cuda else None)


@no_cuda
def test_train_on_cuda_without_cuda_is_one_clear_line(tmp_path, capsys):
    assert main(["train", "--config", str(PPMN_YAML), "trainer.device=cuda",
                 f"trainer.out_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'none'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("groundkit train: error: device 'cuda': CUDA is not available ("), err
    assert "use --device cpu" in err and "Traceback" not in err


@no_cuda
def test_evaluate_on_cuda_without_cuda_is_one_clear_line(tmp_path, capsys, monkeypatch):
    from groundkit.engine import tasks

    def never(*args, **kwargs):
        raise AssertionError("loaded a model before --device was checked")

    monkeypatch.setattr(tasks.Task, "load", never)
    assert main(["evaluate", "--checkpoint", "ppmn-synthetic", "--data", str(tmp_path),
                 "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("groundkit evaluate: error: device 'cuda': CUDA is not available ("), err


def test_place_for_inference_changes_the_layout_on_the_cpu_and_not_the_numbers():
    from groundkit.engine.tasks import place_for_inference
    from groundkit.vision.resnet import ResNet

    torch.manual_seed(0)
    model = ResNet(18, base_width=8, norm="gn").train()
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        expected = model.eval()(x)
        placed = place_for_inference(model.train(), "cpu")
        got = placed(x)
    assert placed is model and not placed.training
    convs = [p for p in placed.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert got["c5"].is_contiguous(memory_format=torch.channels_last)   # activations follow
    for level in expected:
        assert torch.allclose(got[level], expected[level], atol=1e-5, rtol=1e-4)


def test_predictors_from_pretrained_are_placed_and_handed_models_keep_their_layout():
    from groundkit import Referrer

    def channels_last(model):
        return any(p.dim() == 4 and not p.is_contiguous() for p in model.parameters())

    from groundkit.engine.tasks import get_task

    assert channels_last(Referrer.from_pretrained("pbrec-synthetic", device="cpu").model)
    model, cfg = get_task("referring").load("pbrec-synthetic")
    model.to(memory_format=torch.contiguous_format)
    handed = Referrer.from_model(model, cfg, "cpu")
    assert handed.model is model and not channels_last(handed.model)
