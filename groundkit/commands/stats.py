"""``groundkit stats``: statistics of a benchmark folder (as ``groundkit generate`` writes it)."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "stats", help="print statistics of a benchmark folder",
        description="Read a benchmark folder back through the format readers and print, per split: "
                    "narratives, phrases per narrative, grounded, plural and stuff shares, "
                    "instances per image, distractor share and refs per image.")
    p.add_argument("root", metavar="DIR", help="folder written by `groundkit generate`")
    p.add_argument("--split", help="only this split (default: every split found)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from groundkit.data.stats import find_splits, format_table, split_stats
    from groundkit.errors import InputError

    splits = find_splits(args.root)
    if args.split is not None:
        if args.split not in splits:
            raise InputError(f"{args.root}: no split {args.split!r}; found {', '.join(splits)}")
        splits = [args.split]
    print(format_table({s: split_stats(args.root, s) for s in splits}))
    return 0
