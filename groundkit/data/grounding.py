"""The panoptic narrative grounding dataset: one item per narrative with grounded phrases."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from groundkit.data.formats import check_narratives, load_narratives, load_panoptic
from groundkit.data.images import read_record_image
from groundkit.data.layout import SplitPaths
from groundkit.data.panoptic_dataset import category_order
from groundkit.data.transforms import (
    ResizeConfig,
    image_to_tensor,
    masks_to_targets,
    pad_batch,
    pad_maps,
    target_size,
)
from groundkit.labels import IGNORE_LABEL
from groundkit.structures import Narrative


@dataclass
class GroundingDataConfig:
    """Where the data is and how images are sized."""

    root: str = "data/synthetic"
    train_split: str = "train"
    val_split: str = "val"
    resize: ResizeConfig = field(default_factory=ResizeConfig)
    cache: bool = False          # keep decoded items in memory (small datasets, many epochs)
    max_items: int | None = None  # use only the first N narratives (quick runs)


class GroundingDataset(Dataset):
    """Narratives of one split with their images and ground-truth phrase masks.

    An item: ``image (3, h, w)`` normalised; ``caption``; ``spans`` of the grounded phrases;
    ``masks (P, ceil(h/4), ceil(w/4))`` float, each phrase's union of segments at stride 4;
    ``image_id``; ``segment_indices`` (index of each phrase in the narrative's utterances);
    ``orig_size (H, W)``; ``input_size (h, w)``; with ``semantic`` also ``semantic (ceil(h/4),
    ceil(w/4))`` int64, the category label of each cell (:meth:`category_ids` order, things then
    stuff) or ``IGNORE_LABEL`` where no category covers half of it: the targets of the
    semantic auxiliary loss (``model.semantic_classes``).
    """

    def __init__(self, paths: SplitPaths, resize: ResizeConfig | None = None,
                 cache: bool = False, max_items: int | None = None,
                 semantic: bool = False) -> None:
        self.paths = paths.require("images", "panoptic_json", "panoptic_dir", "narratives")
        self.resize = resize or ResizeConfig()
        self.panoptic = load_panoptic(self.paths.panoptic_json, self.paths.panoptic_dir)
        narratives = load_narratives(self.paths.narratives)
        check_narratives(narratives, self.panoptic, self.paths.narratives)
        self.narratives: list[Narrative] = [n for n in narratives if n.grounded()][:max_items]
        self.semantic = semantic
        self._category_ids = [i for ids in category_order(self.panoptic.categories.values())
                              for i in ids]
        self._cache: dict[int, dict[str, Any]] | None = {} if cache else None

    @classmethod
    def from_root(cls, root: str | Path, split: str, resize: ResizeConfig | None = None,
                  cache: bool = False, max_items: int | None = None,
                  semantic: bool = False) -> "GroundingDataset":
        """The split ``split`` of a folder in the COCO / PNG layout (see :mod:`groundkit.data.layout`)."""
        return cls(SplitPaths.from_root(root, split), resize, cache, max_items, semantic)

    def category_ids(self) -> list[int]:
        """The panoptic category ids in label order: things, then stuff, each sorted by id (the
        order of :class:`groundkit.data.panoptic_dataset.PanopticSegDataset`)."""
        return list(self._category_ids)

    def __len__(self) -> int:
        return len(self.narratives)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        item = self._load(self.narratives[index])
        if self._cache is not None:
            self._cache[index] = item
        return item

    def load_image(self, image_id: int) -> np.ndarray:
        """``(H, W, 3) uint8`` image, checked against its panoptic record."""
        return read_record_image(self.paths.images, self.panoptic.images[image_id],
                                 self.paths.panoptic_json)

    def _load(self, narrative: Narrative) -> dict[str, Any]:
        image = self.load_image(narrative.image_id)
        size = target_size(*image.shape[:2], self.resize)
        grounded = narrative.grounded()
        groups = [u.segment_ids for _, u in grounded]
        if self.semantic:  # one more group per category: its segments in this image (maybe none)
            segments = self.panoptic.annotation(narrative.image_id).segments
            groups += [[s.id for s in segments if s.category_id == c] for c in self._category_ids]
        quarter = (-(-size[0] // 4), -(-size[1] // 4))
        masks = masks_to_targets(self.panoptic.union_masks(narrative.image_id, groups), quarter)
        item = {
            "image": image_to_tensor(image, size),
            "caption": narrative.caption,
            "spans": [u.span for _, u in grounded],
            "masks": masks[:len(grounded)],
            "image_id": narrative.image_id,
            "segment_indices": [i for i, _ in grounded],
            "orig_size": image.shape[:2],
            "input_size": size,
        }
        if self.semantic:
            item["semantic"] = cell_labels(masks[len(grounded):])
        return item


def cell_labels(coverage: torch.Tensor) -> torch.Tensor:
    """``(C, h, w)`` covered fraction of each cell by each category -> ``(h, w)`` int64 labels:
    the category covering more than half of the cell, else ``IGNORE_LABEL``."""
    best, label = coverage.max(0)
    return torch.where(best > 0.5, label, torch.full_like(label, IGNORE_LABEL))


def collate_grounding(items: list[dict[str, Any]], divisor: int = 32) -> dict[str, Any]:
    """Pad images to a common size (multiple of ``divisor``) and masks to a quarter of it.

    Returns the batch contract of :mod:`groundkit.models.grounding`; per-item lists are kept.
    """
    images = pad_batch([it["image"] for it in items], divisor)
    quarter = (images.shape[-2] // 4, images.shape[-1] // 4)
    batch: dict[str, Any] = {
        "images": images,
        "captions": [it["caption"] for it in items],
        "image_ids": [it["image_id"] for it in items],
    }
    for key in ("spans", "segment_indices"):
        batch[key] = [it[key] for it in items]
    batch["image_sizes"] = [it["input_size"] for it in items]  # as collate_panoptic's batch
    batch["orig_sizes"] = [it["orig_size"] for it in items]
    if "masks" in items[0]:
        batch["masks"] = [pad_maps(it["masks"], quarter) for it in items]
    if "semantic" in items[0]:
        batch["semantic"] = torch.stack([pad_maps(it["semantic"], quarter, IGNORE_LABEL)
                                         for it in items])
    return batch
