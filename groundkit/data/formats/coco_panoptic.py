"""COCO panoptic: one JSON (images, annotations, categories) + one segment PNG per image.

The id of a pixel is ``R + 256 * G + 256**2 * B``; 0 is VOID. Prediction files have the same layout
and may give segments only ``id`` and ``category_id``, so the other segment fields are optional here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from groundkit._io import atomic_path, write_json
from groundkit.data.formats._fields import (
    MAX_SEGMENT_ID,
    by_id,
    get,
    get_box,
    get_color,
    get_int,
    get_number,
    image_size,
    read_json,
)
from groundkit.data.formats.png_decode import decode_rgb8
from groundkit.errors import FormatError
from groundkit.metrics.panoptic_quality import union_masks
from groundkit.structures import Category, ImageRecord, PanopticAnnotation, Segment


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """Segment ids of an RGB segment image.

    rgb: ``(H, W, 3)`` any integer dtype -> ``(H, W) int64``. Casts before the arithmetic: on uint8
    NumPy 2 raises on overflow and older NumPy wraps silently.
    """
    rgb = np.asarray(rgb).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(id_map: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_id`: ``(H, W)`` int -> ``(H, W, 3) uint8``."""
    ids = np.asarray(id_map).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError(f"segment ids must lie in [0, 256**3), got [{ids.min()}, {ids.max()}]")
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def write_segment_png(path: str | Path, id_map: np.ndarray) -> None:
    """Write ``id_map (H, W)`` as a COCO panoptic RGB PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(id_to_rgb(id_map), mode="RGB").save(tmp, format="PNG")


def read_segment_png(path: str | Path, shape: tuple[int, int] | None = None,
                     of: str = "its image", dtype: type = np.int64) -> np.ndarray:
    """The ``(H, W)`` id map of a segment PNG, int64 or ``dtype`` (the scorers read uint32: less
    memory traffic, the same ids); a missing or unreadable file, or one in another format than
    PNG (a lossy JPEG would change the ids), is a FormatError.

    ``shape``: the ``(H, W)`` the PNG must have (its image's, from the JSON), checked on its
    header before any pixel is decoded: a 14 kB PNG may claim 640 x 65536 pixels, and the ids
    take 8 to 16 bytes a pixel on the way. ``of`` names where ``shape`` comes from in the error.
    """
    try:
        with Image.open(path) as img:
            if img.format != "PNG":
                raise FormatError(path, f"expected a PNG file, got a {img.format} image",
                                  field="format")
            if shape is not None and (img.height, img.width) != tuple(shape):
                raise FormatError(path, f"{img.width}x{img.height} (WxH) differs from the "
                                  f"{shape[1]}x{shape[0]} of {of}", field="size")
            rgb = decode_rgb8(img, path)          # 8-bit RGB, by libspng where installed
            if rgb is not None:
                ids = _ids_of_rgb8(rgb)
            else:
                if img.mode != "RGB":
                    img = img.convert("RGB")
                img.load()
                # Pillow keeps RGB pixels as 4 bytes (R, G, B, pad): read them as that, one
                # little-endian uint32 per pixel whose low 3 bytes are the id (rgb_to_id's
                # formula), rather than packing 3 bytes a pixel and shifting them together
                # (0.5 ms less a 512 x 512 map: a quarter of the time past the decode).
                packed = np.frombuffer(img.tobytes("raw", "RGBX"), "<u4")
                ids = (packed & np.uint32(0xFFFFFF)).reshape(img.height, img.width)
    except FormatError:
        raise
    except FileNotFoundError:
        raise FormatError(path, "segment PNG not found") from None
    except (OSError, ValueError, SyntaxError) as e:
        # PIL raises OSError subclasses for truncated or non-image files, ValueError or
        # SyntaxError for some corrupt chunks; open() a ValueError for a name holding a NUL
        raise FormatError(path, f"cannot read the segment PNG: {e}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # the header claims more pixels than Pillow's limit (the warning raises under `-W error`)
        raise FormatError(path, f"refused as a possible decompression bomb ({e})") from None
    return ids.astype(dtype, copy=False)


def _ids_of_rgb8(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3) uint8`` -> ``(H, W) uint32`` ids (rgb_to_id's formula): each pixel's 3 bytes
    read as the low bytes of a little-endian uint32 at a stride of 3 bytes (its 4th byte is the
    next pixel's, masked off), one pass; 0.2 ms a 512 x 512 map against 1.8 ms for copying the
    bytes into a zeroed uint32 per pixel. The last pixel, whose 4th byte lies past the end, is
    computed on its own."""
    height, width, _ = rgb.shape
    flat, n = np.ascontiguousarray(rgb).reshape(-1), height * width
    ids = np.empty(n, np.uint32)
    if n:
        words = np.ndarray((n - 1,), "<u4", flat, 0, (3,))  # overlapping, unaligned reads
        np.bitwise_and(words, np.uint32(0xFFFFFF), out=ids[:-1])
        red, green, blue = flat[-3:].astype(np.uint32)
        ids[-1] = red | green << 8 | blue << 16
    return ids.reshape(height, width)


# --- JSON reader ----------------------------------------------------------------------------------

class PanopticDataset:
    """A COCO panoptic split: its JSON parsed into records, PNGs read on demand.

    ``images``, ``annotations`` (by image id) and ``categories`` are dicts keyed by id.
    """

    def __init__(self, json_path: Path, png_dir: Path, images: dict[int, ImageRecord],
                 annotations: dict[int, PanopticAnnotation], categories: dict[int, Category]) -> None:
        self.json_path = json_path
        self.png_dir = png_dir
        self.images = images
        self.annotations = annotations
        self.categories = categories

    def annotation(self, image_id: int) -> PanopticAnnotation:
        """The annotation of ``image_id``; FormatError when the JSON has none."""
        ann = self.annotations.get(image_id)
        if ann is None:
            raise FormatError(self.json_path, f"no annotation for image {image_id}")
        return ann

    def id_map(self, image_id: int) -> np.ndarray:
        """``(H, W) int64`` segment ids of ``image_id``, checked against its JSON entries."""
        ann = self.annotation(image_id)
        png = self.png_dir / ann.file_name
        ids = read_segment_png(png, self.shape(image_id), f"image {image_id} in {self.json_path}")
        unlisted = set(np.unique(ids).tolist()) - {0} - {s.id for s in ann.segments}
        if unlisted:
            raise FormatError(png, f"segment id {min(unlisted)} of image {image_id} is not listed in "
                              f"its segments_info in {self.json_path}")
        return ids

    def shape(self, image_id: int) -> tuple[int, int]:
        """``(H, W)`` of ``image_id`` from the JSON (its segment PNG must have it)."""
        image = self.images[image_id]
        return image.height, image.width

    def segment_mask(self, image_id: int, segment_id: int) -> np.ndarray:
        """``(H, W) bool`` mask of one segment."""
        return self.union_mask(image_id, [segment_id])

    def union_mask(self, image_id: int, segment_ids: Iterable[int]) -> np.ndarray:
        """``(H, W) bool`` union of the masks of ``segment_ids`` (a phrase's ground truth)."""
        return self.union_masks(image_id, [segment_ids])[0]

    def union_masks(self, image_id: int, groups: Iterable[Iterable[int]]) -> np.ndarray:
        """``(N, H, W) bool``: the union mask of each of N groups of segment ids (PNG read once)."""
        ann = self.annotation(image_id)
        groups = [list(g) for g in groups]
        for sid in (s for g in groups for s in g):
            if ann.segment(sid) is None:
                raise FormatError(self.json_path, f"segment {sid} is not in the annotation of "
                                  f"image {image_id}")
        return union_masks(self.id_map(image_id), ann, groups)


def load_panoptic(json_path: str | Path, png_dir: str | Path,
                  reference: PanopticDataset | None = None) -> PanopticDataset:
    """Read a COCO panoptic JSON; segment PNGs (in ``png_dir``) are read on demand.

    ``reference``: for a prediction file, the ground truth whose ``images`` and ``categories`` stand
    in for those the prediction JSON leaves out or empty (the official evaluator takes them from
    the ground truth too).
    """
    json_path, png_dir = Path(json_path), Path(png_dir)
    data = read_json(json_path)
    _top(data, "annotations", json_path)  # fails early unless the JSON is an object
    if reference is not None and not data.get("images"):
        images = reference.images
    else:
        images = by_id((_image(x, json_path, i) for i, x in enumerate(_top(data, "images", json_path))),
                       json_path, "image")
    if reference is not None and not data.get("categories"):
        categories = reference.categories
    else:
        categories = by_id((_category(x, json_path, i)
                            for i, x in enumerate(_top(data, "categories", json_path))),
                           json_path, "category")
    annotations = _annotations(_top(data, "annotations", json_path), json_path, images, categories)
    return PanopticDataset(json_path, png_dir, images, annotations, categories)


def _top(data: Any, key: str, file: Path) -> list[Any]:
    return get(data, key, "list", file, "top level")


def _annotations(items: list[Any], file: Path, images: dict[int, ImageRecord],
                 categories: dict[int, Category]) -> dict[int, PanopticAnnotation]:
    annotations: dict[int, PanopticAnnotation] = {}
    for i, x in enumerate(items):
        ann = _annotation(x, file, i, images, categories)
        if ann.image_id in annotations:
            raise FormatError(file, f"second annotation for image {ann.image_id}",
                              item=f"annotation {i}")
        annotations[ann.image_id] = ann
    return annotations


def _image(x: Any, file: Path, index: int) -> ImageRecord:
    item = f"image {index}"
    image_id = get_int(x, "id", file, item)
    height, width = image_size(x, file, item)
    return ImageRecord(id=image_id, file_name=get(x, "file_name", "str", file, item),
                       height=height, width=width)


def _category(x: Any, file: Path, index: int) -> Category:
    item = f"category {index}"
    color = get_color(x, "color", file, item, default=(0, 0, 0))
    return Category(id=get_int(x, "id", file, item), name=get(x, "name", "str", file, item),
                    isthing=bool(get(x, "isthing", "flag", file, item)), color=color,
                    supercategory=get(x, "supercategory", "str", file, item, default=""))


def _annotation(x: Any, file: Path, index: int, images: dict[int, ImageRecord],
                categories: dict[int, Category]) -> PanopticAnnotation:
    image_id = get_int(x, "image_id", file, f"annotation {index}")
    item = f"annotation of image {image_id}"
    if image_id not in images:
        raise FormatError(file, "expected an id listed in 'images'", item=item, field="image_id")
    infos = get(x, "segments_info", "list", file, item)
    segments = tuple(_segment(s, file, f"{item}, segment {j}", categories)
                     for j, s in enumerate(infos))
    ids = [s.id for s in segments]
    if 0 in ids or len(set(ids)) != len(ids):  # a PNG could not tell such segments apart
        raise FormatError(file, f"segment ids must be unique and non-zero (0 is VOID), got {ids}",
                          item=item, field="segments_info")
    return PanopticAnnotation(image_id=image_id, file_name=get(x, "file_name", "str", file, item),
                              segments=segments)


def _segment(x: Any, file: Path, item: str, categories: dict[int, Category]) -> Segment:
    segment_id = get_int(x, "id", file, item, high=MAX_SEGMENT_ID)  # 0 (VOID) refused later
    category_id = get_int(x, "category_id", file, item)
    if category_id not in categories:
        raise FormatError(file, f"expected an id listed in 'categories', got {category_id}",
                          item=item, field="category_id")
    return Segment(id=segment_id, category_id=category_id,
                   area=get_number(x, "area", file, item, low=0, default=0),
                   bbox=get_box(x, "bbox", file, item, default=(0, 0, 0, 0)),
                   iscrowd=bool(get(x, "iscrowd", "flag", file, item, default=0)),
                   score=get_number(x, "score", file, item, default=None))


# --- JSON writer ----------------------------------------------------------------------------------

def _image_json(image: ImageRecord) -> dict[str, Any]:
    return {"id": image.id, "file_name": image.file_name, "height": image.height, "width": image.width}


def segment_json(seg: Segment) -> dict[str, Any]:
    """A segment as COCO panoptic JSON writes it (``score`` only on predictions)."""
    out = {"id": seg.id, "category_id": seg.category_id, "area": seg.area, "bbox": list(seg.bbox),
           "iscrowd": int(seg.iscrowd)}
    if seg.score is not None:  # predictions only; the official evaluator ignores extra keys
        out["score"] = seg.score
    return out


def _annotation_json(ann: PanopticAnnotation) -> dict[str, Any]:
    return {"image_id": ann.image_id, "file_name": ann.file_name,
            "segments_info": [segment_json(s) for s in ann.segments]}


def _category_json(cat: Category) -> dict[str, Any]:
    return {"id": cat.id, "name": cat.name, "supercategory": cat.supercategory,
            "isthing": int(cat.isthing), "color": list(cat.color)}


def write_panoptic_json(path: str | Path, images: Iterable[ImageRecord],
                        annotations: Iterable[PanopticAnnotation],
                        categories: Iterable[Category]) -> None:
    """Write a COCO panoptic JSON (``images``, ``annotations``, ``categories``), atomically."""
    write_json(path, {"images": [_image_json(i) for i in images],
                      "annotations": [_annotation_json(a) for a in annotations],
                      "categories": [_category_json(c) for c in categories]})
