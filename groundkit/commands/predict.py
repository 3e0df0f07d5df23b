"""``groundkit predict --checkpoint CKPT --image IMG --caption "..." --out DIR``.

The checkpoint's task family (or ``--task``, whose bundled model is the default checkpoint)
decides what is written:

Grounding (default): mark the phrases with brackets, ``"There is [a red circle] on [the grass]."``,
or give their character spans in the caption with ``--spans 9:21,25:34`` (end exclusive), or
install spaCy and an English model to find noun phrases. Writes ``DIR/overlay.png`` (each phrase
in its own colour and named on its region, the caption below coloured alike) and
``DIR/result.json`` (the caption, and per phrase the keys of grounding prediction files:
segment_index, utterance, score, COCO RLE mask at the image's size; and its span).

Panoptic (``--task panoptic``): writes ``DIR/overlay.png`` (each segment named on it, a legend
with a swatch per colour drawn), ``DIR/panoptic.png`` (COCO panoptic ids) and ``DIR/result.json``
(segments_info with the keys of COCO panoptic prediction files: id, category_id, area, bbox,
iscrowd, score; and isthing, category).

Referring (``--task referring`` or a referring checkpoint, ``--expression "the red circle"``):
writes ``DIR/overlay.png`` (the chosen box and mask, the expression at the box's corner, the top-k
proposals faintly) and ``DIR/result.json`` (box, score, mask RLE, proposals).

``--image`` may be a folder: every .jpg, .jpeg and .png in it (sorted by name) is predicted with
the same caption or expression, each into ``DIR/<file name without suffix>/``.

A bundled model knows only the synthetic benchmark (its card's ``trained_on``): given an image
unlike its scenes (larger than 256 px, or photo-like colours), a note says so, once, on stderr.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="ground a caption (or segment) on images",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    from groundkit.models import families

    parser.add_argument("--checkpoint", help="checkpoint folder/file or bundled name "
                                             "(default: the task's bundled model, e.g. "
                                             "ppmn-synthetic or panoptic-synthetic)")
    parser.add_argument("--task", choices=families(),
                        help="task family (default: the checkpoint's, else grounding)")
    parser.add_argument("--image", required=True,
                        help="an image file, or a folder: its .jpg/.jpeg/.png images")
    parser.add_argument("--caption", "--expression", dest="text",
                        help="grounding: a caption with [bracketed] phrases; referring: the "
                             "expression (--expression)")
    parser.add_argument("--spans", help="grounding: the phrases as character spans of the "
                                        "caption, START:END,... (end exclusive), e.g. 9:21,25:34")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from groundkit._io import check_output_dir
    from groundkit.api import SyntheticModelWarning, predictor_class
    from groundkit.engine.distributed import resolve_device
    from groundkit.engine.tasks import task_of_checkpoint
    from groundkit.errors import InputError
    from groundkit.text.phrases import parse_spans

    check_output_dir(args.out, "--out")  # before the model runs
    images = image_files(args.image)
    options = {} if args.spans is None else {"spans": parse_spans(args.spans)}
    resolve_device(args.device)
    family = args.task or (task_of_checkpoint(args.checkpoint).name if args.checkpoint
                           else "grounding")
    predictor = predictor_class(family).from_pretrained(args.checkpoint, device=args.device)
    if options and not predictor.takes_spans:
        raise InputError(f"--spans: {family} prediction takes no phrase spans (grounding does)")
    outputs = output_dirs(images, Path(args.out)) if Path(args.image).is_dir() else [args.out]
    noted = False
    with warnings.catch_warnings():  # the predictor's warning is printed once as a note instead
        warnings.simplefilter("ignore", SyntheticModelWarning)
        for image, out in zip(images, outputs):
            note = None if noted else predictor.domain_note(image)
            if note is not None:
                print(f"groundkit predict: note: {note}", file=sys.stderr)
                noted = True
            result = predictor.predict_one(image, args.text, **options)
            written = predictor.save(image, result, out)
            for line in predictor.describe(result):
                print(line)
            print(f"wrote {', '.join(str(p) for p in written)}")
    return 0


def image_files(path: str | Path) -> list[Path]:
    """``[path]`` for a file; for a folder its images (``IMAGE_SUFFIXES``, any case), sorted by
    name, so that a folder is predicted in the same order on every machine. A folder without
    images is an InputError rather than a run that silently writes nothing."""
    from groundkit.errors import InputError

    path = Path(path)
    if not path.is_dir():
        return [path]  # a missing file is read_image's error, which names it
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        what = "is empty" if not any(path.iterdir()) else "holds no image"
        raise InputError(f"--image {path}: the folder {what} (expected files ending in "
                         f"{', '.join(IMAGE_SUFFIXES)})")
    return found


def output_dirs(images: list[Path], out: Path) -> list[Path]:
    """``out/<stem>`` per image; images whose stems collide (``a.jpg``, ``a.png``) keep their
    whole name (``out/a.jpg``) so that no result overwrites another."""
    stems = [p.stem for p in images]
    return [out / (p.stem if stems.count(p.stem) == 1 else p.name) for p in images]
