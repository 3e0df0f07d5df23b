"""Speed and memory figures of a grounding model (PPMN or DRMN); prints a table.

    python benchmarks/bench_grounding.py latency --checkpoint ppmn-synthetic --data data/synthetic
    python benchmarks/bench_grounding.py text-cache --config configs/ppmn_synthetic.yaml
    python benchmarks/bench_grounding.py layout --config configs/ppmn_synthetic.yaml

``latency``: ``Grounder.ground()`` time per caption on an image already set, ``set_image`` time,
parameters, and the process's peak resident memory. ``text-cache``: training step time with the
frozen text features cached per caption against re-encoding the caption at every step.
``layout``: training step time with the convolution weights in channels-last layout
(``trainer.channels_last``) against the default contiguous one, best of ``--repeats``.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def latency(args: argparse.Namespace) -> None:
    from groundkit.api import Grounder
    from groundkit.data.grounding import GroundingDataset

    grounder = Grounder.from_pretrained(args.checkpoint, device=args.device)
    val = GroundingDataset.from_root(args.data, "val", grounder.resize, max_items=args.n)
    set_times, ground_times = [], []
    for narrative in val.narratives:
        image = val.load_image(narrative.image_id)
        spans = [u.span for _, u in narrative.grounded()]
        t = time.perf_counter()
        grounder.set_image(image)
        set_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        grounder.ground(narrative.caption, spans)
        ground_times.append(time.perf_counter() - t)
    params = sum(p.numel() for n, p in grounder.model.named_parameters()
                 if not n.startswith("text_encoder."))
    print(f"checkpoint {args.checkpoint}, {len(val)} captions, device {grounder.device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'set_image (median)':<28} {1000 * statistics.median(set_times):8.1f} ms")
    print(f"{'ground per caption (median)':<28} {1000 * statistics.median(ground_times):8.1f} ms")
    print(f"{'ground per caption (p90)':<28} "
          f"{1000 * sorted(ground_times)[int(0.9 * len(ground_times))]:8.1f} ms")
    print(f"{'parameters (w/o text enc.)':<28} {params / 1e6:8.2f} M")
    print(f"{'peak resident memory':<28} {peak_rss_mb():8.0f} MB")


def training_batches(args: argparse.Namespace):
    """The model type, experiment config and ``--steps`` training batches of ``--config``."""
    from groundkit.config import load_config, peek_value
    from groundkit.data.grounding import GroundingDataset, collate_grounding
    from groundkit.engine.grounding import GroundingTask

    model_type = peek_value(args.config, args.overrides, "model_type")
    cfg = load_config(GroundingTask().experiment_class(model_type), args.config, args.overrides)
    size = cfg.trainer.batch_size
    data = GroundingDataset.from_root(cfg.data.root, cfg.data.train_split, cfg.data.resize,
                                      max_items=args.steps * size,
                                      semantic=cfg.model.semantic_classes > 0)
    batches = [collate_grounding([data[i] for i in range(k, k + size)])
               for k in range(0, len(data) - size + 1, size)][:args.steps]
    return model_type, cfg, batches


def median_step_time(model: torch.nn.Module, batches: list[dict]) -> float:
    """Median seconds of forward + backward + Adam step over ``batches`` (the first is warm-up)."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-4)
    times = []
    for batch in batches:
        t = time.perf_counter()
        loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def text_cache(args: argparse.Namespace) -> None:
    from groundkit.models import build_model

    model_type, cfg, batches = training_batches(args)
    rows = []
    for cached in (True, False):
        torch.manual_seed(0)
        model = build_model(model_type, cfg.model).train()
        if not cached:
            model.text_cache = None  # the frozen encoder runs on every step
        else:
            model.text_cache.get_or_compute([c for b in batches for c in b["captions"]])
        rows.append(("cached text features" if cached else "re-encode each step",
                     median_step_time(model, batches)))
    print_rows(model_type, cfg, args, rows, "re-encode/cached")


def layout(args: argparse.Namespace) -> None:
    from groundkit.models import build_model

    model_type, cfg, batches = training_batches(args)
    rows = []
    for _ in range(args.repeats):  # alternate, so drifts of a shared machine hit both alike
        for channels_last in (False, True):
            torch.manual_seed(0)
            model = build_model(model_type, cfg.model).train()
            model.text_cache.get_or_compute([c for b in batches for c in b["captions"]])
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            rows.append(("channels-last" if channels_last else "contiguous (NCHW)",
                         median_step_time(model, batches)))
    best = {name: min(t for n, t in rows if n == name) for name, _ in rows}
    print_rows(model_type, cfg, args, list(best.items()), "channels-last/NCHW")


def print_rows(model_type: str, cfg, args: argparse.Namespace, rows: list[tuple[str, float]],
               ratio: str) -> None:
    """Seconds per step of each row, then the second row's time over the first's."""
    print(f"{model_type}, batch {cfg.trainer.batch_size}, {args.steps} steps, "
          f"torch threads {torch.get_num_threads()}")
    for name, t in rows:
        print(f"{name:<24} {1000 * t:8.1f} ms/step")
    print(f"{'ratio (' + ratio + ')':<24} {rows[1][1] / rows[0][1]:8.2f} x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--checkpoint", default="ppmn-synthetic")
    lat.add_argument("--data", default="data/synthetic")
    lat.add_argument("--n", type=int, default=50)
    lat.add_argument("--device", default="cpu")
    tc = sub.add_parser("text-cache")
    tc.add_argument("--config", default="configs/ppmn_synthetic.yaml")
    tc.add_argument("--steps", type=int, default=8)
    tc.add_argument("overrides", nargs="*")
    lay = sub.add_parser("layout")
    lay.add_argument("--config", default="configs/ppmn_synthetic.yaml")
    lay.add_argument("--steps", type=int, default=8)
    lay.add_argument("--repeats", type=int, default=2, help="best of this many runs of each")
    lay.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    {"latency": latency, "text-cache": text_cache, "layout": layout}[args.what](args)


if __name__ == "__main__":
    main()
