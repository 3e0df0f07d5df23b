"""benchmarks/bench_step_floor.py: the heavy operators of a step are all recorded and replayed,
and a tiny PPMN step is measured end to end."""
from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn


@pytest.fixture(scope="module")
def bench(benchmark_script):
    return benchmark_script("bench_step_floor")


def test_records_every_heavy_operator_of_forward_and_backward(bench):
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
                        nn.Conv2d(8, 8, 1), nn.Flatten(), nn.Linear(8 * 5 * 5, 4))
    x = torch.randn(2, 3, 5, 5)
    recorder = bench.Recorder()
    with recorder:
        net(x).sum().backward()
    kinds = [kind for kind, _ in recorder.calls]
    assert kinds.count("convolution") == 2 and kinds.count("group norm") == 1
    assert kinds.count("matmul") == 3   # the linear layer: forward, its input's and weight's gradients
    for _, replay in recorder.calls:    # each runs alone, backward included
        replay()
    # 2 x outputs x (C_in k k) per pass; the image needs no gradient, the 1x1 conv's input does
    assert [flops for flops, _ in recorder.conv_flops] == [2 * 400 * 27 * 2, 2 * 400 * 8 * 3]


def test_channels_last_inputs_are_replayed_channels_last(bench):
    x = torch.randn(2, 8, 4, 4).to(memory_format=torch.channels_last)
    assert bench.is_channels_last(x) and bench.is_channels_last(bench.like(x, True))
    assert not bench.is_channels_last(torch.randn(2, 8, 4, 4))
    assert not bench.is_channels_last(torch.randn(2, 1, 4, 4))   # ambiguous: either layout


def test_a_tiny_ppmn_step(bench, tmp_path):
    from groundkit.data.synthetic.writer import generate_benchmark
    from groundkit.engine.tasks import task_of

    generate_benchmark(tmp_path, seed=0, sizes={"train": 4, "val": 1}, image_size=64, progress=False)
    overrides = [*task_of("ppmn").tiny_overrides("ppmn"), f"data.root={tmp_path}"]
    args = argparse.Namespace(batch_size=2, steps=1, replays=1)
    record = bench.measure("configs/ppmn_synthetic.yaml", overrides, args)
    assert record["step"] > 0 and record["gflop"] > 0
    assert record["convolution"] > 0 and record["matmul"] > 0
    speeds = [gflops for _, gflops, _ in record["slowest_convolutions"]]
    assert speeds and all(s > 0 for s in speeds)
