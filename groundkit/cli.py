"""The ``groundkit`` command. Each subcommand lives in ``groundkit/commands/<name>.py``.

A command module defines ``register(subparsers) -> None``, which adds its parser and sets
``func=run`` on it; ``run(args) -> int`` does the work. Command modules import torch and models
inside ``run`` so that ``groundkit --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from groundkit.errors import GroundkitError

COMMANDS = ["generate", "stats", "score", "train", "evaluate", "predict", "demo", "serve"]


def package_version() -> str:
    """The installed distribution's version (what pip reports); the source's ``__version__``
    when groundkit runs from a checkout that is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("groundkit")
    except PackageNotFoundError:
        from groundkit import __version__
        return __version__


class _Version(argparse.Action):
    """``--version``, looked up only when asked (the package metadata costs every other command
    some 15 ms of imports)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"groundkit {package_version()}")  # on stdout, as argparse's own version action
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="groundkit", description="Ground language in pixels.")
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"groundkit.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"groundkit.commands.{name}":
                raise
            continue  # command not built yet
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except GroundkitError as e:
        print(f"groundkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside training (which saves and stops by itself)
        print(f"groundkit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
