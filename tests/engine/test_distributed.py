from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from groundkit.engine import distributed as gdist
from groundkit.engine.checkpoint import load_checkpoint
from groundkit.engine.logging import read_metrics

TINY_TASK = Path(__file__).with_name("tiny_task.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_ranks(world_size: int, out_dir: Path, results: list[Path]) -> None:
    """Start one process per rank with the environment torchrun would give it; wait for all."""
    port = free_port()
    procs = []
    for rank in range(world_size):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(TINY_TASK), str(out_dir),
                                       str(results[rank])], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        outputs = [p.communicate(timeout=90)[0].decode() for p in procs]
    finally:
        for p in procs:  # a rank that failed leaves the other one waiting at a collective
            p.kill()
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{out}"


def test_two_gloo_ranks_see_different_shards_and_end_identical(tmp_path):
    results = [tmp_path / "rank0.json", tmp_path / "rank1.json"]
    launch_ranks(2, tmp_path / "run", results)
    rank0, rank1 = (json.loads(p.read_text()) for p in results)

    # Each rank started from its own random init; DDP synchronises weights and gradients.
    assert rank0["params"] == rank1["params"]
    assert rank0["steps"] == rank1["steps"] == 8  # 2 epochs x ceil(10 items / 3) per rank
    for epoch in range(2):  # the 20 items split in two disjoint halves, every epoch
        shard0 = set(rank0["seen"][10 * epoch:10 * (epoch + 1)])
        shard1 = set(rank1["seen"][10 * epoch:10 * (epoch + 1)])
        assert not shard0 & shard1 and shard0 | shard1 == set(range(20))
    assert rank0["seen"][:10] != rank0["seen"][10:]  # reshuffled per epoch

    # Only rank 0 wrote: one record per step, and a checkpoint equal to the final weights.
    steps = [r["step"] for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert steps == list(range(1, 9))
    state, _ = load_checkpoint(tmp_path / "run", expected_model_type="tiny")
    assert {k: v.tolist() for k, v in state.items()} == rank0["params"]


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
