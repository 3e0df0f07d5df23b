"""``groundkit predict --checkpoint CKPT --image IMG --caption "..." --out DIR``.

Grounding (default): mark the phrases with brackets, ``"There is [a red circle] on [the grass]."``
(or install spaCy and an English model to find noun phrases). Writes ``DIR/overlay.png`` (each
phrase in its own colour, the caption below coloured alike) and ``DIR/result.json`` (per-phrase
COCO RLE masks at the image's size, scores, character spans).

Panoptic (``--task panoptic``): writes ``DIR/overlay.png`` with a legend, ``DIR/panoptic.png``
(COCO panoptic ids) and ``DIR/result.json`` (segments_info).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="ground a caption (or segment) one image",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="checkpoint folder/file or bundled name "
                                             "(default: ppmn-synthetic, or panoptic-synthetic)")
    parser.add_argument("--task", choices=("grounding", "panoptic"), default="grounding")
    parser.add_argument("--image", required=True)
    parser.add_argument("--caption", help="caption with [bracketed] phrases (grounding)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.task == "panoptic":
        from groundkit.engine.panoptic import predict_command
        return predict_command(args)
    return _predict_grounding(args)


def _predict_grounding(args: argparse.Namespace) -> int:
    from groundkit._io import write_json
    from groundkit.api import Grounder, as_rgb
    from groundkit.errors import InputError
    from groundkit.ops.masks import encode_rle
    from groundkit.visualize import overlay_grounding, save_image

    if not args.caption:
        raise InputError("--caption is required for grounding, e.g. "
                         "--caption 'There is [a red circle] next to [the grass].'")
    grounder = Grounder.from_pretrained(args.checkpoint or "ppmn-synthetic", device=args.device)
    image = as_rgb(args.image)
    grounder.set_image(image)
    result = grounder.ground(args.caption)
    out = Path(args.out)
    save_image(overlay_grounding(image, result["caption"], result["spans"], result["masks"],
                                 result["scores"]), out / "overlay.png")
    write_json(out / "result.json", {
        "image": str(args.image), "caption": result["caption"],
        "phrases": [{"phrase": p, "span": list(s), "score": float(sc), "mask": encode_rle(m)}
                    for p, s, sc, m in zip(result["phrases"], result["spans"], result["scores"],
                                           result["masks"])]}, indent=2)
    for phrase, score, mask in zip(result["phrases"], result["scores"], result["masks"]):
        print(f"{phrase!r:40} score {score:.3f}  area {int(mask.sum())} px")
    print(f"wrote {out / 'overlay.png'} and {out / 'result.json'}")
    return 0
