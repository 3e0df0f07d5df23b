"""Prediction files for the score commands, made from a generated benchmark folder's ground truth
(``groundkit generate``) by perturbing it: shifted things, dropped segments, swapped categories,
shifted grounding and referring masks, moved boxes. Deterministic in the seed.

Used by tests/commands/test_score_imports.py and benchmarks/bench_score_commands.py (loaded by path:
the tests are imported in importlib mode).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from groundkit.data.formats import (
    grounding_record,
    load_narratives,
    load_panoptic,
    load_referring,
    read_segment_png,
    write_grounding_predictions,
    write_panoptic_predictions,
    write_referring_predictions,
)
from groundkit.metrics.panoptic_quality import union_masks
from groundkit.ops.masks import encode_rle
from groundkit.structures import PanopticResult

SPLIT = "val"
TASKS = ("png", "panoptic", "rec", "res")


def shift(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``mask (H, W)`` rolled by -2..2 pixels along each axis: a near miss."""
    return np.roll(mask, tuple(rng.integers(-2, 3, 2)), axis=(0, 1))


def perturbed_panoptic(data: Path, pred: Path, rng: np.random.Generator) -> None:
    """pred/panoptic.json + pred/panoptic/: segments renumbered 1, 2, ...; things shifted; one
    segment in ten is dropped (its pixels VOID) and one in twenty changes category (same kind)."""
    gt = load_panoptic(data / "annotations" / f"panoptic_{SPLIT}.json",
                       data / "annotations" / f"panoptic_{SPLIT}")
    same_kind = {kind: [c.id for c in gt.categories.values() if c.isthing == kind]
                 for kind in (True, False)}
    results = {}
    for image_id, ann in gt.annotations.items():
        ids = read_segment_png(gt.png_dir / ann.file_name, gt.shape(image_id))
        out, category = np.zeros_like(ids), {}
        for k, s in enumerate(ann.segments, start=1):
            if rng.random() < 0.1:
                continue
            isthing = gt.categories[s.category_id].isthing
            mask = shift(ids == s.id, rng) if isthing else ids == s.id
            out[mask] = k
            category[k] = (int(rng.choice(same_kind[isthing])) if rng.random() < 0.05
                           else s.category_id)
        present = set(np.unique(out).tolist()) - {0}
        results[image_id] = PanopticResult(out, [{"id": k, "category_id": c} for k, c in
                                                 category.items() if k in present])
    write_panoptic_predictions(pred / "panoptic.json", pred / "panoptic", results, gt.images,
                               gt.categories.values())


def perturbed_grounding(data: Path, pred: Path, rng: np.random.Generator) -> None:
    """pred/grounding.json: each grounded phrase's true mask, shifted; one phrase in ten missing."""
    gt = load_panoptic(data / "annotations" / f"panoptic_{SPLIT}.json",
                       data / "annotations" / f"panoptic_{SPLIT}")
    records = []
    for n in load_narratives(data / "annotations" / f"png_coco_{SPLIT}.json"):
        ann = gt.annotation(n.image_id)
        ids = read_segment_png(gt.png_dir / ann.file_name, gt.shape(n.image_id))
        kept = [(i, u) for i, u in n.grounded() if rng.random() >= 0.1]
        masks = union_masks(ids, ann, [u.segment_ids for _, u in kept])
        masks = np.array([shift(m, rng) for m in masks]).reshape(masks.shape)
        records.append(grounding_record(n, [i for i, _ in kept], masks, [1.0] * len(kept)))
    write_grounding_predictions(pred / "grounding.json", records)


def perturbed_referring(data: Path, pred: Path, rng: np.random.Generator) -> None:
    """pred/referring.json: the referent's box moved by up to a third of its size, its mask
    shifted."""
    samples, instances = load_referring(data / "refcoco" / "refs(unc).p",
                                        data / "refcoco" / "instances.json", SPLIT)
    records = []
    for s in samples:
        box = instances.gt_box(s)
        size = np.tile(box[2:] - box[:2], 2)
        records.append({"ref_id": s.ref_id, "sent_id": s.sent_id, "score": 1.0,
                        "box": (box + size * rng.uniform(-0.33, 0.33, 4)).tolist(),
                        "mask": encode_rle(shift(instances.gt_mask(s), rng))})
    write_referring_predictions(pred / "referring.json", records)


def write_predictions(data: Path, pred: Path, seed: int = 0) -> None:
    """Every prediction file the score commands read, from the ground truth in ``data``."""
    rng = np.random.default_rng(seed)
    perturbed_panoptic(data, pred, rng)
    perturbed_grounding(data, pred, rng)
    perturbed_referring(data, pred, rng)


def score_arguments(data: Path, pred: Path, task: str) -> list[str]:
    """The arguments of ``groundkit score TASK`` on the files of :func:`write_predictions`."""
    ann = data / "annotations"
    if task == "png":
        return ["png", "--narratives", str(ann / f"png_coco_{SPLIT}.json"), "--panoptic-json",
                str(ann / f"panoptic_{SPLIT}.json"), "--panoptic-dir", str(ann / f"panoptic_{SPLIT}"),
                "--pred", str(pred / "grounding.json")]
    if task == "panoptic":
        return ["panoptic", "--gt-json", str(ann / f"panoptic_{SPLIT}.json"), "--gt-dir",
                str(ann / f"panoptic_{SPLIT}"), "--pred-json", str(pred / "panoptic.json"),
                "--pred-dir", str(pred / "panoptic")]
    return [task, "--refs", str(data / "refcoco" / "refs(unc).p"), "--instances",
            str(data / "refcoco" / "instances.json"), "--split", SPLIT, "--pred",
            str(pred / "referring.json")]
