"""Re-score referring prediction files without groundkit: pycocotools and plain loops.

An independent check of what ``groundkit evaluate`` prints for referring models: REC Acc@0.5
(IoU >= 0.5), RES oIoU (total intersection / total union), and the recall of the referent among
the first K ``proposals`` of each record (IoU > 0.5). Nothing of groundkit is imported: the refs
pickle is read with ``pickle`` (use it on files you generated, never on untrusted ones), the
instances with ``json``, masks with ``pycocotools.mask``.

    python benchmarks/rescore_referring.py --data data/unseen7 --split val \\
        --pred runs/two_stage_unseen/vlnms-trans-synthetic_k3/predictions.json --ks 1 2 3 5
    python benchmarks/rescore_referring.py --data data/unseen7 --split val \\
        --pred 'runs/two_stage_unseen/*/predictions.json'
"""
from __future__ import annotations

import argparse
import glob
import json
import pickle
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils


def iou(a: list[float], b: list[float]) -> float:
    """IoU of two xyxy boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def gt_mask(ann: dict, height: int, width: int) -> np.ndarray:
    seg = ann["segmentation"]
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = seg
    return mask_utils.decode(rle).astype(bool)


def rescore(data: Path, split: str, pred: Path, ks: list[int]) -> dict:
    refs = pickle.load(open(data / "refcoco" / "refs(unc).p", "rb"))
    instances = json.load(open(data / "refcoco" / "instances.json"))
    anns = {a["id"]: a for a in instances["annotations"]}
    images = {i["id"]: i for i in instances["images"]}
    records = {(r["ref_id"], r["sent_id"]): r for r in json.load(open(pred))}
    hits, recalled, inter, union, n = 0, {k: 0 for k in ks}, 0, 0, 0
    for ref in refs:
        if ref["split"] != split:
            continue
        ann = anns[ref["ann_id"]]
        x, y, w, h = ann["bbox"]
        box = [x, y, x + w, y + h]
        image = images[ref["image_id"]]
        truth = gt_mask(ann, image["height"], image["width"])
        for sentence in ref["sentences"]:
            n += 1
            p = records.get((ref["ref_id"], sentence["sent_id"]))
            if p is None:
                union += int(truth.sum())
                continue
            hits += iou(p["box"], box) >= 0.5
            for k in ks:
                recalled[k] += any(iou(q, box) > 0.5 for q in p.get("proposals", [])[:k])
            if p.get("mask") is not None:
                m = mask_utils.decode({"size": p["mask"]["size"],
                                       "counts": p["mask"]["counts"].encode()}).astype(bool)
                inter += int((m & truth).sum())
                union += int((m | truth).sum())
    return {"n": n, "rec": 100 * hits / n, "oiou": 100 * inter / union if union else float("nan"),
            **{f"R@{k}": 100 * recalled[k] / n for k in ks}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--pred", required=True, help="a predictions.json, or a glob of them")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3, 5])
    args = parser.parse_args()
    for path in sorted(glob.glob(args.pred)):
        s = rescore(args.data, args.split, Path(path), args.ks)
        print(f"{path}: n {s['n']}  REC {s['rec']:.2f}  oIoU {s['oiou']:.2f}  "
              + "  ".join(f"R@{k} {s[f'R@{k}']:.2f}" for k in args.ks))


if __name__ == "__main__":
    main()
