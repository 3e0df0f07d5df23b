"""RefCOCO / RefCOCO+ / RefCOCOg: ``refs(<splitBy>).p`` pickles + a COCO detection ``instances.json``.

Every sentence of a ref is one evaluation sample (:class:`groundkit.structures.ReferringSample`).

Security: a plain ``pickle.load`` runs code named in the file. :func:`load_refs` reads refs through
a restricted unpickler (:func:`groundkit._pickle.safe_load_pickle`) that refuses every global, so only
plain data (lists, dicts, strings, numbers) loads and a hostile file is a FormatError that runs
nothing. It still only opens a local file the user points at (never a URL, never a path found
inside another file).
"""
from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from pycocotools import mask as coco_mask

from groundkit._io import atomic_path, write_json
from groundkit._pickle import safe_load_pickle
from groundkit.data.formats._fields import (
    _short,
    by_id,
    get,
    get_box,
    get_int,
    get_list,
    get_number,
    image_size,
    read_json,
)
from groundkit.errors import FormatError, InputError
from groundkit.ops.masks import encode_rle, segmentation_to_mask
from groundkit.structures import Category, ImageRecord, ReferringSample

# The splits the reference `refer` API knows; see `select_refs` for how each one matches.
SPLITS = ("train", "val", "test", "testA", "testB", "testC", "testAB", "testBC", "testAC")


@dataclass(frozen=True)
class Instance:
    """One COCO detection annotation; ``bbox`` is COCO ``[x, y, w, h]``; ``segmentation`` is
    polygons, an RLE dict or None."""

    id: int
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]
    area: float = 0.0
    iscrowd: bool = False
    segmentation: Any = None


# --- refs pickle ----------------------------------------------------------------------------------

