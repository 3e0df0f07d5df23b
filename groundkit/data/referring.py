"""RefCOCO-style referring expressions as training items: one item per sentence.

Images are letterboxed: resized so the long side is ``S`` (``input_size``), pasted at the top-left of
an ``S x S`` canvas, zeros (after normalisation, as :func:`groundkit.data.transforms.pad_batch`)
at the bottom/right. ``scale = S / max(H, W)``: a box in input pixels divided by ``scale`` is the box
in the original image. ``input_size = (round(H * scale), round(W * scale))`` is the valid region.

Training items may be augmented (:class:`ReferringDataConfig`): mirrored (with "left"/"right"
swapped in the expression), rescaled and moved inside the canvas, colour-jittered. The referent is
never cut: the move is clamped so its whole box stays in the canvas. Draws use torch's global RNG,
which the trainer seeds and restores.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from groundkit.data.formats.refcoco import (
    Instances,
    load_instances,
    load_refs,
    referring_samples,
    select_refs,
    sentence_types,
)
from groundkit.data.images import read_record_image
from groundkit.data.synthetic.phrasing import Paraphraser, TemplateParser
from groundkit.data.transforms import image_to_tensor, letterbox_size, masks_to_targets
from groundkit.errors import ConfigError, FormatError, InputError
from groundkit.structures import ReferringSample


@dataclass
class ReferringDataConfig:
    """Where the RefCOCO files and images are, the input size and the training augmentation."""

    root: str = "data/synthetic"
    refs: str = "refcoco/refs(unc).p"          # relative to root (or absolute)
    instances: str = "refcoco/instances.json"  # relative to root (or absolute)
    # Folders (relative to root) searched in order for an image's file_name; real RefCOCO: train2014.
    image_dirs: tuple[str, ...] = ("images/train", "images/val", "images/test")
    train_split: str = "train"
    val_split: str = "val"
    input_size: int = 128         # S: the letterbox canvas is S x S (the paper: 640)
    max_items: int | None = None  # use only the first N sentences (quick runs)
    cache: bool = False           # keep decoded items in memory (small datasets, many epochs)
    # Augmentation of training items (all off by default):
    scale_range: tuple[float, float] = (1.0, 1.0)  # random rescale of the letterboxed content
    translate: float = 0.0        # extra random move, at most this fraction of S along each axis
    color_jitter: float = 0.0     # brightness/contrast/saturation factors in [1 - c, 1 + c]
    hflip: bool = False           # mirror (p = 0.5), swapping "left"/"right" in the expression
    # The chance that a sentence of the synthetic benchmark's templates is said in another phrasing
    # (groundkit.data.synthetic.phrasing); sentences no template writes are kept as they are.
    rephrase: float = 0.0


@dataclass
class _Source:
    """What an image gives every sentence about it: ``image (H, W, 3) uint8``, ``ann_ids`` of its
    objects, ``boxes (G, 4)`` float64 xyxy pixels, ``classes (G,)`` labels, ``masks (G, H, W)`` bool."""

    image: np.ndarray
    ann_ids: list[int]
    boxes: np.ndarray
    classes: torch.Tensor
    masks: np.ndarray


class ReferringDataset(Dataset):
    """The sentences of the refs of one split (refer API split rule), with their images.

    An item (``S = cfg.input_size``): ``image (3, S, S)`` float letterboxed and normalised;
    ``expression`` str; ``box (4,)`` float32 xyxy and ``mask (S, S)`` bool, the referent in input
    pixels; ``boxes (G, 4)`` float32 xyxy, ``classes (G,)`` int64 (index in :meth:`category_ids`)
    and ``masks (G, S/4, S/4)`` float32 covered fraction of each stride-4 cell, of every non-crowd
    object of the image (and the referent, crowd or not), ``category_ids (G,)`` int64 their
    instances.json category ids; ``referent`` its index in ``boxes``;
    ``context_boxes (M, 4)`` float32 xyxy, the contextual objects of the expression
    (:attr:`context_ann_ids`; those the canvas cuts away left out, M may be 0);
    ``ref_id``, ``sent_id``, ``image_id``; ``type`` ("attributes" | "relation" | "extreme", "" when
    the refs do not say); ``orig_size (H, W)``; ``input_size (h, w)``; ``scale``.

    Augmented items (``train`` and an augmentation option on): ``scale`` is the factor applied to
    the image; when it moved, ``input_size`` is how far from the top-left the content reaches
    (some padding may then lie before it) and boxes no longer map back by ``/ scale``.

    ``max_items`` and ``cache`` given here override the config's; ``train`` turns augmentation on.

    ``context_ann_ids``: per sample, the annotation ids of the other objects its expression
    mentions (VL-NMS's positives beside the referent): by default what the refs say
    (:attr:`ReferringSample.context_ann_ids`: the synthetic benchmark's true ones, none for real
    RefCOCO); :meth:`set_context` replaces them (e.g. with the pseudo ground truth of
    :func:`groundkit.data.contextual.samples_contextual_objects`).
    """

    def __init__(self, cfg: ReferringDataConfig, split: str, train: bool = False,
                 max_items: int | None = None, cache: bool | None = None) -> None:
        _check_config(cfg)
        self.cfg = cfg
        self.split = split
        root = Path(cfg.root)
        if not root.is_dir():
            raise InputError(f"{root}: no such data folder (make one with `groundkit generate --out {root}`)")
        self.refs_path = root / cfg.refs
        self.instances: Instances = load_instances(root / cfg.instances)
        refs = [_with_sent(r) for r in select_refs(load_refs(self.refs_path), split, self.refs_path)]
        limit = cfg.max_items if max_items is None else max_items
        self.samples: list[ReferringSample] = referring_samples(refs, self.instances,
                                                                self.refs_path)[:limit]
        types = sentence_types(refs, split, self.refs_path)
        self.types: list[str] = [types.get(s.sent_id, "") for s in self.samples]
        self._category_ids = sorted(self.instances.categories)
        self._label_of = {c: i for i, c in enumerate(self._category_ids)}
        self._category_tensor = torch.tensor(self._category_ids, dtype=torch.long).reshape(-1)
        self._objects = self._objects_by_image()
        for s in self.samples:
            self._check_sample(s)
        self.context_ann_ids: list[tuple[int, ...]] = [tuple(s.context_ann_ids) for s in self.samples]
        self._dirs = [root / d for d in cfg.image_dirs]
        self._folder_of = self._locate({s.image_id for s in self.samples})
        self.augment = train and (cfg.hflip or cfg.color_jitter > 0 or cfg.translate > 0
                                  or cfg.rephrase > 0 or tuple(cfg.scale_range) != (1.0, 1.0))
        self._templates = TemplateParser() if self.augment and cfg.rephrase > 0 else None
        use_cache = cfg.cache if cache is None else cache
        self._items: dict[int, dict[str, Any]] | None = {} if use_cache and not self.augment else None
        self._sources: dict[int, _Source] | None = {} if use_cache and self.augment else None

    def category_ids(self) -> list[int]:
        """The instances.json category ids, sorted: label ``k`` of ``classes`` is id ``[k]``."""
        return list(self._category_ids)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._items is not None and index in self._items:
            return self._items[index]
        item = self._item(index)
        if self._items is not None:
            self._items[index] = item
        return item

    def set_context(self, context_ann_ids: Sequence[Sequence[int]]) -> None:
        """Replace the contextual objects of every sample (one list of annotation ids per sample,
        in :attr:`samples` order); each must be another non-crowd object of the sample's image."""
        if len(context_ann_ids) != len(self.samples):
            raise InputError(f"set_context: {len(context_ann_ids)} lists of contextual objects for "
                             f"{len(self.samples)} samples")
        out = []
        for s, ids in zip(self.samples, context_ann_ids):
            ids = tuple(int(a) for a in ids)
            objects = self._objects.get(s.image_id, [])
            wrong = [a for a in ids if a == s.ann_id or a not in objects]
            if wrong:
                raise InputError(f"set_context: ref {s.ref_id}, sentence {s.sent_id}: {wrong} "
                                 f"is not another non-crowd object of image {s.image_id}")
            out.append(ids)
        self.context_ann_ids = out
        if self._items is not None:
            self._items.clear()  # cached items hold the old context boxes

    def load_image(self, image_id: int) -> np.ndarray:
        """``(H, W, 3) uint8`` image, checked against the size its instances.json record gives."""
        record = self.instances.images[image_id]
        folder = self._folder_of.get(record.file_name)
        if folder is None:
            folder = self._locate({image_id})[record.file_name]
        return read_record_image(folder, record, self.instances.path)

    # --- checks and lookups -----------------------------------------------------------------------

    def _objects_by_image(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for ann in self.instances.annotations.values():
            if not ann.iscrowd:
                out.setdefault(ann.image_id, []).append(ann.id)
        return out

    def _check_sample(self, s: ReferringSample) -> None:
        item = f"ref {s.ref_id}"
        if s.image_id not in self.instances.images:
            raise FormatError(self.refs_path, f"image {s.image_id} is not in {self.instances.path}",
                              item=item, field="image_id")
        ann = self.instances.annotations[s.ann_id]
        if ann.image_id != s.image_id:
            raise FormatError(self.refs_path, f"annotation {s.ann_id} is on image {ann.image_id} in "
                              f"{self.instances.path}, not on image {s.image_id}", item=item,
                              field="image_id")
        if not s.sentence.strip():
            raise FormatError(self.refs_path, "empty expression", item=f"{item}, sentence {s.sent_id}",
                              field="sent")
        for c in s.context_ann_ids:  # the synthetic refs' named objects, on the same image
            other = self.instances.annotations.get(c)
            if other is None or other.image_id != s.image_id or c == s.ann_id:
                raise FormatError(self.refs_path, f"context annotation {c} is not another object of "
                                  f"image {s.image_id} in {self.instances.path}",
                                  item=f"{item}, sentence {s.sent_id}", field="context_ann_ids")

    def _locate(self, image_ids: set[int]) -> dict[str, Path]:
        """The folder of each image's file: the first of ``image_dirs`` that holds it (one
        directory listing per folder, not one file test per image)."""
        listed: dict[str, Path] = {}
        for folder in reversed(self._dirs):  # earlier folders win
            try:
                with os.scandir(folder) as entries:
                    listed.update({e.name: folder for e in entries if e.is_file()})
            except (FileNotFoundError, NotADirectoryError):
                continue
        out = {}
        for image_id in sorted(image_ids):
            record = self.instances.images[image_id]
            folder = listed.get(record.file_name) or _find_nested(self._dirs, record.file_name)
            if folder is None:
                searched = ", ".join(str(d) for d in self._dirs)
                raise FormatError(self.instances.path, f"image file {record.file_name!r} is in none of "
                                  f"the image folders ({searched}); set image_dirs",
                                  item=f"image {image_id}", field="file_name")
            out[record.file_name] = folder
        return out

    # --- items ------------------------------------------------------------------------------------

    def _source(self, image_id: int, referent: int) -> _Source:
        """The image and objects of ``image_id``: its non-crowd objects, then the referent
        annotation ``referent`` when it is a crowd (it is still the one to find)."""
        source = self._sources.get(image_id) if self._sources is not None else None
        if source is None:
            source = self._objects_of(image_id, self._objects.get(image_id, []), self.load_image(image_id))
            if self._sources is not None:
                self._sources[image_id] = source
        if referent not in source.ann_ids:
            crowd = self._objects_of(image_id, [referent], source.image)
            source = _Source(source.image, source.ann_ids + crowd.ann_ids,
                             np.concatenate([source.boxes, crowd.boxes]),
                             torch.cat([source.classes, crowd.classes]),
                             np.concatenate([source.masks, crowd.masks]))
        return source

    def _objects_of(self, image_id: int, ann_ids: list[int], image: np.ndarray) -> _Source:
        record = self.instances.images[image_id]
        anns = [self.instances.annotations[a] for a in ann_ids]
        masks = [self.instances.mask(a) for a in ann_ids]
        return _Source(image, list(ann_ids),
                       np.array([self.instances.box(a) for a in ann_ids], dtype=np.float64).reshape(-1, 4),
                       torch.tensor([self._label_of[a.category_id] for a in anns], dtype=torch.long),
                       np.stack(masks) if masks else np.zeros((0, record.height, record.width), bool))

    def _item(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        source = self._source(sample.image_id, sample.ann_id)
        referent = source.ann_ids.index(sample.ann_id)
        image, boxes, masks = source.image, source.boxes, source.masks
        expression = sample.sentence
        flip = self.augment and self.cfg.hflip and bool(torch.rand(()) < 0.5)
        if flip:
            w = image.shape[1]
            image, masks = image[:, ::-1], masks[..., ::-1]
            boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1)
            expression = swap_left_right(expression)
        if self._templates is not None and bool(torch.rand(()) < self.cfg.rephrase):
            expression = self._rephrase(expression)
        scale, size, offset = self._placement(image.shape[:2], boxes[referent])
        if self.augment and self.cfg.color_jitter > 0:
            image = color_jitter(image, self.cfg.color_jitter)
        S = self.cfg.input_size
        canvas = paste(image_to_tensor(image, size), offset, S)
        coverage = paste(masks_to_targets(masks, size), offset, S)  # (G, S, S) covered fraction
        boxes_t, keep = place_boxes(boxes, scale, size, offset, S)
        context = [i for i, a in enumerate(source.ann_ids)
                   if a in self.context_ann_ids[index] and keep[i]]
        keep[referent] = True
        kept = torch.nonzero(keep)[:, 0]
        return {
            "image": canvas,
            "expression": expression,
            "box": boxes_t[referent],
            "mask": coverage[referent] >= 0.5,
            "boxes": boxes_t[kept],
            "classes": source.classes[kept],
            "category_ids": self._category_tensor[source.classes[kept]],
            "masks": F.avg_pool2d(coverage[kept][None], 4)[0],  # (G, S/4, S/4) cell coverage
            "referent": int((kept == referent).nonzero()[0, 0]),
            "context_boxes": boxes_t[context].reshape(-1, 4),
            "ref_id": sample.ref_id, "sent_id": sample.sent_id, "image_id": sample.image_id,
            "type": self.types[index],
            "orig_size": tuple(image.shape[:2]),
            "input_size": (min(S, offset[0] + size[0]), min(S, offset[1] + size[1])),
            "scale": scale,
        }

    def _rephrase(self, expression: str) -> str:
        """``expression`` in another phrasing when a synthetic template wrote it, else itself."""
        parsed = self._templates.parse(expression)
        if parsed is None:
            return expression
        # numpy's generator seeded from torch's: DataLoader workers seed torch, not numpy.
        return Paraphraser(np.random.default_rng(int(torch.randint(2**62, ())))).sentence(parsed)

    def _placement(self, shape: tuple[int, int], referent: np.ndarray
                   ) -> tuple[float, tuple[int, int], tuple[int, int]]:
        """``(scale, content size (h, w), offset (dy, dx))`` of the image in the canvas: the
        letterbox, or with training augmentation a random rescale and move that keeps the
        referent box ``(4,)`` xyxy (original pixels) whole inside the canvas."""
        cfg, S = self.cfg, self.cfg.input_size
        scale, size = letterbox_size(*shape, S)
        rescale = self.augment and tuple(cfg.scale_range) != (1.0, 1.0)
        moves = rescale or (self.augment and cfg.translate > 0)
        if rescale:
            lo, hi = cfg.scale_range
            r = lo + (hi - lo) * float(torch.rand(()))
            longest = max(referent[2] - referent[0], referent[3] - referent[1], 1e-6) * scale
            if r > 1:  # the referent must fit in the canvas (a pixel to spare for rounding)
                r = min(r, max(1.0, (S - 1) / longest))
            scale *= r
            size = (max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale)))
        if not moves:
            return scale, size, (0, 0)
        offset = []
        for axis, c in enumerate(size):
            o = _randint(*sorted((0, S - c))) if rescale else 0  # inside the canvas, or a crop
            if cfg.translate > 0:
                t = cfg.translate * S
                o += round(t * (2 * float(torch.rand(())) - 1))
            lo_ref = math.ceil(-referent[1 - axis] * scale)          # referent's near edge >= 0
            hi_ref = math.floor(S - referent[3 - axis] * scale)      # referent's far edge <= S
            offset.append(min(max(o, lo_ref), max(lo_ref, hi_ref)))
        return scale, size, (offset[0], offset[1])


