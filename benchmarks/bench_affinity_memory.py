"""Peak extra memory of the dense instance affinity step, against the HW x HW matrix it avoids.

Target: at a 200 x 336 grid (an 800 x 1344 image at stride 4) with 150 channels in Psi and C = 128,
the step's peak extra memory is below 1% of the float32 N x N affinity (N = 67,200: 18.1 GB).

Measured: the process's resident-set high-water mark (Linux VmHWM, reset through
/proc/self/clear_refs) above the resident size before the step, once the inputs exist. Analytic: the
tensors the step allocates: the K x N output, the C x K context and one chunk of phi0(Q) / phi1(Q)
at a time (backward recomputes them per chunk and adds the gradients of Q and Psi). CPU only.

    python benchmarks/bench_affinity_memory.py [--height 200] [--width 336] [--psi 150] [--channels 128]
"""
from __future__ import annotations

import argparse
import gc
from pathlib import Path

import torch

from groundkit.models.panoptic.affinity import AffinityHead
from groundkit.models.panoptic.semantic_head import FeatureDecoder

MB = 1024 ** 2


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_extra_bytes(step) -> int:
    """Resident-memory high-water mark during ``step()`` minus the resident size before it."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    before = _status_kb("VmRSS")
    result = step()
    peak = _status_kb("VmHWM")
    del result
    gc.collect()
    return (peak - before) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=200)
    parser.add_argument("--width", type=int, default=336)
    parser.add_argument("--psi", type=int, default=150, help="channels K of Psi (detections + stuff)")
    parser.add_argument("--channels", type=int, default=128, help="affinity channels C")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    n, c, k = args.height * args.width, args.channels, args.psi
    head = AffinityHead(FeatureDecoder(8, 4, 1), channels=c)
    q = torch.randn(c, args.height, args.width)
    psi = torch.rand(k, args.height, args.width)
    q.add_(0)
    psi.add_(0)  # touch every page so the inputs are resident before measuring

    avoided = 4 * n * n
    budget = 0.01 * avoided
    chunk = head.chunk
    analytic = 4 * (n * k + c * k + 2 * chunk * (c + k))
    print(f"grid {args.height} x {args.width} (N = {n}), Psi channels K = {k}, "
          f"affinity channels C = {c}")
    print(f"avoided N x N float32 affinity: {avoided / MB:,.0f} MiB; 1% of it: {budget / MB:,.1f} MiB")
    print(f"analytic extra, forward (K x N output, C x K context, chunks of {chunk} pixels): "
          f"{analytic / MB:.1f} MiB = {100 * analytic / avoided:.3f}%")

    def inference():
        with torch.no_grad():
            return head(q, psi)

    def training_forward():
        return head(q.requires_grad_(), psi.requires_grad_())

    def training_step():
        p = head(q.requires_grad_(), psi.requires_grad_())
        p.sum().backward()
        return q.grad, psi.grad

    steps = {"inference forward": inference, "training forward (graph kept)": training_forward,
             "training forward + backward": training_step}
    for name, step in steps.items():
        extra = peak_extra_bytes(step)
        q.grad = psi.grad = None
        verdict = "PASS" if extra < budget else "over"
        print(f"measured peak extra, {name}: {extra / MB:.1f} MiB = "
              f"{100 * extra / avoided:.3f}% [{verdict}]")
    own = 4 * (n * c + 2 * n * k)
    print(f"(training includes P and the gradients of Q and Psi, {own / MB:.1f} MiB, which any "
          f"differentiable layer with these inputs and output needs)")


if __name__ == "__main__":
    main()
