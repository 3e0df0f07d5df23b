"""``groundkit predict --checkpoint CKPT --image IMG --caption "..." --out DIR``.

The checkpoint's task family (or ``--task``, whose bundled model is the default checkpoint)
decides what is written:

Grounding (default): mark the phrases with brackets, ``"There is [a red circle] on [the grass]."``
(or install spaCy and an English model to find noun phrases). Writes ``DIR/overlay.png`` (each
phrase in its own colour, the caption below coloured alike) and ``DIR/result.json`` (per-phrase
COCO RLE masks at the image's size, scores, character spans).

Panoptic (``--task panoptic``): writes ``DIR/overlay.png`` with a legend, ``DIR/panoptic.png``
(COCO panoptic ids) and ``DIR/result.json`` (segments_info).

Referring (``--task referring`` or a referring checkpoint, ``--expression "the red circle"``):
writes ``DIR/overlay.png`` (the chosen box and mask, the top-k proposals faintly) and
``DIR/result.json`` (box, score, mask RLE, proposals).
"""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="ground a caption (or segment) one image",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    from groundkit.models import families

    parser.add_argument("--checkpoint", help="checkpoint folder/file or bundled name "
                                             "(default: the task's bundled model, e.g. "
                                             "ppmn-synthetic or panoptic-synthetic)")
    parser.add_argument("--task", choices=families(),
                        help="task family (default: the checkpoint's, else grounding)")
    parser.add_argument("--image", required=True)
    parser.add_argument("--caption", "--expression", dest="text",
                        help="grounding: a caption with [bracketed] phrases; referring: the "
                             "expression (--expression)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from groundkit._io import check_output_dir
    from groundkit.api import predictor_class
    from groundkit.engine.distributed import resolve_device
    from groundkit.engine.tasks import task_of_checkpoint

    check_output_dir(args.out, "--out")  # before the model runs
    resolve_device(args.device)
    family = args.task or (task_of_checkpoint(args.checkpoint).name if args.checkpoint
                           else "grounding")
    predictor = predictor_class(family).from_pretrained(args.checkpoint, device=args.device)
    result = predictor.predict_one(args.image, args.text)
    written = predictor.save(args.image, result, args.out)
    for line in predictor.describe(result):
        print(line)
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0