def load_refs(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``refs(<splitBy>).p`` pickle (written by Python 2, hence ``encoding="latin1"``).

    The file is read by a restricted unpickler that admits no global at all: refs are lists,
    dicts, strings and numbers, and anything else (e.g. a ``__reduce__`` payload) is a
    FormatError before it can run.
    """
    path = Path(path)
    refs = safe_load_pickle(path, what="refs pickle", encoding="latin1")
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise FormatError(path, "expected a list of ref dicts")
    return refs


def write_refs(path: str | Path, refs: list[dict[str, Any]]) -> None:
    """Write ``refs`` as a ``refs(<splitBy>).p`` pickle, atomically.

    Protocol 2 is the newest one Python 2 reads, as the original refs files were written by it.
    Pickle writes an object shared by several refs once; the JSON round trip first makes the
    bytes depend on the values alone, not on which objects happened to be shared (refs drawn in
    several processes share none).
    """
    canonical = json.loads(json.dumps(list(refs)))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump(canonical, f, protocol=2)


def select_refs(refs: Iterable[dict[str, Any]], split: str,
                file: str | Path | None = None) -> list[dict[str, Any]]:
    """The refs of ``split``, matched as the reference ``refer`` API does.

    ``testA``/``testB``/``testC`` match any split holding that last letter (so ``testA`` also takes
    ``testAB``); ``test`` matches any split containing "test"; the others match exactly.
    """
    if split not in SPLITS:
        raise InputError(f"unknown RefCOCO split {split!r}; expected one of {', '.join(SPLITS)}")
    return [r for r in refs if _split_matches(_ref_split(r, file), split)]


def _split_matches(ref_split: str, split: str) -> bool:
    if split in ("testA", "testB", "testC"):
        return split[-1] in ref_split
    if split == "test":
        return "test" in ref_split
    return ref_split == split


def _ref_split(ref: dict[str, Any], file: str | Path | None) -> str:
    return get(ref, "split", "str", file, _ref_item(ref))


def _ref_item(ref: dict[str, Any]) -> str:
    """The item of a ref in errors, "ref 7", before its id is checked (a pickle's int may be too
    long to print)."""
    ref_id = ref.get("ref_id", "?")
    return f"ref {ref_id if isinstance(ref_id, str) else _short(ref_id)}"


# --- instances.json -------------------------------------------------------------------------------

class Instances:
    """A COCO detection JSON: ``images``, ``annotations`` (:class:`Instance`) and ``categories``,
    each a dict keyed by id; boxes and masks come out on demand."""

    def __init__(self, path: Path, images: dict[int, ImageRecord],
                 annotations: dict[int, Instance], categories: dict[int, Category]) -> None:
        self.path = path
        self.images = images
        self.annotations = annotations
        self.categories = categories

    def instance(self, ann_id: int) -> Instance:
        """The annotation ``ann_id``; FormatError when the JSON has none."""
        ann = self.annotations.get(ann_id)
        if ann is None:
            raise FormatError(self.path, f"no annotation with id {ann_id}")
        return ann

    def box(self, ann_id: int) -> np.ndarray:
        """``(4,) float64`` xyxy pixel box of annotation ``ann_id``."""
        x, y, w, h = self.instance(ann_id).bbox
        return np.array([x, y, x + w, y + h], dtype=np.float64)

    def mask(self, ann_id: int) -> np.ndarray:
        """``(H, W) bool`` mask of annotation ``ann_id`` at its image's size."""
        ann = self.instance(ann_id)
        item = f"annotation {ann_id}"
        if ann.segmentation is None:
            raise FormatError(self.path, "missing", item=item, field="segmentation")
        image = self.images[ann.image_id]
        try:
            return segmentation_to_mask(ann.segmentation, image.height, image.width)
        except (InputError, TypeError, ValueError) as e:  # malformed polygons or RLE
            raise FormatError(self.path, str(e), item=item, field="segmentation") from None

    def gt_box(self, sample: ReferringSample) -> np.ndarray:
        """``(4,)`` xyxy ground-truth box of a referring sample."""
        return self.box(sample.ann_id)

    def gt_mask(self, sample: ReferringSample) -> np.ndarray:
        """``(H, W) bool`` ground-truth mask of a referring sample."""
        return self.mask(sample.ann_id)


def load_instances(path: str | Path) -> Instances:
    """Read a COCO detection JSON (``instances.json``); masks are decoded on demand."""
    path = Path(path)
    data = read_json(path)
    images = by_id((_image(x, path, i) for i, x in enumerate(_top(data, "images", path))),
                   path, "image")
    categories = by_id((_category(x, path, i) for i, x in enumerate(_top(data, "categories", path))),
                       path, "category")
    annotations = by_id((_instance(x, path, i, images, categories)
                         for i, x in enumerate(_top(data, "annotations", path))), path, "annotation")
    return Instances(path, images, annotations, categories)


def _top(data: Any, key: str, file: Path) -> list[Any]:
    return get(data, key, "list", file, "top level")


def _image(x: Any, file: Path, index: int) -> ImageRecord:
    item = f"image {index}"
    image_id = get_int(x, "id", file, item)
    height, width = image_size(x, file, item)
    return ImageRecord(id=image_id, file_name=get(x, "file_name", "str", file, item),
                       height=height, width=width)


def _category(x: Any, file: Path, index: int) -> Category:
    item = f"category {index}"
    return Category(id=get_int(x, "id", file, item), name=get(x, "name", "str", file, item),
                    isthing=True, supercategory=get(x, "supercategory", "str", file, item, default=""))


def _instance(x: Any, file: Path, index: int, images: dict[int, ImageRecord],
              categories: dict[int, Category]) -> Instance:
    item = f"annotation {index}"
    ann_id = get_int(x, "id", file, item)
    item = f"annotation {index} (id {ann_id})"
    image_id = get_int(x, "image_id", file, item)
    category_id = get_int(x, "category_id", file, item)
    if image_id not in images:
        raise FormatError(file, f"expected an id listed in 'images', got {image_id}", item=item,
                          field="image_id")
    if category_id not in categories:
        raise FormatError(file, f"expected an id listed in 'categories', got {category_id}",
                          item=item, field="category_id")
    return Instance(id=ann_id, image_id=image_id, category_id=category_id,
                    bbox=get_box(x, "bbox", file, item),
                    area=get_number(x, "area", file, item, low=0, default=0),
                    iscrowd=bool(get(x, "iscrowd", "flag", file, item, default=0)),
                    segmentation=x.get("segmentation"))


def instance_from_mask(ann_id: int, image_id: int, category_id: int, mask: np.ndarray) -> Instance:
    """An :class:`Instance` whose RLE segmentation, area and box come from ``mask (H, W) bool``."""
    rle = encode_rle(mask)
    compressed = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    bbox = tuple(float(v) for v in coco_mask.toBbox(compressed))
    return Instance(id=ann_id, image_id=image_id, category_id=category_id, bbox=bbox,
                    area=int(coco_mask.area(compressed)), segmentation=rle)


def write_instances(path: str | Path, images: Iterable[ImageRecord],
                    annotations: Iterable[Instance], categories: Iterable[Category]) -> None:
    """Write a COCO detection JSON, atomically."""
    write_json(path, {
        "images": [{"id": i.id, "file_name": i.file_name, "height": i.height, "width": i.width}
                   for i in images],
        "annotations": [_instance_json(a) for a in annotations],
        "categories": [{"id": c.id, "name": c.name, "supercategory": c.supercategory}
                       for c in categories]})


def _instance_json(a: Instance) -> dict[str, Any]:
    out = {"id": a.id, "image_id": a.image_id, "category_id": a.category_id, "bbox": list(a.bbox),
           "area": a.area, "iscrowd": int(a.iscrowd)}
    if a.segmentation is not None:
        out["segmentation"] = a.segmentation
    return out


# --- samples --------------------------------------------------------------------------------------

def load_referring(refs_path: str | Path, instances_path: str | Path,
                   split: str) -> tuple[list[ReferringSample], Instances]:
    """One :class:`ReferringSample` per sentence of the refs of ``split``, with their instances."""
    instances = load_instances(instances_path)
    refs = select_refs(load_refs(refs_path), split, refs_path)
    return referring_samples(refs, instances, refs_path), instances


def referring_samples(refs: Iterable[dict[str, Any]], instances: Instances,
                      file: str | Path | None = None) -> list[ReferringSample]:
    """One :class:`ReferringSample` per sentence of ``refs``, in order; ``file`` names the refs
    file in errors (a ref whose annotation is not in ``instances`` is one)."""
    return [s for r in refs for s in _samples(r, file, instances)]


def sentence_types(refs: Iterable[dict[str, Any]], split: str,
                   file: str | Path | None = None) -> dict[int, str]:
    """``{sent_id: type}`` for every sentence of the refs of ``split``: the sentence's ``"type"``
    ("attributes", "relation", "extreme" on the synthetic benchmark), or "" when it has none (the
    real RefCOCO files have none)."""
    out = {}
    for ref in select_refs(refs, split, file):
        item = _ref_item(ref)
        for j, sentence in enumerate(get(ref, "sentences", "list", file, item)):
            where = f"{item}, sentence {j}"
            out[get_int(sentence, "sent_id", file, where)] = get(sentence, "type", "str", file,
                                                                  where, default="")
    return out


def _samples(ref: dict[str, Any], file: str | Path | None,
             instances: Instances) -> list[ReferringSample]:
    ref_id = get_int(ref, "ref_id", file, "ref")
    item = f"ref {ref_id}"
    ann_id = get_int(ref, "ann_id", file, item)
    if ann_id not in instances.annotations:
        raise FormatError(file, f"annotation {ann_id} is not in {instances.path}", item=item,
                          field="ann_id")
    image_id = get_int(ref, "image_id", file, item)
    image = instances.images.get(image_id)
    common = dict(ref_id=ref_id, ann_id=ann_id, image_id=image_id,
                  category_id=get_int(ref, "category_id", file, item),
                  split=get(ref, "split", "str", file, item),
                  file_name=image.file_name if image else get(ref, "file_name", "str", file, item))
    return [_sample(s, common, file, f"{item}, sentence {j}")
            for j, s in enumerate(get(ref, "sentences", "list", file, item))]


def _sample(sentence: Any, common: dict[str, Any], file: str | Path | None,
            item: str) -> ReferringSample:
    return ReferringSample(sent_id=get_int(sentence, "sent_id", file, item),
                           sentence=get(sentence, "sent", "str", file, item),
                           tokens=tuple(get_list(sentence, "tokens", "str", file, item, default=())),
                           context_ann_ids=tuple(get_list(sentence, "context_ann_ids", "int", file,
                                                          item, default=())),
                           **common)
