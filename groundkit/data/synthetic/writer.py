"""Write the synthetic benchmark in the real formats (formats.md sections 1-3).

Layout under ``out_dir``::

    images/<split>/<file_name>                     RGB PNG images
    annotations/panoptic_<split>.json              COCO panoptic JSON
    annotations/panoptic_<split>/<png>             COCO panoptic segment PNGs
    annotations/png_coco_<split>.json              PNG narratives, one per image
    refcoco/instances.json, refcoco/refs(unc).p    RefCOCO (all splits; test -> testA / testB)

Image ``index`` of ``split`` is drawn from its own ``Generator([seed, split code, index])``, so
the files are a pure function of the seed and splits do not depend on each other's sizes.
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from groundkit._io import atomic_path
from groundkit.data.formats.coco_panoptic import write_panoptic_json, write_segment_png
from groundkit.data.formats.png_narratives import write_narratives
from groundkit.data.formats.refcoco import Instance, instance_from_mask, write_instances, write_refs
from groundkit.data.synthetic.language import make_context_refs, make_narrative
from groundkit.data.synthetic.scene import CATEGORIES, Scene, make_scene
from groundkit.errors import InputError
from groundkit.structures import ImageRecord, Narrative, PanopticAnnotation, Segment

SPLIT_CODES = {"train": 1, "val": 2, "test": 3}
_PER_SPLIT = 1_000_000  # image ids are split code * 10**6 + index + 1: unique across splits


@dataclass
class SplitRecords:
    """What one split adds to the files: panoptic + narratives for the split, RefCOCO for all."""

    images: list[ImageRecord] = field(default_factory=list)
    annotations: list[PanopticAnnotation] = field(default_factory=list)
    narratives: list[Narrative] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)
    refs: list[dict[str, Any]] = field(default_factory=list)

    def extend(self, other: "SplitRecords") -> None:
        self.images += other.images
        self.annotations += other.annotations
        self.narratives += other.narratives
        self.instances += other.instances
        self.refs += other.refs


def image_id(split: str, index: int) -> int:
    """The dataset-wide id of image ``index`` of ``split``."""
    if split not in SPLIT_CODES:
        raise InputError(f"unknown split {split!r}; expected one of {sorted(SPLIT_CODES)}")
    if not 0 <= index < _PER_SPLIT - 1:
        raise InputError(f"image index {index} of split {split!r} is out of range "
                         f"[0, {_PER_SPLIT - 1})")
    return SPLIT_CODES[split] * _PER_SPLIT + index + 1


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator that draws image ``index`` of ``split``; independent of every other image."""
    return np.random.default_rng([seed, SPLIT_CODES[split], index])


