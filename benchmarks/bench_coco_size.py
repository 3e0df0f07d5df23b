"""Per-image time and memory of the paper-sized networks at COCO size (800 x 1333), untrained.

Models (``--models``, comma-separated; ``TYPE`` takes ``--depth``, ``TYPE-rDEPTH`` names its own):
``panoptic`` (the unified panoptic model at the paper's defaults: ResNet-DEPTH FPN at full width,
256 FPN channels, FCOS on P3-P7, COCO's 133 classes) and ``ppmn`` (PPMN at the paper's defaults on
a ResNet-DEPTH FPN, the bundled MiniLM text encoder, a caption of 5 phrases). Weights are random:
the cost of a forward pass does not depend on them (only the post-processing's number of
detections does, which random weights keep small).

Per model, on one image (a COCO photo from ``groundkit/app/examples`` resized to 800 x 1333,
padded to 800 x 1344): the FLOPs of one forward pass (``torch.utils.flop_counter.FlopCounterMode``:
convolutions, matrix products, attention; a multiply-add is 2 FLOPs; that pass is also the
warm-up), the seconds of ``--images`` forward passes (eval mode, ``no_grad``, post-processing
included: median, min, max; wall and CPU time), the achieved GFLOP/s, the peak memory (CPU: the
process's peak RSS, ``ru_maxrss``, against the RSS before the model was built; CUDA:
``torch.cuda.max_memory_allocated``) and a ``torch.profiler`` table of the operators that take the
most self time in one more pass. Several models run one per child process, so that each peak RSS
is that model's alone.

On this project's 2-core CPU machine (one thread, other trainings running)::

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_coco_size.py --models panoptic-r50 \\
        --images 2 --threads 1

On a GPU machine (the device tool, one call of about 3 minutes). Its image lacks pycocotools,
and the bundled text encoder's package (88 MB) is more than the tool carries (64 MiB): here, in
the repository's root, fetch the wheel and save a half-precision copy of the encoder (45 MB;
groundkit loads it back in float32), both kept out of git::

    echo /.whl/ >> .git/info/exclude; echo /.minilm16/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_17_x86_64 -d .whl pycocotools==2.0.11
    python benchmarks/bench_coco_size.py --save-text-encoder .minilm16 --models ''

then one call, ``run(carry=[".whl", ".minilm16"], timeout_s=420, command=...)`` with::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
    PYTHONPATH=.:/tmp/site python3 benchmarks/bench_coco_size.py --device cuda --images 5 \\
        --threads 8 --train-step --text-encoder .minilm16

``--train-step`` (CUDA; on the CPU only with ``--train-size`` small, as the tests run it) also
times one training step (forward, backward, AdamW step) of each family at the paper's backbone
and full width: grounding (PPMN R-50), panoptic (R-50), referring (PBREC-MT R-50), on synthetic
scenes drawn at ``--train-size`` px squares (1024 by default: 1.05 Mpx, the pixel count of
800 x 1333), ``--train-batch`` images per step (default 2, as the papers' 16 over 8 GPUs), with
``--amp`` bf16 autocast if asked; it prints seconds per step (median of 3 after a warm-up step)
and ``torch.cuda.max_memory_allocated``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "groundkit" / "app" / "examples" / "coco-142238.jpg"
CAPTION = "[A man] in [a red shirt] holds [a kite] above [the grass] under [the sky]."
HEIGHT, WIDTH = 800, 1333
# Per family: the synthetic YAML (its data and categories) and the overrides that make the model
# the paper's size (full-width ResNet FPN; the heads at their dataclass defaults where the YAML
# shrinks them). The backbone's depth is added per run.
TRAIN_RECIPES = {
    "ppmn": ("ppmn_synthetic.yaml", {"neck_channels": 256, "hidden_dim": 256, "top_pixels": 200,
                                     "heads": 8, "ffn_dim": 2048}),
    "panoptic": ("panoptic_synthetic.yaml", {
        "decoder_channels": 128, "affinity_channels": 128, "detector_levels": 5,
        "detector_convs": 4, "size_limits": [64, 128, 256, 512], "pre_nms_top_n": 1000,
        "max_detections": 100}),
    "pbrec": ("pbrec_synthetic.yaml", {"dim": 256, "layers": 4, "ffn_dim": 512,
                                       "detector_convs": 4}),
}


def parse_models(names: str, depth: int) -> list[tuple[str, int]]:
    """``"panoptic-r50,ppmn"`` -> ``[("panoptic", 50), ("ppmn", depth)]``."""
    out = []
    for name in filter(None, (n.strip() for n in names.split(","))):
        kind, _, suffix = name.partition("-r")
        if kind not in ("panoptic", "ppmn"):
            raise SystemExit(f"--models: unknown model {name!r}; expected panoptic or ppmn, "
                             f"optionally with -rDEPTH (panoptic-r101)")
        out.append((kind, int(suffix) if suffix else depth))
    return out


def parse_size(text: str) -> tuple[int, int]:
    height, _, width = text.lower().partition("x")
    return int(height), int(width)


def backbone_config(depth: int):
    from groundkit.vision.backbone import BackboneConfig

    return BackboneConfig(depth=depth, base_width=64, fpn_channels=256, weights=None)


def build(kind: str, depth: int, text_encoder: str | None = None) -> torch.nn.Module:
    from groundkit.models import build_model

    if kind == "panoptic":
        from groundkit.models.panoptic import PanopticConfig
        return build_model("panoptic", PanopticConfig(backbone=backbone_config(depth)))
    from groundkit.models.ppmn import PPMNConfig
    return build_model("ppmn", PPMNConfig(backbone=backbone_config(depth),
                                          text_encoder=text_encoder))


def save_text_encoder(out: str) -> None:
    """The bundled MiniLM folder into ``out`` with its weights in float16 (half the bytes)."""
    import shutil

    from safetensors.torch import load_file, save_file

    from groundkit.text.encoder import default_model_path

    source = default_model_path()
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("model.safetensors", "*.bin"),
                    dirs_exist_ok=True)
    weights = load_file(str(source / "model.safetensors"))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()},
              str(Path(out) / "model.safetensors"), metadata={"format": "pt"})
    print(f"wrote {out}: MiniLM in float16")


def coco_batch(kind: str, device: torch.device, height: int = HEIGHT, width: int = WIDTH
               ) -> dict:
    """One ``height x width`` image (padded to a multiple of 32) in the model surface's batch."""
    from PIL import Image

    from groundkit.data.transforms import image_to_tensor, pad_batch
    from groundkit.text.phrases import parse_marked_caption

    rgb = np.array(Image.open(PHOTO).convert("RGB"))  # writable: torch.from_numpy takes it
    images = pad_batch([image_to_tensor(rgb, (height, width))], 32).to(device)
    batch = {"images": images, "image_sizes": [(height, width)], "orig_sizes": [(height, width)]}
    if kind == "ppmn":
        caption, spans = parse_marked_caption(CAPTION)
        batch.update(captions=[caption], spans=[spans])
    return batch


