"""How far a training step is from what its arithmetic needs: FLOPs, and the heavy operators alone.

    python benchmarks/bench_step_floor.py --config configs/ppmn_synthetic.yaml \\
        --config configs/drmn_synthetic.yaml --config configs/panoptic_synthetic.yaml --threads 2

For each config, on batches of its training data (the config's model, data path and layout;
random initial weights):

1. the step: forward, backward and the optimizer update, median seconds over ``--steps`` steps;
2. its arithmetic: FLOPs of one forward + backward (``torch.utils.flop_counter``: convolutions and
   matrix products);
3. its floor while the network stays as it is: every convolution, matrix product and GroupNorm of
   one step recorded with its shapes and memory layout, then each replayed alone (forward +
   backward, median of ``--replays``) and summed. The replay runs each operator on its own warm
   buffers, so the sum is a lower bound of what those operators cost inside a step.

A step can only be made 2x faster without changing the network if its floor is under half of it.
Say which machine and how quiet it was beside the figures.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timing import median_wall_seconds
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from groundkit.config import load_config, peek_value, resolve_config
from groundkit.engine.tasks import task_of
from groundkit.engine.trainer import build_optimizer

ATEN = torch.ops.aten
MATMULS = {ATEN.mm.default: torch.mm, ATEN.addmm.default: torch.addmm, ATEN.bmm.default: torch.bmm}


def is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
        memory_format=torch.channels_last)


class Recorder(TorchDispatchMode):
    """Records the heavy operators a step runs: ``calls`` of ``(kind, replay)``, ``replay()``
    running one copy of the operator (for convolutions and norms, with its backward) on its own
    buffers of the same shapes and layout."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Callable[[], None]]] = []
        self.conv_flops: list[tuple[int, str]] = []   # per convolution call: FLOPs, shapes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is ATEN.convolution.default and not args[6]:    # not transposed
            x, w = args[0], args[1]
            self.calls.append(("convolution", conv_replay(*args[:6], groups=args[8])))
            # a multiply-add counts 2; the backward costs the forward twice (input and weight
            # gradients), once without the image's gradient
            forward = 2 * out.numel() * w[0].numel()
            self.conv_flops.append((forward * (3 if x.requires_grad else 2),
                                    f"x{tuple(x.shape)} w{tuple(w.shape)}"))
        elif func is ATEN.native_group_norm.default:
            self.calls.append(("group norm", group_norm_replay(args[0], args[6])))
        elif func in MATMULS:   # forward and backward products alike
            shapes = [a.shape for a in args if isinstance(a, torch.Tensor)]
            self.calls.append(("matmul", matmul_replay(MATMULS[func], shapes)))
        return out


def like(x: torch.Tensor, grad: bool) -> torch.Tensor:
    fmt = torch.channels_last if is_channels_last(x) else torch.contiguous_format
    return torch.randn(x.shape).to(memory_format=fmt).requires_grad_(grad)


def conv_replay(x, w, b, stride, padding, dilation, groups) -> Callable[[], None]:
    # The image itself needs no gradient; every later activation does.
    x, w = like(x, x.requires_grad), like(w, True)
    b = None if b is None else torch.randn(b.shape, requires_grad=True)
    wrt = [t for t in (x, w, b) if t is not None and t.requires_grad]

    def run() -> None:
        y = F.conv2d(x, w, b, stride, padding, dilation, groups)
        torch.autograd.grad(y, wrt, torch.ones_like(y))
    return run


def group_norm_replay(x, groups: int) -> Callable[[], None]:
    x = like(x, True)
    weight, bias = torch.ones(x.shape[1], requires_grad=True), torch.zeros(x.shape[1], requires_grad=True)

    def run() -> None:
        y = F.group_norm(x, groups, weight, bias)
        torch.autograd.grad(y, [x, weight, bias], torch.ones_like(y))
    return run


def matmul_replay(op, shapes) -> Callable[[], None]:
    tensors = [torch.randn(s) for s in shapes]
    return lambda: op(*tensors)


def build(config: str, overrides: list[str], batch_size: int):
    """(model, optimizer, batches of the config's training data, the config)."""
    config = str(resolve_config(config))
    model_type = peek_value(config, overrides, "model_type")
    task = task_of(model_type)
    cfg = load_config(task.experiment_class(model_type), config,
                      [*overrides, f"trainer.batch_size={batch_size}"])
    data = cfg.data
    dataset = task.dataset(cfg, data.root, data.train_split, train=True,
                           max_items=4 * batch_size, cache=data.cache)
    cfg = task.prepare(cfg, dataset)
    torch.manual_seed(cfg.trainer.seed)
    model = task.build_model(cfg)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    task.prepare_model(model, dataset)
    model.train()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=task.collate)
    return model, build_optimizer(model, cfg.trainer), list(loader), cfg


def measure(config: str, overrides: list[str], args: argparse.Namespace) -> dict[str, float]:
    model, optimizer, batches, cfg = build(config, overrides, args.batch_size)

    def step(batch) -> None:
        loss = model(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.trainer.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.clip_grad_norm)
        optimizer.step()

    for batch in batches:   # warm up: allocator, oneDNN primitives
        step(batch)
    times = []
    for i in range(args.steps):
        start = time.perf_counter()
        step(batches[i % len(batches)])
        times.append(time.perf_counter() - start)
    with FlopCounterMode(display=False) as flops:
        step(batches[0])
    recorder = Recorder()
    with recorder:
        step(batches[0])
    floor: dict[str, float] = {}
    conv_seconds = []
    for kind, replay in recorder.calls:
        seconds = median_wall_seconds(replay, args.replays)
        floor[kind] = floor.get(kind, 0.0) + seconds
        if kind == "convolution":
            conv_seconds.append(seconds)
    slowest = sorted(zip(conv_seconds, recorder.conv_flops), key=lambda r: -r[0])
    return {"step": statistics.median(times), "gflop": flops.get_total_flops() / 1e9, **floor,
            "slowest_convolutions": [(s, f / s / 1e9, shapes) for s, (f, shapes) in slowest]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", help="repeatable; default: the PPMN demo's")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every config (repeatable)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--replays", type=int, default=10, help="timed replays of each operator")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--top", type=int, default=0,
                        help="also print the N slowest convolutions alone, with their GFLOP/s")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    kinds = ("convolution", "group norm", "matmul")
    print(f"batch {args.batch_size}, {torch.get_num_threads()} threads; ms per step; the floor is "
          "the heavy operators replayed alone")
    print(f"{'config':32} {'step':>7} {'GFLOP':>6} {'GFLOP/s':>8} "
          + " ".join(f"{k:>11}" for k in kinds) + f" {'floor':>7} {'floor/step':>10}")
    for config in args.config or ["configs/ppmn_synthetic.yaml"]:
        r = measure(config, args.set, args)
        floor = sum(r.get(k, 0.0) for k in kinds)
        print(f"{config:32} {r['step'] * 1e3:7.1f} {r['gflop']:6.2f} {r['gflop'] / r['step']:8.1f} "
              + " ".join(f"{r.get(k, 0.0) * 1e3:11.1f}" for k in kinds)
              + f" {floor * 1e3:7.1f} {floor / r['step']:10.2f}", flush=True)
        for seconds, gflops, shapes in r["slowest_convolutions"][:args.top]:
            print(f"    {seconds * 1e3:6.2f} ms {gflops:6.1f} GFLOP/s  {shapes}")


if __name__ == "__main__":
    main()