def bbox_xywh(mask: np.ndarray) -> tuple[int, int, int, int]:
    """COCO ``[x, y, w, h]`` of the pixels of ``mask (H, W) bool`` (non-empty)."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def _segments(scene: Scene) -> tuple[Segment, ...]:
    return tuple(Segment(s.segment_id, s.category_id, int(s.mask.sum()), bbox_xywh(s.mask))
                 for s in [*scene.stuff, *scene.things])


def _ref_split(split: str, index: int) -> str:
    # RefCOCO has no "test": its test images are cut into testA and testB.
    return ("testA", "testB")[index % 2] if split == "test" else split


def _refcoco(scene: Scene, image: ImageRecord, split: str, index: int,
             rng: np.random.Generator) -> tuple[list[Instance], list[dict[str, Any]]]:
    """COCO detection annotations of the scene's things and the refs to some of them.

    Ids: ann = image id * 100 + thing number, ref = image id * 10 + k, sent = ref id * 10 + j.
    Each sentence also says what it is (``"type"``: "attributes", "relation" or "extreme") and
    which other objects it names (``"context_ann_ids"``: the annotation id of a relation's anchor,
    ``[]`` for the other types), keys the real RefCOCO files do not have.
    """
    instances = [instance_from_mask(image.id * 100 + j + 1, image.id, t.category_id, t.mask)
                 for j, t in enumerate(scene.things)]
    refs = []
    stem = Path(image.file_name).stem
    for k, (j, typed) in enumerate(make_context_refs(scene, rng)):
        ref_id = image.id * 10 + k
        sentences = [{"raw": raw, "sent": raw.lower(), "tokens": raw.lower().split(),
                      "sent_id": ref_id * 10 + n, "type": kind,
                      "context_ann_ids": [instances[c].id for c in context]}
                     for n, (raw, kind, context) in enumerate(typed)]
        refs.append({"ref_id": ref_id, "ann_id": instances[j].id, "image_id": image.id,
                     "category_id": scene.things[j].category_id, "split": _ref_split(split, index),
                     "file_name": f"{stem}_{ref_id}.png",
                     "sent_ids": [s["sent_id"] for s in sentences], "sentences": sentences})
    return instances, refs


def _write_image(path: Path, image: np.ndarray) -> None:
    # Not flushed to the disk one by one (durable=False): thousands of files that the
    # generator makes again identically.
    with atomic_path(path, durable=False) as tmp:
        # Level 1: the noisy textures compress no better at higher levels, only slower.
        Image.fromarray(image, mode="RGB").save(tmp, format="PNG", compress_level=1)


def write_split(out_dir: str | Path, split: str, count: int, seed: int, image_size: int,
                progress: bool = True, workers: int = 1) -> SplitRecords:
    """Draw and write ``count`` images of ``split`` with their panoptic PNGs and JSON and their
    narratives; return the records, including the split's RefCOCO instances and refs.

    ``workers > 1`` draws the images in that many processes; every image has its own generator,
    so the files are the same for any number of workers.
    """
    out = Path(out_dir)
    records = SplitRecords()
    draw = partial(_write_scene, out, split, seed, image_size)
    with ExitStack() as stack:
        if workers > 1 and count > 1:
            pool = stack.enter_context(get_context("spawn").Pool(workers))
            parts = pool.imap(draw, range(count), chunksize=max(1, min(64, count // (4 * workers))))
        else:
            parts = map(draw, range(count))
        for part in tqdm(parts, total=count, desc=f"generate {split}", unit="img",
                         disable=not progress):
            records.extend(part)
    write_panoptic_json(out / "annotations" / f"panoptic_{split}.json", records.images,
                        records.annotations, CATEGORIES)
    write_narratives(out / "annotations" / f"png_coco_{split}.json", records.narratives)
    return records


def _write_scene(out: Path, split: str, seed: int, image_size: int, index: int) -> SplitRecords:
    """Draw image ``index`` of ``split``, write its image and segment PNG, return its records."""
    rng = scene_rng(seed, split, index)
    scene = make_scene(rng, image_size)
    iid = image_id(split, index)
    image = ImageRecord(iid, f"{iid:012d}.png", image_size, image_size)
    _write_image(out / "images" / split / image.file_name, scene.image)
    ann = PanopticAnnotation(iid, image.file_name, _segments(scene))
    write_segment_png(out / "annotations" / f"panoptic_{split}" / ann.file_name, scene.id_map())
    narrative = make_narrative(scene, iid, rng)
    instances, refs = _refcoco(scene, image, split, index, rng)
    return SplitRecords([image], [ann], [narrative], instances, refs)


def generate_benchmark(out_dir: str | Path, seed: int, sizes: dict[str, int],
                       image_size: int = 128, progress: bool = True, workers: int = 1) -> None:
    """Write the whole benchmark: every split of ``sizes`` (``{"train": n, "val": m, ...}``),
    then the RefCOCO files that cover all of them; ``workers`` processes draw the images."""
    if image_size < 32:
        raise InputError(f"image size must be at least 32 px, got {image_size}")
    if seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed}")
    out = Path(out_dir)
    everything = SplitRecords()  # RefCOCO covers all splits
    for split, count in sizes.items():
        everything.extend(write_split(out, split, count, seed, image_size, progress, workers))
    write_instances(out / "refcoco" / "instances.json", everything.images, everything.instances,
                    [c for c in CATEGORIES if c.isthing])
    write_refs(out / "refcoco" / "refs(unc).p", everything.refs)