def _check_config(cfg: ReferringDataConfig) -> None:
    if cfg.input_size < 4 or cfg.input_size % 4:
        raise ConfigError(f"input_size: expected a positive multiple of 4, got {cfg.input_size}")
    lo, hi = cfg.scale_range
    if not 0 < lo <= hi:
        raise ConfigError(f"scale_range: expected 0 < low <= high, got {tuple(cfg.scale_range)}")
    if not 0 <= cfg.translate < 1:
        raise ConfigError(f"translate: expected a fraction of the input size in [0, 1), got {cfg.translate}")
    if not 0 <= cfg.color_jitter < 1:
        raise ConfigError(f"color_jitter: expected a strength in [0, 1), got {cfg.color_jitter}")
    if not 0 <= cfg.rephrase <= 1:
        raise ConfigError(f"rephrase: expected a probability in [0, 1], got {cfg.rephrase}")


def _with_sent(ref: dict[str, Any]) -> dict[str, Any]:
    """``ref`` with the raw text standing in for each sentence's missing "sent"."""
    sentences = ref.get("sentences")
    if not isinstance(sentences, list):
        return ref
    return {**ref, "sentences": [{**s, "sent": s["raw"]}
                                 if isinstance(s, dict) and "sent" not in s and "raw" in s else s
                                 for s in sentences]}


