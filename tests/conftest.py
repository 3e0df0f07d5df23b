"""Shared fixtures: the bundled text encoder (loaded once) and a tiny grounding checkpoint."""
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

# Oversubscribed OpenMP threads spin and slow small CPU tests down by an order of magnitude.
torch.set_num_threads(int(os.environ.get("GROUNDKIT_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def benchmark_script():
    """``load(name)``: ``benchmarks/<name>.py`` as a module (the scripts are not a package; their
    folder goes on the path, as when they run, for the ``timing`` helpers they share)."""
    folder = Path(__file__).parents[1] / "benchmarks"
    if str(folder) not in sys.path:
        sys.path.append(str(folder))

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"groundkit_benchmarks_{name}",
                                                      folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture(scope="session")
def text_encoder():
    from groundkit.text.encoder import TextEncoder
    return TextEncoder()


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A 6/4/2-image synthetic benchmark at 64 px."""
    from groundkit.data.synthetic import generate_benchmark
    root = tmp_path_factory.mktemp("synthetic")
    generate_benchmark(root, seed=3, sizes={"train": 6, "val": 4, "test": 2}, image_size=64,
                       progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_ppmn_checkpoint(tmp_path_factory, text_encoder, tiny_synthetic):
    """An untrained tiny PPMN saved as a checkpoint with its experiment config."""
    from groundkit.config import config_from_dict, config_to_dict
    from groundkit.engine.checkpoint import save_checkpoint
    from groundkit.engine.grounding import PPMNExperiment
    from groundkit.models.ppmn import build_ppmn

    cfg = config_from_dict(PPMNExperiment, {
        "model": {"backbone": {"depth": 18, "base_width": 8, "fpn_channels": 16, "norm": "gn"},
                  "neck_channels": 16, "hidden_dim": 16, "rounds": 1, "top_pixels": 4,
                  "heads": 2, "ffn_dim": 32},
        "data": {"root": str(tiny_synthetic), "resize": {"short_side": 64, "max_size": 64}}})
    torch.manual_seed(0)
    model = build_ppmn(cfg.model, text_encoder=text_encoder)
    path = tmp_path_factory.mktemp("ckpt") / "tiny_ppmn"
    save_checkpoint(path, model, config_to_dict(cfg), "ppmn")
    return path


@pytest.fixture(scope="session")
def tiny_pbrec_checkpoint(tmp_path_factory, text_encoder, tiny_synthetic):
    """An untrained tiny PBREC checkpoint folder (9 shape categories, 64 px squares)."""
    from groundkit.config import config_to_dict, load_config
    from groundkit.engine.checkpoint import save_checkpoint
    from groundkit.engine.tasks import task_of

    task = task_of("pbrec")
    cfg = load_config(task.experiment_class("pbrec"), None,
                      [*task.tiny_overrides("pbrec"), "model.num_classes=9",
                       f"data.root={tiny_synthetic}"])
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("runs") / "tiny_pbrec"
    save_checkpoint(path, task.build_model(cfg, text_encoder=text_encoder), config_to_dict(cfg),
                    "pbrec")
    return path


@pytest.fixture
def dev_full(tmp_path):
    """A path that is always full (writes fail with ENOSPC): ``/dev/full``, or where a machine
    lacks it (some containers), the same device (1, 7) made in ``tmp_path``."""
    import stat
    from pathlib import Path

    if os.path.exists("/dev/full"):
        return Path("/dev/full")
    path = tmp_path / "full"
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))
        with open(path, "wb") as f:
            f.write(b"")
    except OSError as e:
        pytest.skip(f"no /dev/full and none can be made here ({e})")
    return path
