"""Statistics of a benchmark folder laid out as ``groundkit generate`` writes it, read back through
the format readers (so they also check that the files load).

Folder layout: ``images/<split>/``, ``annotations/panoptic_<split>.json`` + ``panoptic_<split>/``,
``annotations/png_coco_<split>.json`` and, optionally, ``refcoco/refs(unc).p``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from groundkit.data.formats import load_narratives, load_panoptic, load_refs, select_refs
from groundkit.data.formats.coco_panoptic import PanopticDataset
from groundkit.data.images import read_image
from groundkit.data.synthetic.scene import COLOURS
from groundkit.errors import InputError
from groundkit.ops.masks import erode
from groundkit.structures import Narrative

# Row names and whether the value is a share (printed as a percentage).
ROWS: dict[str, bool] = {
    "images": False, "narratives": False, "noun phrases / narrative": False,
    "grounded phrases / narrative": False, "grounded share of noun phrases": True,
    "plural share of grounded (>1 segment)": True, "thing share of grounded": True,
    "stuff share of grounded": True, "thing instances / image": False,
    "stuff segments / image": False, "distractor share of images": True, "refs / image": False,
    "sentences / ref": False,
}
_PALETTE = np.array(list(COLOURS.values()), dtype=np.float64)


def find_splits(root: str | Path) -> list[str]:
    """The splits that have a narratives file under ``root/annotations``, sorted."""
    files = sorted((Path(root) / "annotations").glob("png_coco_*.json"))
    if not files:
        raise InputError(f"{root}: no annotations/png_coco_<split>.json file; is this a folder "
                         f"written by `groundkit generate`?")
    splits = [f.name[len("png_coco_"):-len(".json")] for f in files]
    order = {"train": 0, "val": 1, "test": 2}
    return sorted(splits, key=lambda s: (order.get(s, 3), s))


def split_stats(root: str | Path, split: str) -> dict[str, float]:
    """The statistics of ``ROWS`` for one split of the benchmark under ``root``."""
    root = Path(root)
    ann = root / "annotations"
    panoptic = load_panoptic(ann / f"panoptic_{split}.json", ann / f"panoptic_{split}")
    narratives = load_narratives(ann / f"png_coco_{split}.json")
    out = {"images": float(len(panoptic.images)), "narratives": float(len(narratives))}
    out.update(_phrase_stats(narratives, panoptic))
    out.update(_image_stats(panoptic, root / "images" / split))
    refs_path = root / "refcoco" / "refs(unc).p"
    refs = select_refs(load_refs(refs_path), "test" if split == "test" else split, refs_path) \
        if refs_path.exists() else []
    out["refs / image"] = len(refs) / max(1, len(panoptic.images))
    out["sentences / ref"] = sum(len(r.get("sentences", ())) for r in refs) / max(1, len(refs))
    return out


def _phrase_stats(narratives: list[Narrative], panoptic: PanopticDataset) -> dict[str, float]:
    nouns = grounded = plural = stuff = 0
    for n in narratives:
        ann = panoptic.annotation(n.image_id)
        for u in n.utterances:
            nouns += u.noun
            if not u.grounded:
                continue
            grounded += 1
            plural += len(u.segment_ids) > 1
            kinds = {panoptic.categories[ann.segment(s).category_id].isthing
                     for s in u.segment_ids if ann.segment(s) is not None}
            stuff += kinds == {False}
    n, g = max(1, len(narratives)), max(1, grounded)
    return {"noun phrases / narrative": nouns / n, "grounded phrases / narrative": grounded / n,
            "grounded share of noun phrases": grounded / max(1, nouns),
            "plural share of grounded (>1 segment)": plural / g,
            "thing share of grounded": (grounded - stuff) / g, "stuff share of grounded": stuff / g}


def _image_stats(panoptic: PanopticDataset, image_dir: Path) -> dict[str, float]:
    things = stuff = distractors = 0
    for image_id, image in panoptic.images.items():
        ann = panoptic.annotation(image_id)
        thing_segments = [s for s in ann.segments if panoptic.categories[s.category_id].isthing]
        things += len(thing_segments)
        stuff += len(ann.segments) - len(thing_segments)
        if len(thing_segments) >= 3:  # two kinds of distractor need three things at least
            ids = panoptic.id_map(image_id)
            pixels = read_image(image_dir / image.file_name)
            pairs = [(s.category_id, colour_name(pixels, ids == s.id)) for s in thing_segments]
            distractors += has_distractors(pairs)
    n = max(1, len(panoptic.images))
    return {"thing instances / image": things / n, "stuff segments / image": stuff / n,
            "distractor share of images": distractors / n}


def has_distractors(things: list[tuple[int, str]]) -> bool:
    """Whether ``(category, colour)`` pairs hold the same shape in two colours and the same colour
    on two shapes."""
    same_shape = any(a[0] == b[0] and a[1] != b[1] for a in things for b in things)
    same_colour = any(a[1] == b[1] and a[0] != b[0] for a in things for b in things)
    return same_shape and same_colour


def colour_name(image: np.ndarray, mask: np.ndarray) -> str:
    """Nearest named colour to the median of ``image (H, W, 3)`` inside ``mask (H, W) bool``,
    leaving out the mask's border, where the generator draws a darker outline."""
    inner = erode(mask)
    pixels = image[inner if inner.any() else mask].astype(np.float64)
    median = np.median(pixels, axis=0)
    return list(COLOURS)[int(np.argmin(((_PALETTE - median) ** 2).sum(axis=1)))]


def format_table(stats: dict[str, dict[str, float]]) -> str:
    """One column per split, one row per statistic; shares as percentages."""
    splits = list(stats)
    lines = [f"{'':40s}" + "".join(f"{s:>10s}" for s in splits)]
    for row, is_share in ROWS.items():
        cells = [stats[s].get(row, float("nan")) for s in splits]
        text = [f"{100 * v:9.1f}%" if is_share else
                (f"{v:10.0f}" if row in ("images", "narratives") else f"{v:10.2f}") for v in cells]
        lines.append(f"{row:40s}" + "".join(text))
    return "\n".join(lines)