def _find_nested(dirs: list[Path], file_name: str) -> Path | None:
    """The first folder holding ``file_name`` when it names a sub-folder ("a/b.jpg")."""
    if "/" not in file_name:
        return None
    return next((d for d in dirs if (d / file_name).is_file()), None)


def _randint(lo: int, hi: int) -> int:
    """Uniform integer in ``[lo, hi]`` from torch's global RNG."""
    return lo + int(torch.randint(hi - lo + 1, ())) if hi > lo else lo


# --- transforms -----------------------------------------------------------------------------------

def paste(x: torch.Tensor, offset: tuple[int, int], size: int) -> torch.Tensor:
    """``(C, h, w)`` -> ``(C, size, size)``: ``x`` with its top-left at ``offset (dy, dx)`` (may be
    negative), cut to the canvas, zeros elsewhere."""
    out = x.new_zeros((x.shape[0], size, size))
    dy, dx = offset
    y0, x0 = max(dy, 0), max(dx, 0)
    y1, x1 = min(dy + x.shape[-2], size), min(dx + x.shape[-1], size)
    if y1 > y0 and x1 > x0:
        out[:, y0:y1, x0:x1] = x[:, y0 - dy:y1 - dy, x0 - dx:x1 - dx]
    return out


def place_boxes(boxes: np.ndarray, scale: float, size: tuple[int, int], offset: tuple[int, int],
                canvas: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``boxes (G, 4)`` xyxy original pixels -> ``(G, 4) float32`` input pixels, cut to the part
    of the canvas the content covers, and ``(G,) bool``: whether anything of the box is left."""
    dy, dx = offset
    b = torch.from_numpy(np.asarray(boxes, dtype=np.float64)).reshape(-1, 4) * scale
    b = b + torch.tensor([dx, dy, dx, dy], dtype=torch.float64)
    low = torch.tensor([max(dx, 0), max(dy, 0)] * 2, dtype=torch.float64)
    high = torch.tensor([min(dx + size[1], canvas), min(dy + size[0], canvas)] * 2, dtype=torch.float64)
    b = torch.maximum(torch.minimum(b, high), low).float()
    return b, (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])


def color_jitter(image: np.ndarray, strength: float) -> np.ndarray:
    """``(H, W, 3) uint8`` with brightness, contrast and saturation each scaled by a random factor
    in ``[1 - strength, 1 + strength]`` (torch's global RNG), as torchvision's ColorJitter."""
    brightness, contrast, saturation = (1 + strength * (2 * torch.rand(3) - 1)).tolist()
    x = torch.from_numpy(np.ascontiguousarray(image)).float() / 255 * brightness
    gray = (x * torch.tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True)
    x = (x - gray.mean()) * contrast + gray.mean()
    gray = (x * torch.tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True)
    x = (x - gray) * saturation + gray
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


_LEFT_RIGHT = re.compile(r"\b(left|right)(most)?\b", re.IGNORECASE)


def swap_left_right(text: str) -> str:
    """The expression of the mirrored image: "left" <-> "right", "leftmost" <-> "rightmost"
    (whole words only, case kept: "Left" -> "Right", "LEFT" -> "RIGHT")."""
    def swap(m: re.Match) -> str:
        word = m.group(0)
        new = ("right" if m.group(1).lower() == "left" else "left") + (m.group(2) or "").lower()
        if word.isupper():
            return new.upper()
        return new[0].upper() + new[1:] if word[0].isupper() else new
    return _LEFT_RIGHT.sub(swap, text)


def collate_referring(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack letterboxed items (all ``S x S``) into the batch of the referring models.

    ``images (B, 3, S, S)``, ``box (B, 4)``, ``mask (B, S, S)`` bool; lists: ``boxes``,
    ``classes``, ``masks``, ``context_boxes``, ``expressions``, ``referent``, ``ref_ids``, ``sent_ids``,
    ``image_ids``, ``types``, ``image_sizes``, ``orig_sizes``, ``scales``.
    """
    return {
        "images": torch.stack([it["image"] for it in items]),
        "box": torch.stack([it["box"] for it in items]),
        "mask": torch.stack([it["mask"] for it in items]),
        "boxes": [it["boxes"] for it in items],
        "classes": [it["classes"] for it in items],
        "category_ids": [it["category_ids"] for it in items],
        "masks": [it["masks"] for it in items],
        "context_boxes": [it["context_boxes"] for it in items],
        "expressions": [it["expression"] for it in items],
        "referent": [it["referent"] for it in items],
        "ref_ids": [it["ref_id"] for it in items],
        "sent_ids": [it["sent_id"] for it in items],
        "image_ids": [it["image_id"] for it in items],
        "types": [it["type"] for it in items],
        "image_sizes": [it["input_size"] for it in items],
        "orig_sizes": [it["orig_size"] for it in items],
        "scales": [it["scale"] for it in items],
    }
