"""``groundkit generate``: write the synthetic benchmark in the real formats."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate", help="write the synthetic grounding benchmark",
        description="Write the synthetic panoptic narrative grounding benchmark in the real "
                    "formats: COCO panoptic, PNG narratives and RefCOCO. The files are a pure "
                    "function of --seed and the sizes.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--train", type=int, default=2000, help="train images (default 2000)")
    p.add_argument("--val", type=int, default=200, help="val images (default 200)")
    p.add_argument("--test", type=int, default=200, help="test images (default 200)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes drawing the images (default 1; the files do not depend on it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from groundkit._io import check_output_dir
    from groundkit.data.synthetic import generate_benchmark
    from groundkit.errors import InputError

    sizes = {"train": args.train, "val": args.val, "test": args.test}
    bad = [f"--{k} {v}" for k, v in sizes.items() if v < 0]
    if bad:
        raise InputError(f"image counts must be >= 0, got {', '.join(bad)}")
    if args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    check_output_dir(args.out, "--out")
    generate_benchmark(args.out, args.seed, {k: v for k, v in sizes.items() if v > 0}, args.size,
                       workers=args.workers)
    print(f"wrote {sum(sizes.values())} images to {args.out}")
    return 0
