"""The files groundkit writes (formats.md section 4): a stable contract for other tools.

- grounding predictions: a JSON list, one record per narrative, ``{"image_id": str, "caption": str,
  "phrases": [{"segment_index": int, "utterance": str, "score": float, "mask": RLE}]}`` with masks
  at the original image size; a narrative is identified by (image_id, caption);
- panoptic predictions: COCO panoptic PNGs + JSON, evaluable by the official panoptic API;
- referring predictions: a JSON list ``{"ref_id", "sent_id", "box": [x1, y1, x2, y2], "score",
  "mask": RLE (optional), "proposals": [[x1, y1, x2, y2], ...] (optional: the boxes a two-stage
  model chose among, best first, at the original image size)}``;
- scores: a JSON object of fractions in [0, 1].

Writers check records with the same code as readers, so groundkit never writes a file it cannot read.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from groundkit._io import write_json
from groundkit.data.formats._fields import (
    MAX_IMAGE_SIDE,
    get,
    get_int,
    get_list,
    get_number,
    in_range,
    int_id,
    is_kind,
    read_json,
)
from groundkit.data.formats.coco_panoptic import segment_json, write_panoptic_json, write_segment_png
from groundkit.errors import FormatError, InputError
from groundkit.ops.masks import check_rle, encode_rle
from groundkit.structures import Category, ImageRecord, Narrative, PanopticAnnotation, PanopticResult, Segment

Record = dict[str, Any]


# --- grounding ------------------------------------------------------------------------------------

def grounding_record(narrative: Narrative, segment_indices: Sequence[int], masks: np.ndarray,
                     scores: Sequence[float]) -> Record:
    """The record of one narrative: phrase ``segment_indices[k]`` has ``masks[k]`` and ``scores[k]``.

    masks: ``(N, H, W) bool`` at the original image size; scores: ``(N,)``.
    """
    if not len(segment_indices) == len(masks) == len(scores):
        raise InputError(f"grounding_record: {len(segment_indices)} segment indices, "
                         f"{len(masks)} masks and {len(scores)} scores differ in number")
    phrases = [phrase_record(i, narrative.utterances[i].text, s, m)
               for i, m, s in zip(segment_indices, masks, scores)]
    return {"image_id": str(narrative.image_id), "caption": narrative.caption, "phrases": phrases}


def phrase_record(segment_index: int, utterance: str, score: float, mask: np.ndarray) -> Record:
    """One phrase of a grounding record; ``groundkit predict``'s ``result.json`` writes its
    phrases with these keys too, so a reader of one reads the other. mask: ``(H, W) bool``."""
    return {"segment_index": int(segment_index), "utterance": utterance, "score": float(score),
            "mask": encode_rle(mask)}


def write_grounding_predictions(path: str | Path, records: Iterable[Record]) -> None:
    """Write grounding prediction records (see :func:`grounding_record`), atomically."""
    write_json(path, [_grounding(_plain(r), path, i) for i, r in enumerate(records)])


def read_grounding_predictions(path: str | Path) -> list[Record]:
    """Read and check a grounding predictions file; masks stay RLE (``ops.masks.decode_rle``)."""
    return [_grounding(r, path, i) for i, r in enumerate(_json_list(path))]


def _grounding(x: Any, file: str | Path, index: int) -> Record:
    item = f"record {index}"
    image_id = str(int_id(get(x, "image_id", "id", file, item), file, item, "image_id"))
    item = f"record {index} (image {image_id})"
    phrases = [_phrase(p, file, f"{item}, phrase {j}")
               for j, p in enumerate(get(x, "phrases", "list", file, item))]
    return {"image_id": image_id, "caption": get(x, "caption", "str", file, item), "phrases": phrases}


def _phrase(x: Any, file: str | Path, item: str) -> Record:
    return {"segment_index": get_int(x, "segment_index", file, item),  # < utterances: scorers
            "utterance": get(x, "utterance", "str", file, item),
            "score": float(get_number(x, "score", file, item)),
            "mask": _rle(get(x, "mask", "object", file, item), file, item)}


def _rle(x: dict[str, Any], file: str | Path, item: str) -> Record:
    """A COCO RLE ``{"size": [h, w], "counts": str | list}`` whose runs fill its size (not decoded)."""
    item += ", mask"
    size = [in_range(s, 1, MAX_IMAGE_SIDE, file, item, "size")  # masks are at an image's size
            for s in get_list(x, "size", "int", file, item, length=2)]
    counts = x.get("counts")
    if isinstance(counts, bytes):  # straight from pycocotools
        counts = counts.decode("ascii", errors="replace")
    if not isinstance(counts, (str, list)):
        raise FormatError(file, f"expected a string or a list, got {_type(counts)}", item=item,
                          field="counts")
    try:
        check_rle({"size": size, "counts": counts})
    except InputError as e:
        raise FormatError(file, str(e), item=item, field="counts") from None
    return {"size": size, "counts": counts}


def _type(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


# --- referring ------------------------------------------------------------------------------------

def write_referring_predictions(path: str | Path, records: Iterable[Record]) -> None:
    """Write ``{"ref_id", "sent_id", "box" (xyxy), "score", "mask" (RLE, optional), "proposals"
    (xyxy boxes best first, optional)}`` records."""
    write_json(path, [_referring(_plain(r), path, i) for i, r in enumerate(records)])


def read_referring_predictions(path: str | Path) -> list[Record]:
    """Read and check a referring predictions file; ``mask`` and ``proposals`` only where the
    record has them."""
    return [_referring(r, path, i) for i, r in enumerate(_json_list(path))]


def _referring(x: Any, file: str | Path, index: int) -> Record:
    item = f"record {index}"
    out = {"ref_id": get_int(x, "ref_id", file, item),
           "sent_id": get_int(x, "sent_id", file, item),
           "box": [float(v) for v in get_list(x, "box", "number", file, item, length=4)],
           "score": float(get_number(x, "score", file, item))}
    if x.get("mask") is not None:
        out["mask"] = _rle(get(x, "mask", "object", file, item), file, item)
    if x.get("proposals") is not None:
        out["proposals"] = [_box(b, file, f"{item}, proposal {k}")
                            for k, b in enumerate(get(x, "proposals", "list", file, item))]
    return out


def _box(x: Any, file: str | Path, item: str) -> list[float]:
    """An ``[x1, y1, x2, y2]`` list of 4 numbers."""
    if not isinstance(x, list) or len(x) != 4 or not all(is_kind(v, "number") for v in x):
        raise FormatError(file, f"expected a list of 4 numbers [x1, y1, x2, y2], got {str(x)[:60]}",
                          item=item, field="proposals")
    return [float(v) for v in x]


# --- panoptic -------------------------------------------------------------------------------------

def write_panoptic_predictions(json_path: str | Path, png_dir: str | Path,
                               results: Mapping[int, PanopticResult],
                               images: Mapping[int, ImageRecord],
                               categories: Iterable[Category] = ()) -> None:
    """Write panoptic results as COCO panoptic PNGs in ``png_dir`` + one JSON, atomically each.

    ``images`` gives each result's image (its size is checked, its file name gives the PNG name).
    ``categories``, when given, make the JSON self-contained; without them read it back with
    ``load_panoptic(json_path, png_dir, reference=ground_truth)``.
    """
    annotations = []
    for image_id, result in results.items():
        image = images.get(image_id)
        if image is None:
            raise InputError(f"panoptic result for image {image_id}, which is not in `images`")
        file_name = Path(image.file_name).with_suffix(".png").name
        segments = _prediction_segments(result, image)
        write_segment_png(Path(png_dir) / file_name, result.id_map)
        annotations.append(PanopticAnnotation(image_id, file_name, segments))
    used = [images[i] for i in results]
    write_panoptic_json(json_path, used, annotations, categories)


def panoptic_segments_json(result: PanopticResult) -> list[Record]:
    """The ``segments_info`` a panoptic prediction file holds for ``result``, in its order:
    ``{"id", "category_id", "area", "bbox" (COCO xywh), "iscrowd", "score"}`` measured on the id
    map (``groundkit predict``'s ``result.json`` writes these keys too)."""
    height, width = np.asarray(result.id_map).shape
    image = ImageRecord(0, "", height, width)
    return [segment_json(s) for s in _prediction_segments(result, image)]


def _prediction_segments(result: PanopticResult, image: ImageRecord) -> tuple[Segment, ...]:
    """Segments with area and box measured on the id map; refuses ids the info does not list."""
    id_map = np.asarray(result.id_map)
    if id_map.shape != (image.height, image.width):
        raise InputError(f"panoptic result for image {image.id}: id map {id_map.shape} differs "
                         f"from the image size {(image.height, image.width)}")
    ids, areas = np.unique(id_map, return_counts=True)
    area = dict(zip(ids.tolist(), areas.tolist()))
    infos = [_info(s, image.id, j) for j, s in enumerate(result.segments_info)]
    unlisted = set(area) - {0} - {i for i, _, _ in infos}
    if unlisted:
        raise InputError(f"panoptic result for image {image.id}: id map holds ids "
                         f"{sorted(unlisted)} that segments_info does not list")
    return tuple(Segment(id=i, category_id=c, area=area.get(i, 0), bbox=_bbox(id_map == i), score=p)
                 for i, c, p in infos)


def _info(info: Any, image_id: int, index: int) -> tuple[int, int, float | None]:
    """``(id, category_id, score)`` of one ``segments_info`` dict (numpy numbers welcome)."""
    try:
        score = info.get("score")
        return int(info["id"]), int(info["category_id"]), None if score is None else float(score)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise InputError(f"panoptic result for image {image_id}: segments_info[{index}] needs "
                         f"numeric 'id' and 'category_id' (and 'score'): {e!r}") from None


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """COCO ``[x, y, w, h]`` of a ``(H, W) bool`` mask (zeros when empty)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0, 0, 0, 0)
    return (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))


# --- scores ---------------------------------------------------------------------------------------

def write_scores(path: str | Path, scores: Mapping[str, Any]) -> None:
    """Write a (nested) dict of scores as indented JSON, atomically; NaN/inf is written as null."""
    write_json(path, _plain(scores), indent=2)


def read_scores(path: str | Path) -> dict[str, Any]:
    """Read a scores file written by :func:`write_scores`."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise FormatError(path, f"expected a JSON object of scores, got {type(data).__name__}")
    return data


def _plain(x: Any) -> Any:
    """Nested dicts/lists of numpy and Python numbers -> JSON-ready Python values."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_plain(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        # JSON has no NaN or infinity; null keeps the file readable by strict parsers.
        return float(x) if math.isfinite(x) else None
    return x


def _json_list(path: str | Path) -> list[Any]:
    data = read_json(path)
    if not isinstance(data, list):
        raise FormatError(path, f"expected a JSON list of records, got {type(data).__name__}")
    return data
