"""A COCO panoptic split as training items for panoptic segmentation models.

Labels are contiguous: things ``0..T-1`` in the order of ``thing_ids``, then stuff ``T..T+S-1`` in
the order of ``stuff_ids`` (by default both sorted by category id, from the split's JSON); 255 marks
void and padding. Crowd segments are not instances: their pixels keep their class in the semantic
map, so the semantic loss sees them and the panoptic loss ignores them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from groundkit.data.formats import load_panoptic
from groundkit.data.images import read_record_image
from groundkit.data.layout import SplitPaths
from groundkit.data.transforms import ResizeConfig, image_to_tensor, pad_batch, pad_maps, target_size
from groundkit.errors import FormatError
from groundkit.labels import IGNORE_LABEL
from groundkit.ops.boxes import masks_to_boxes
from groundkit.structures import Category


@dataclass
class PanopticDataConfig:
    """Where the data is and how images are sized and augmented."""

    root: str = "data/synthetic"
    train_split: str = "train"
    val_split: str = "val"
    resize: ResizeConfig = field(default_factory=ResizeConfig)
    flip: bool = True             # random horizontal flip of training items (p = 0.5)
    cache: bool = False           # keep decoded items in memory (small datasets, many epochs)
    max_items: int | None = None  # use only the first N images (quick runs)


def category_order(categories: Iterable[Category]) -> tuple[list[int], list[int]]:
    """The default label order: thing category ids sorted, then stuff category ids sorted."""
    categories = list(categories)
    return (sorted(c.id for c in categories if c.isthing),
            sorted(c.id for c in categories if not c.isthing))


class PanopticSegDataset(Dataset):
    """Images of one split with their panoptic ground truth.

    An item: ``image (3, h, w)`` normalised; ``semantic (h, w)`` int64 labels (255 void);
    ``boxes (G, 4)`` xyxy pixels, ``classes (G,)`` thing labels and ``masks (G, h, w)`` bool of the
    non-crowd thing segments; ``image_id``; ``orig_size (H, W)``; ``input_size (h, w)``.
    """

    def __init__(self, root: str | Path, split: str, resize: ResizeConfig | None = None,
                 flip: bool = False, cache: bool = False, max_items: int | None = None,
                 thing_ids: Sequence[int] | None = None,
                 stuff_ids: Sequence[int] | None = None) -> None:
        self.paths = SplitPaths.from_root(root, split).require("images", "panoptic_json",
                                                                "panoptic_dir")
        self.panoptic = load_panoptic(self.paths.panoptic_json, self.paths.panoptic_dir)
        self.resize = resize or ResizeConfig()
        self.flip = flip
        default_things, default_stuff = category_order(self.panoptic.categories.values())
        self.thing_ids = tuple(default_things if thing_ids is None else thing_ids)
        self.stuff_ids = tuple(default_stuff if stuff_ids is None else stuff_ids)
        self.label_of = {cid: i for i, cid in enumerate(self.thing_ids + self.stuff_ids)}
        self._check_categories()
        self.image_ids = sorted(self.panoptic.annotations)[:max_items]
        self._cache: dict[int, dict[str, Any]] | None = {} if cache else None

    def _check_categories(self) -> None:
        for c in self.panoptic.categories.values():
            expected = self.thing_ids if c.isthing else self.stuff_ids
            if c.id not in expected:
                kind = "thing" if c.isthing else "stuff"
                raise FormatError(self.paths.panoptic_json, f"{kind} category {c.id} ({c.name!r}) is "
                                  f"not among the model's {kind}_ids {list(expected)}",
                                  item=f"category {c.id}", field="isthing")

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self._cache.get(index) if self._cache is not None else None
        if item is None:
            item = self._load(self.image_ids[index])
            if self._cache is not None:
                self._cache[index] = item
        if self.flip and torch.rand(()) < 0.5:  # global RNG: the trainer seeds and restores it
            item = hflip_item(item)
        return item

    def load_image(self, image_id: int) -> np.ndarray:
        """``(H, W, 3) uint8`` image, checked against its panoptic record."""
        return read_record_image(self.paths.images, self.panoptic.images[image_id],
                                 self.paths.panoptic_json)

    def _load(self, image_id: int) -> dict[str, Any]:
        record = self.panoptic.images[image_id]
        image = self.load_image(image_id)
        size = target_size(*image.shape[:2], self.resize)
        ids = torch.from_numpy(self.panoptic.id_map(image_id))
        if tuple(ids.shape) != size:
            ids = F.interpolate(ids[None, None].double(), size=size, mode="nearest")[0, 0].long()
        semantic, classes, masks = self._targets(image_id, ids)
        return {"image": image_to_tensor(image, size), "semantic": semantic,
                "boxes": masks_to_boxes(masks), "classes": classes, "masks": masks,
                "image_id": image_id, "orig_size": (record.height, record.width), "input_size": size}

    def _targets(self, image_id: int, ids: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        semantic = torch.full(ids.shape, IGNORE_LABEL, dtype=torch.long)
        classes, masks = [], []
        for seg in self.panoptic.annotation(image_id).segments:
            mask = ids == seg.id
            label = self.label_of[seg.category_id]
            semantic[mask] = label
            if label < len(self.thing_ids) and not seg.iscrowd and mask.any():
                classes.append(label)
                masks.append(mask)
        masks_t = torch.stack(masks) if masks else torch.zeros((0, *ids.shape), dtype=torch.bool)
        return semantic, torch.tensor(classes, dtype=torch.long), masks_t


def hflip_item(item: dict[str, Any]) -> dict[str, Any]:
    """The item mirrored left-right (image, maps, masks and boxes)."""
    w = item["image"].shape[-1]
    boxes = item["boxes"].clone()
    boxes[:, [0, 2]] = w - item["boxes"][:, [2, 0]]
    return {**item, "image": item["image"].flip(-1), "semantic": item["semantic"].flip(-1),
            "masks": item["masks"].flip(-1), "boxes": boxes}


def collate_panoptic(items: list[dict[str, Any]], divisor: int = 32) -> dict[str, Any]:
    """Pad images and maps to a common size (multiple of ``divisor``); the batch contract of
    :mod:`groundkit.models.panoptic.model`."""
    images = pad_batch([it["image"] for it in items], divisor)
    size = tuple(images.shape[-2:])
    semantic = torch.stack([pad_maps(it["semantic"], size, IGNORE_LABEL) for it in items])
    return {
        "images": images,
        "image_sizes": [it["input_size"] for it in items],
        "orig_sizes": [it["orig_size"] for it in items],
        "image_ids": [it["image_id"] for it in items],
        "semantic": semantic,
        "boxes": [it["boxes"] for it in items],
        "classes": [it["classes"] for it in items],
        "masks": [pad_maps(it["masks"], size) for it in items],
    }