def run_forward(model: torch.nn.Module, batch: dict, device: torch.device) -> None:
    if kind_of(model) == "panoptic":
        model.predict(batch["images"], batch["image_sizes"], batch["orig_sizes"])
    else:
        model.predict(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()


def kind_of(model: torch.nn.Module) -> str:
    return "ppmn" if hasattr(model, "encode_text") else "panoptic"


def rss_mib() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def count_flops(model: torch.nn.Module, batch: dict, device: torch.device
                ) -> tuple[int, dict[str, int]]:
    """FLOPs of one forward pass, total and per operator (a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run_forward(model, batch, device)
    per_op = {str(op).removeprefix("aten."): n
              for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return counter.get_total_flops(), per_op


def conv_peak_gflops(device: torch.device, height: int, width: int, passes: int = 4) -> float:
    """The best GFLOP/s of one 3 x 3, 256-channel convolution on the P2 map of the input (the
    network's most common large operator), in either memory layout: the speed a network of
    convolutions could reach here, which makes ``gflops / peak`` the arithmetic's bound."""
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).to(device)
    x = torch.randn(1, 256, -(-height // 4), -(-width // 4), device=device)
    flops = 2 * 256 * 256 * 9 * x.shape[-2] * x.shape[-1]
    best = 0.0
    with torch.no_grad():
        for layout in (torch.contiguous_format, torch.channels_last):
            conv, x = conv.to(memory_format=layout), x.contiguous(memory_format=layout)
            conv(x)   # warm-up: oneDNN builds its kernel on the first call
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(passes):
                conv(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = max(best, flops * passes / (time.perf_counter() - start) / 1e9)
    return best


def profile_table(model: torch.nn.Module, batch: dict, device: torch.device, rows: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        run_forward(model, batch, device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def bench_one(kind: str, depth: int, args: argparse.Namespace) -> dict:
    from groundkit.engine.tasks import place_for_inference

    device = torch.device(args.device)
    rss_before = current_rss_mib()
    torch.manual_seed(0)
    model = build(kind, depth, args.text_encoder)
    # as groundkit places a loaded model (channels-last on the CPU), unless --nchw
    model = model.to(device).eval() if args.nchw else place_for_inference(model, device)
    channels_last = any(p.dim() == 4 and not p.is_contiguous() for p in model.parameters())
    params = sum(p.numel() for p in model.parameters())
    height, width = args.size
    batch = coco_batch(kind, device, height, width)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad():
        flops, per_op = count_flops(model, batch, device)  # also the warm-up pass
        walls, cpus = [], []
        for _ in range(args.images):
            wall, cpu = time.perf_counter(), time.process_time()
            run_forward(model, batch, device)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
                else rss_mib())
        table = profile_table(model, batch, device, args.top) if args.top else ""
    median = statistics.median(walls)
    peak_gflops = conv_peak_gflops(device, height, width)
    bound = flops / 1e9 / peak_gflops
    return {"model": f"{kind}-r{depth}", "device": str(device), "threads": torch.get_num_threads(),
            "input": f"{height}x{width} (padded {tuple(batch['images'].shape[-2:])})",
            "layout": "channels_last" if channels_last else "nchw",
            "parameters_m": round(params / 1e6, 2), "gflops": round(flops / 1e9, 1),
            "gflops_by_op": {k: round(v / 1e9, 1) for k, v in
                             sorted(per_op.items(), key=lambda kv: -kv[1])},
            "seconds_per_image": {"median": round(median, 3), "min": round(min(walls), 3),
                                  "max": round(max(walls), 3), "n": len(walls),
                                  "cpu_median": round(statistics.median(cpus), 3)},
            "achieved_gflop_per_s": round(flops / 1e9 / median, 2),
            "conv_peak_gflop_per_s": round(peak_gflops, 1), "bound_s": round(bound, 3),
            "time_over_bound": round(median / bound, 2),
            ("peak_cuda_allocated_mib" if device.type == "cuda" else "peak_rss_mib"): round(peak),
            "rss_before_model_mib": round(rss_before), "profile": table}


def train_steps(family_type: str, args: argparse.Namespace, data_root: Path) -> dict:
    """Seconds and memory of a training step of ``family_type`` at the paper's size."""
    from groundkit.config import load_config
    from groundkit.engine.tasks import task_of
    from groundkit.engine.trainer import TrainerConfig, build_optimizer, move_to_device

    device = torch.device(args.device)
    task = task_of(family_type)
    yaml, heads = TRAIN_RECIPES[family_type]
    backbone = {"depth": args.depth, "base_width": 64, "fpn_channels": 256, "norm": "frozen_bn",
                "weights": None, "freeze": False}
    text = {"text_encoder": args.text_encoder} if args.text_encoder and family_type != "panoptic" else {}
    model = json.dumps({"backbone": backbone, **heads, **text})  # one override, checked together
    cfg = load_config(task.experiment_class(family_type), ROOT / "configs" / yaml,
                      [f"model={model}", f"data.root={data_root}", "data.max_items=null",
                       *task.input_size_overrides(args.train_size)])
    dataset = task.dataset(cfg, data_root, "train", train=True)
    cfg = task.prepare(cfg, dataset)
    torch.manual_seed(0)
    model = task.build_model(cfg).to(device).train()
    task.prepare_model(model, dataset)
    optimizer = build_optimizer(model, TrainerConfig(lr=1e-4, optimizer="adamw"))
    items = [dataset[k % len(dataset)] for k in range(args.train_batch)]
    batch = move_to_device(task.collate(items), device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(4):  # one warm-up step, then 3 timed
        start = time.perf_counter()
        with amp:
            losses = model(batch)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - start)
    memory = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
              else rss_mib())
    return {"train_step": family_type, "backbone": f"R-{args.depth}", "device": str(device),
            "input": f"{tuple(batch['images'].shape[-2:])}", "batch": args.train_batch,
            "amp_bf16": args.amp, "loss": round(losses["loss"].item(), 4),
            "seconds_per_step": round(statistics.median(times), 3),
            ("peak_cuda_allocated_mib" if device.type == "cuda" else "peak_rss_mib"): round(memory)}


def report(record: dict) -> None:
    profile = record.pop("profile", "")
    print(json.dumps(record, indent=1), flush=True)
    if profile:
        print(f"top operators by self {'CUDA' if 'cuda' in record['device'] else 'CPU'} time "
              f"({record['model']}, one pass):\n{profile}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="panoptic-r50,panoptic-r101,ppmn-r50",
                        help="comma-separated: panoptic, ppmn, optionally -rDEPTH")
    parser.add_argument("--depth", type=int, default=50, help="ResNet depth of models without "
                                                             "-rDEPTH, and of --train-step")
    parser.add_argument("--size", default=f"{HEIGHT}x{WIDTH}", type=parse_size,
                        help="input HEIGHTxWIDTH (default COCO's 800x1333; smaller for checks)")
    parser.add_argument("--images", type=int, default=3, help="timed passes per model")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--nchw", action="store_true",
                        help="keep the default layout (groundkit's inference uses channels-last "
                             "on the CPU)")
    parser.add_argument("--top", type=int, default=12, help="profiler rows (0: no profile)")
    parser.add_argument("--train-step", action="store_true",
                        help="also time a training step of each family (see above)")
    parser.add_argument("--train-size", type=int, default=1024)
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--amp", action="store_true", help="--train-step under bf16 autocast")
    parser.add_argument("--text-encoder", help="a local text encoder folder (default: the "
                                               "bundled MiniLM)")
    parser.add_argument("--save-text-encoder", metavar="DIR",
                        help="first write the bundled MiniLM in float16 to DIR (see above)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.save_text_encoder:
        save_text_encoder(args.save_text_encoder)
    from groundkit.engine.distributed import resolve_device

    args.device = str(resolve_device(args.device))  # a clear error for cuda on this build
    models = parse_models(args.models, args.depth)
    if args.child or len(models) == 1:
        for kind, depth in models:
            report(bench_one(kind, depth, args))
    else:  # one process per model: each peak RSS is its own
        for kind, depth in models:
            child = [a for a in sys.argv[1:] if a != "--train-step"]
            subprocess.run([sys.executable, __file__, *child, "--child",
                            "--models", f"{kind}-r{depth}"], check=True)
    if args.train_step and not args.child:
        if args.device == "cpu" and args.train_size > 256:
            raise SystemExit("--train-step on the CPU: use --train-size 256 or less (a 1024 px "
                             "step of R-50 takes many minutes here)")
        from groundkit.data.synthetic.writer import generate_benchmark

        with tempfile.TemporaryDirectory() as tmp:
            generate_benchmark(tmp, seed=0, sizes={"train": args.train_batch},
                               image_size=args.train_size, progress=False)
            for family_type in TRAIN_RECIPES:
                print(json.dumps(train_steps(family_type, args, Path(tmp)), indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
