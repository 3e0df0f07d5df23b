"""Does an image's output depend on the other images of its batch? Measured with bundled models.

Three checks on the real COCO images of the test fixtures (427 x 640 and 360 x 640) and one
128 px image:

1. ``Grounder``: one caption on a COCO image alone, then batched with the 128 px image; the IoU
   of each phrase's mask alone vs batched (1.0 everywhere = independent).
2. ``Segmenter``: the share of pixels whose panoptic segment (category, and thing or stuff) is the
   same alone and batched.
3. ``groundkit evaluate`` of the grounding model on the two COCO images and a portrait copy of
   one as a split, at batch size 1 and 3: the AR tables.

The script uses only the public API and CLI, so it runs on older trees too
(``PYTHONPATH=OLD_TREE python benchmarks/bench_batch_independence.py``) for a side-by-side figure.

    python benchmarks/bench_batch_independence.py [--grounding ppmn-synthetic]
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).parents[1] / "tests" / "fixtures" / "coco_sample"
CAPTION = "[A person] stands on [the grass] beside [a dog] under [the sky]."


def other_image() -> np.ndarray:
    """A 128 px image (noise) to batch the COCO image with."""
    return np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)


def mask_ious(a: np.ndarray, b: np.ndarray) -> list[float]:
    inter = (a & b).reshape(len(a), -1).sum(1)
    union = (a | b).reshape(len(a), -1).sum(1)
    return [float(i / u) if u else 1.0 for i, u in zip(inter, union)]


def grounding_check(name: str, coco: str, other: np.ndarray) -> None:
    from groundkit import Grounder

    g = Grounder.from_pretrained(name, device="cpu")
    alone = g([coco], [CAPTION])[0]
    batched = g([coco, other], [CAPTION, "[the sky]"])[0]
    ious = mask_ious(alone["masks"], batched["masks"])
    print(f"Grounder ({name}), {Path(coco).name} alone vs batched with a 128 px image:")
    for phrase, iou, a, b in zip(alone["phrases"], ious, alone["masks"], batched["masks"]):
        print(f"  {phrase!r:14} mask IoU alone/batched {iou:.4f}  (areas {int(a.sum())} / "
              f"{int(b.sum())} px)")


def segmenter_check(name: str, coco: str, other: np.ndarray) -> None:
    from groundkit import Segmenter

    s = Segmenter.from_pretrained(name, device="cpu")
    alone = s([coco])[0]
    batched = s([coco, other])[0]
    same = (category_map(alone) == category_map(batched)).mean()
    print(f"Segmenter ({name}), {Path(coco).name}: {100 * same:.2f}% of the pixels get the same "
          f"category alone and batched with a 128 px image")


def category_map(result) -> np.ndarray:
    lookup = {0: -1, **{i["id"]: i["category_id"] for i in result.segments_info}}
    return np.vectorize(lookup.get)(result.id_map)


def mixed_folder(root: Path) -> Path:
    """The fixture's two COCO images and a transposed (portrait) copy of the first, as split
    ``val`` in the COCO / PNG layout: three aspect ratios, so a batch pads them differently."""
    from PIL import Image

    images, annotations = root / "images" / "val", root / "annotations"
    shutil.copytree(FIXTURE / "images", images)
    shutil.copytree(FIXTURE / "panoptic", annotations / "panoptic_val")
    panoptic = json.loads((FIXTURE / "panoptic.json").read_text())
    narratives = json.loads((FIXTURE / "png_narratives.json").read_text())
    record = next(i for i in panoptic["images"] if i["id"] == 142238)
    ann = next(a for a in panoptic["annotations"] if a["image_id"] == 142238)
    new_id, name = 142239, "000000142239"
    for src, dst in ((images / record["file_name"], images / f"{name}.jpg"),
                     (annotations / "panoptic_val" / ann["file_name"],
                      annotations / "panoptic_val" / f"{name}.png")):
        Image.open(src).transpose(Image.Transpose.TRANSPOSE).save(dst, quality=95)
    panoptic["images"].append({**record, "id": new_id, "file_name": f"{name}.jpg",
                               "height": record["width"], "width": record["height"]})
    segments = [{**s, "bbox": [s["bbox"][1], s["bbox"][0], s["bbox"][3], s["bbox"][2]]}
                for s in ann["segments_info"]]
    panoptic["annotations"].append({**ann, "image_id": new_id, "file_name": f"{name}.png",
                                    "segments_info": segments})
    narratives += [{**n, "image_id": str(new_id)} for n in narratives  # PNG ids are strings
                   if str(n["image_id"]) == "142238"]
    (annotations / "panoptic_val.json").write_text(json.dumps(panoptic))
    (annotations / "png_coco_val.json").write_text(json.dumps(narratives))
    return root


def evaluate_check(name: str) -> None:
    from groundkit.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        root = mixed_folder(Path(tmp) / "coco")
        scores = {}
        for batch_size in (1, 3):
            out = Path(tmp) / f"bs{batch_size}.json"
            main(["evaluate", "--checkpoint", name, "--data", str(root), "--split", "val",
                  "--batch-size", str(batch_size), "--device", "cpu", "--json", str(out),
                  "--plot", str(Path(tmp) / "curves.png")])
            scores[batch_size] = json.loads(out.read_text())
    print(f"evaluate ({name}) on three COCO images of three aspect ratios: AR "
          f"{100 * scores[1]['overall']['ar']:.2f} at batch size 1, "
          f"{100 * scores[3]['overall']['ar']:.2f} at batch size 3; "
          f"identical tables: {scores[1] == scores[3]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grounding", default="ppmn-synthetic")
    parser.add_argument("--panoptic", default="panoptic-synthetic")
    args = parser.parse_args()
    coco = str(FIXTURE / "images" / "000000142238.jpg")
    other = other_image()
    grounding_check(args.grounding, coco, other)
    segmenter_check(args.panoptic, coco, other)
    evaluate_check(args.grounding)


if __name__ == "__main__":
    main()
