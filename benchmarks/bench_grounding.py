"""Speed and memory figures of a grounding model (PPMN or DRMN); prints a table.

    python benchmarks/bench_grounding.py latency --checkpoint ppmn-synthetic --data data/synthetic
    python benchmarks/bench_grounding.py text-cache --config configs/ppmn_synthetic.yaml

``latency``: ``Grounder.ground()`` time per caption on an image already set, ``set_image`` time,
parameters, and the process's peak resident memory. ``text-cache``: training step time with the
frozen text features cached per caption against re-encoding the caption at every step.
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


def text_cache(args: argparse.Namespace) -> None:
    from groundkit.config import load_config, peek_value
    from groundkit.data.grounding import GroundingDataset, collate_grounding
    from groundkit.engine.grounding import build_grounding_model, experiment_class

    model_type = peek_value(args.config, args.overrides, "model_type")
    cfg = load_config(experiment_class(model_type), args.config, args.overrides)
    data = GroundingDataset.from_root(cfg.data.root, cfg.data.train_split, cfg.data.resize,
                                      max_items=args.steps * cfg.trainer.batch_size)
    batches = [collate_grounding([data[i] for i in range(k, k + cfg.trainer.batch_size)])
               for k in range(0, len(data), cfg.trainer.batch_size)][:args.steps]
    rows = []
    for cached in (True, False):
        torch.manual_seed(0)
        model = build_grounding_model(model_type, cfg.model).train()
        if not cached:
            model.text_cache = None  # the frozen encoder runs on every step
        else:
            model.text_cache.get_or_compute([c for b in batches for c in b["captions"]])
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-4)
        times = []
        for batch in batches:
            t = time.perf_counter()
            loss = model(batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t)
        rows.append(("cached text features" if cached else "re-encode each step",
                     statistics.median(times[1:])))
    print(f"{model_type}, batch {cfg.trainer.batch_size}, {args.steps} steps, "
          f"torch threads {torch.get_num_threads()}")
    for name, t in rows:
        print(f"{name:<24} {1000 * t:8.1f} ms/step")
    print(f"{'ratio (re-encode/cached)':<24} {rows[1][1] / rows[0][1]:8.2f} x")


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
    args = parser.parse_args()
    {"latency": latency, "text-cache": text_cache}[args.what](args)


if __name__ == "__main__":
    main()
