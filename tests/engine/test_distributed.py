from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from groundkit.engine import distributed as gdist
from groundkit.engine.checkpoint import load_checkpoint, load_train_state
from groundkit.engine.logging import read_metrics

TINY_TASK = Path(__file__).with_name("tiny_task.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_ranks(world_size: int, out_dir: Path, results: list[Path], expected_code: int = 0,
                 **env_extra: str) -> None:
    """Start one process per rank with the environment torchrun would give it; wait for all."""
    port = free_port()
    procs = []
    for rank in range(world_size):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
               **env_extra}
        procs.append(subprocess.Popen([sys.executable, str(TINY_TASK), str(out_dir),
                                       str(results[rank])], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        outputs = [p.communicate(timeout=90)[0].decode() for p in procs]
    finally:
        for p in procs:  # a rank that failed leaves the other one waiting at a collective
            p.kill()
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == expected_code, f"rank {rank} exited with {p.returncode}:\n{out}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A 2-rank run of the tiny task: its out_dir and each rank's result."""
    tmp_path = tmp_path_factory.mktemp("ddp")
    results = [tmp_path / "rank0.json", tmp_path / "rank1.json"]
    launch_ranks(2, tmp_path / "run", results)
    return tmp_path / "run", [json.loads(p.read_text()) for p in results]


def test_two_gloo_ranks_see_different_shards_and_end_identical(uninterrupted):
    run, (rank0, rank1) = uninterrupted

    # Each rank started from its own random init; DDP synchronises weights and gradients.
    assert rank0["params"] == rank1["params"]
    assert rank0["steps"] == rank1["steps"] == 8  # 2 epochs x ceil(10 items / 3) per rank
    for epoch in range(2):  # the 20 items split in two disjoint halves, every epoch
        shard0 = set(rank0["seen"][10 * epoch:10 * (epoch + 1)])
        shard1 = set(rank1["seen"][10 * epoch:10 * (epoch + 1)])
        assert not shard0 & shard1 and shard0 | shard1 == set(range(20))
    assert rank0["seen"][:10] != rank0["seen"][10:]  # reshuffled per epoch

    # Only rank 0 wrote: one record per step, and a checkpoint equal to the final weights.
    steps = [r["step"] for r in read_metrics(run) if "loss" in r]
    assert steps == list(range(1, 9))
    state, _ = load_checkpoint(run, expected_model_type="tiny")
    assert {k: v.tolist() for k, v in state.items()} == rank0["params"]


def test_sigterm_on_one_rank_stops_both_after_the_same_step_and_resumes_exactly(
        uninterrupted, tmp_path):
    full_run, (full0, _) = uninterrupted
    results = [tmp_path / "rank0.json", tmp_path / "rank1.json"]
    # Rank 1 alone is signalled, inside step 3 (of 4 per epoch); rank 0 learns it from the
    # all-reduce after that step, so both save step 3 and exit with 143.
    launch_ranks(2, tmp_path / "run", results, expected_code=143, TINY_STOP="1:3")
    stopped = [json.loads(p.read_text()) for p in results]
    assert [r["steps"] for r in stopped] == [3, 3]
    assert load_train_state(tmp_path / "run" / "train_state.safetensors")["step"] == 3

    launch_ranks(2, tmp_path / "run", results, TINY_RESUME="1")
    resumed = [json.loads(p.read_text()) for p in results]
    assert resumed[0]["params"] == resumed[1]["params"] == full0["params"]
    assert curve(tmp_path / "run") == curve(full_run)


def curve(out_dir: Path) -> list[tuple]:
    return [(r["step"], r["loss"], r["lr"]) for r in read_metrics(out_dir) if "loss" in r]


@pytest.mark.parametrize("synchronize, calls", [(True, ["barrier", "destroy"]),
                                                 (False, ["destroy"])])
def test_cleanup_waits_for_every_rank_before_the_teardown_unless_told_not_to(
        monkeypatch, synchronize, calls):
    seen = []
    monkeypatch.setattr(gdist.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(gdist.dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(gdist.dist, "barrier", lambda *a, **k: seen.append("barrier"))
    monkeypatch.setattr(gdist.dist, "destroy_process_group", lambda *a: seen.append("destroy"))
    gdist.cleanup_distributed(synchronize=synchronize)
    assert seen == calls


def test_single_process_helpers_are_no_ops(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = gdist.init_distributed()
    assert info == gdist.DistInfo(0, 1, 0) and info.is_main and not info.is_distributed
    assert gdist.is_main_process() and gdist.get_world_size() == 1
    gdist.barrier()
    x = torch.tensor([1.0, 2.0])
    assert gdist.all_reduce_mean(x) is x
    assert gdist.all_gather_objects({"a": 1}) == [{"a": 1}]


# --- resolve_device: --device checked once ---------------------------------------------------------

@pytest.mark.parametrize("device", [None, "cpu", torch.device("cpu"), " cpu "])
def test_resolve_device_accepts_the_cpu_and_the_default(device):
    expected = gdist.default_device() if device is None else torch.device("cpu")
    assert gdist.resolve_device(device) == expected


@pytest.mark.parametrize("device, message", [
    ("banana", "device 'banana': not a device; expected cpu, cuda, cuda:N (N = 0, 1, ...) or mps"),
    ("", "device '': not a device"),
    ("cuda:x", "device 'cuda:x': not a device"),
    ("xla", "device 'xla': not supported; expected cpu, cuda"),
    ("meta", "device 'meta': not supported"),
])
def test_resolve_device_refuses_unknown_forms(device, message):
    from groundkit.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        gdist.resolve_device(device)
    assert str(e.value).startswith(message)


def test_resolve_device_refuses_cuda_this_machine_lacks():
    from groundkit.errors import ConfigError

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        assert gdist.resolve_device("cuda:0") == torch.device("cuda:0")
        with pytest.raises(ConfigError, match=f"there are {count} CUDA devices"):
            gdist.resolve_device(f"cuda:{count}")
    else:
        for device in ("cuda", "cuda:0"):
            with pytest.raises(ConfigError, match=f"device '{device}': CUDA is not available"):
                gdist.resolve_device(device)


def test_resolve_device_refuses_mps_where_it_is_missing():
    from groundkit.errors import ConfigError

    if torch.backends.mps.is_available():
        assert gdist.resolve_device("mps").type == "mps"
    else:
        with pytest.raises(ConfigError, match="MPS .* is not available"):
            gdist.resolve_device("mps")
