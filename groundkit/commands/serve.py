"""``groundkit serve``: try the models in a web browser.

Opens a page with a tab per task family: narrative grounding (an image and a caption with
[bracketed] phrases: the overlay, each phrase's mask and score; hovering a phrase highlights its
mask), panoptic segmentation (the overlay with a label on each segment) and referring
expressions (once a referring model is given). Example images come with it: synthetic benchmark
images and two real COCO photos. The model picker offers the bundled models and the local
checkpoints found by --checkpoint and --checkpoints (by default every checkpoint folder in
./runs, where `groundkit train` writes).

It runs offline and listens on 127.0.0.1 (this machine only) unless --host says otherwise.
Needs the demo extra: pip install 'groundkit[demo]'.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

# The demo extra: (distribution, import name).
NEEDS = (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("python-multipart", "python_multipart"))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="a web page to try the models in a browser",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; "
                             "0.0.0.0 lets any machine that reaches this one use it)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860; 0: any free one)")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="CKPT",
                        help="also offer this checkpoint folder (repeatable)")
    parser.add_argument("--checkpoints", action="append", default=[], metavar="DIR",
                        help="also offer every checkpoint folder in DIR (repeatable; "
                             "default: ./runs when it exists)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--max-upload-mb", type=float, default=10,
                        help="largest image file accepted, in MB (default 10)")
    parser.add_argument("--max-megapixels", type=float, default=40,
                        help="largest image accepted, in millions of pixels (default 40)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from groundkit.errors import InputError

    missing = [dist for dist, module in NEEDS if importlib.util.find_spec(module) is None]
    if missing:
        raise InputError(f"groundkit serve needs the demo extra ({', '.join(missing)} missing): "
                         f"pip install 'groundkit[demo]'")
    if args.max_upload_mb <= 0 or args.max_megapixels <= 0:
        raise InputError("--max-upload-mb and --max-megapixels must be positive")
    from groundkit.app import server
    from groundkit.engine.distributed import resolve_device

    resolve_device(args.device)  # before binding: a bad --device is a one-line error
    folders = args.checkpoints or (["runs"] if Path("runs").is_dir() else [])
    models, problems = server.find_models(args.checkpoint, folders)
    for problem in problems:
        print(f"groundkit serve: not offered: {problem}", file=sys.stderr)
    limits = server.Limits(max_bytes=int(args.max_upload_mb * 2**20),
                           max_pixels=int(args.max_megapixels * 1e6))
    app = server.create_app(models, limits, device=args.device)
    sock = server.bind(args.host, args.port)
    if args.host not in server.LOOPBACK:
        print(f"groundkit serve: warning: listening on {args.host}, not only on this machine: "
              f"anyone who reaches it can upload images and run the models", file=sys.stderr)
    print(f"groundkit serve: {server.url_of(sock)} ({len(models)} models; Ctrl-C stops)",
          flush=True)
    server.serve(app, sock)
    return 0
