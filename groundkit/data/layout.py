"""Where the files of a split live, in the layout of COCO and of the PNG benchmark.

``ROOT/images/<split>/``, ``ROOT/annotations/panoptic_<split>.json`` with its PNG folder
``ROOT/annotations/panoptic_<split>/`` and ``ROOT/annotations/png_coco_<split>.json``; the synthetic
benchmark writes the same layout (splits ``train``/``val``/``test``; COCO's are ``train2017``...).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from groundkit.errors import InputError


@dataclass(frozen=True)
class SplitPaths:
    images: Path
    panoptic_json: Path
    panoptic_dir: Path
    narratives: Path

    @classmethod
    def from_root(cls, root: str | Path, split: str) -> "SplitPaths":
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"{root}: no such data folder (make one with `groundkit generate --out {root}`)")
        ann = root / "annotations"
        return cls(root / "images" / split, ann / f"panoptic_{split}.json", ann / f"panoptic_{split}",
                   ann / f"png_coco_{split}.json")

    def require(self, *names: str) -> "SplitPaths":
        """Raise a clear error if any of the named paths is missing."""
        for name in names:
            path = getattr(self, name)
            if not path.exists():
                raise InputError(f"{path}: missing ({name} of this split)")
        return self
