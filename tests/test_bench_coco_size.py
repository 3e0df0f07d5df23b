"""benchmarks/bench_coco_size.py on the CPU, shrunk: the code paths a GPU run takes (the inference
report and one training step of each family), at 64 px with a ResNet-18."""
from __future__ import annotations

import argparse

import pytest


@pytest.fixture(scope="module")
def bench(benchmark_script):
    return benchmark_script("bench_coco_size")


def options(**kw) -> argparse.Namespace:
    base = dict(device="cpu", size=(64, 96), images=1, top=3, depth=18, train_size=64,
                train_batch=1, amp=False, text_encoder=None, nchw=False)
    return argparse.Namespace(**{**base, **kw})


def test_models_parse(bench):
    assert bench.parse_models("panoptic-r101, ppmn", 50) == [("panoptic", 101), ("ppmn", 50)]
    with pytest.raises(SystemExit, match="unknown model 'drmn'"):
        bench.parse_models("drmn", 50)


@pytest.mark.parametrize("kind,nchw", [("panoptic", False), ("ppmn", False), ("ppmn", True)])
def test_inference_report(bench, kind, nchw):
    record = bench.bench_one(kind, 18, options(nchw=nchw))
    assert record["model"] == f"{kind}-r18" and record["input"].startswith("64x96")
    assert record["layout"] == ("nchw" if nchw else "channels_last")   # groundkit's on the CPU
    assert record["conv_peak_gflop_per_s"] > 0 and record["bound_s"] >= 0
    assert record["time_over_bound"] > 0   # both rounded: at 64 px the bound is ~1 ms
    assert record["gflops"] > 0 and record["gflops_by_op"]["convolution"] > 0
    assert record["seconds_per_image"]["n"] == 1 and record["peak_rss_mib"] > 0
    assert "Self CPU time total" in record["profile"]


def test_a_training_step_of_each_family(bench, tmp_path):
    from groundkit.data.synthetic.writer import generate_benchmark

    generate_benchmark(tmp_path, seed=0, sizes={"train": 1}, image_size=64, progress=False)
    for family_type in bench.TRAIN_RECIPES:
        record = bench.train_steps(family_type, options(), tmp_path)
        assert record["train_step"] == family_type and record["input"] == "(64, 64)"
        assert record["seconds_per_step"] > 0 and record["loss"] == record["loss"]  # not NaN
