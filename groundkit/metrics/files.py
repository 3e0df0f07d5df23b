"""Scoring prediction files written by any tool against the ground-truth files of the field.

Everything is computed at the original image resolution (PNG AR can also follow PPMN's
protocol: ``ppmn_size``, :mod:`groundkit.metrics.png_protocol`). Missing predictions count as failures
(an empty mask, IoU 0) and are counted in ``missing`` so the caller can say so; a prediction that
cannot be read, or whose mask does not have its image's size, is a FormatError naming it.
"""
from __future__ import annotations

import multiprocessing
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from groundkit.errors import FormatError
from groundkit.metrics.panoptic_quality import PQStat, pq_average, pq_stats_image, union_masks
from groundkit.metrics.png_ar import mask_ious, png_average_recall
from groundkit.metrics.png_protocol import ppmn_mask_ious, resized_size
from groundkit.metrics.proposals import RECALL_KS, recall_at_k
from groundkit.metrics.referring import mask_intersection_union, rec_accuracy, res_scores
from groundkit.structures import Narrative

RLE = dict[str, Any]


# --- panoptic narrative grounding ---------------------------------------------------------------

@dataclass
class PhraseIoUs:
    """One entry per grounded phrase: ``ious (N,) float``, ``is_thing (N,) bool`` (the phrase's
    last segment's category), ``num_segments (N,) int``; ``missing``: phrases with no prediction."""

    ious: np.ndarray
    is_thing: np.ndarray
    num_segments: np.ndarray
    missing: int = 0

    def scores(self) -> dict[str, dict[str, float | int]]:
        """The PNG table: AR, acc@0.5 and n of overall / things / stuff / singulars / plurals."""
        return png_average_recall(self.ious, self.is_thing, self.num_segments)


def png_phrase_ious(narratives: Iterable[Narrative], panoptic: Any,
                    predictions: Mapping[tuple[int, str], Mapping[int, RLE]],
                    pred_file: str | Path | None = None,
                    ppmn_size: tuple[int, int] | None = None) -> PhraseIoUs:
    """IoU of every grounded phrase's predicted mask with the union of its segments.

    ``ppmn_size``: None computes IoUs at the original resolution (the default protocol);
    ``(short_side, max_size)`` at 1/4 of an input resized so (PPMN's protocol,
    :mod:`groundkit.metrics.png_protocol`).

    panoptic: a :class:`groundkit.data.formats.PanopticDataset`; predictions:
    ``{(image_id, caption): {segment_index: RLE}}`` with RLEs checked by the predictions reader.
    Each segment PNG is read once for all the phrases of its image, whatever narrative they come
    from, and the phrases of an image are scored together.
    """
    from groundkit.data.formats import read_segment_png

    narratives = list(narratives)
    check_segment_indices(narratives, predictions, pred_file)
    by_image: dict[int, list[tuple[Narrative, int]]] = defaultdict(list)
    for n in narratives:
        by_image[n.image_id].extend((n, i) for i, _ in n.grounded())
    ious, is_thing, num_segments, missing = [], [], [], 0
    for image_id, phrases in by_image.items():
        ann = panoptic.annotation(image_id)
        ids = read_segment_png(panoptic.png_dir / ann.file_name, panoptic.shape(image_id),
                               f"image {image_id} in {panoptic.json_path}", np.uint32)
        groups = [n.utterances[i].segment_ids for n, i in phrases]
        rles = [predictions.get(n.key, {}).get(i) for n, i in phrases]
        for (n, i), rle in zip(phrases, rles):
            if rle is not None and tuple(rle["size"]) != ids.shape:
                raise FormatError(pred_file, f"mask size {list(rle['size'])} differs from the "
                                  f"image size {list(ids.shape)}", field="mask",
                                  item=f"narrative (image {image_id}, caption {n.caption[:40]!r}), "
                                       f"phrase {i} {n.utterances[i].text!r}")
        missing += sum(r is None for r in rles)
        preds, gts = _predicted_masks(rles, ids.shape), union_masks(ids, ann, groups)
        ious.append(mask_ious(preds, gts) if ppmn_size is None else
                    ppmn_mask_ious(preds, gts, resized_size(*ids.shape, *ppmn_size)))
        category = {s.id: s.category_id for s in ann.segments}
        is_thing.extend(panoptic.categories[category[g[-1]]].isthing for g in groups)
        num_segments.extend(len(g) for g in groups)
    return PhraseIoUs(np.concatenate(ious) if ious else np.zeros(0),
                      np.array(is_thing, dtype=bool), np.array(num_segments, dtype=np.int64),
                      missing)


def check_segment_indices(narratives: Iterable[Narrative],
                          predictions: Mapping[tuple[int, str], Mapping[int, Any]],
                          pred_file: str | Path | None = None) -> None:
    """FormatError unless every predicted ``segment_index`` of a narrative indexes its utterances
    (its ``segments`` list in the narratives file)."""
    for n in narratives:
        for i in predictions.get(n.key, {}):
            if not 0 <= i < len(n.utterances):
                raise FormatError(pred_file, f"expected the index of one of the narrative's "
                                  f"{len(n.utterances)} segments (0 to {len(n.utterances) - 1}), "
                                  f"got {i}", field="segment_index",
                                  item=f"narrative (image {n.image_id}, caption {n.caption[:40]!r})")


def _predicted_masks(rles: list[RLE | None], shape: tuple[int, int]) -> np.ndarray:
    """``(N, H, W) bool`` of N RLEs of size ``shape`` (None: an empty mask).

    The RLEs were checked by the predictions reader, so they are decoded in one pycocotools call:
    ``decode_rle`` would check each again, which costs ten times the decoding of a small mask.
    """
    from groundkit.ops.masks import _decode, decode_rle

    masks = np.zeros((len(rles), *shape), dtype=bool)
    present = [k for k, r in enumerate(rles) if r is not None]
    if any(isinstance(rles[k]["counts"], list) for k in present):  # uncompressed: rare
        for k in present:
            masks[k] = decode_rle(rles[k])
    elif present:
        compressed = [{"size": rles[k]["size"], "counts": rles[k]["counts"].encode("ascii")}
                      for k in present]
        masks[present] = np.moveaxis(_decode(compressed), -1, 0)
    return masks


def grounding_masks(records: Iterable[Mapping[str, Any]], file: str | Path | None = None
                    ) -> dict[tuple[int, str], dict[int, RLE]]:
    """``{(image_id, caption): {segment_index: RLE}}`` of read grounding prediction records;
    the same phrase predicted twice is a FormatError."""
    out: dict[tuple[int, str], dict[int, RLE]] = defaultdict(dict)
    for r in records:
        phrases = out[(int(r["image_id"]), r["caption"])]
        for p in r["phrases"]:
            if p["segment_index"] in phrases:
                raise FormatError(file, f"segment_index {p['segment_index']} predicted twice",
                                  item=f"narrative (image {r['image_id']}, caption "
                                       f"{r['caption'][:40]!r})")
            phrases[p["segment_index"]] = p["mask"]
    return dict(out)


def score_png_files(narratives_path: str | Path, panoptic_json: str | Path,
                    panoptic_dir: str | Path, pred_path: str | Path,
                    ppmn_size: tuple[int, int] | None = None) -> PhraseIoUs:
    """Phrase IoUs of a grounding predictions file (formats.md section 4) against the benchmark
    (``ppmn_size``: as :func:`png_phrase_ious`)."""
    from groundkit.data.formats import (
        check_narratives,
        load_narratives,
        load_panoptic,
        read_grounding_predictions,
    )

    narratives = load_narratives(narratives_path)
    panoptic = load_panoptic(panoptic_json, panoptic_dir)
    check_narratives(narratives, panoptic, narratives_path)
    predictions = grounding_masks(read_grounding_predictions(pred_path), pred_path)
    return png_phrase_ious(narratives, panoptic, predictions, pred_path, ppmn_size)


# --- panoptic segmentation ----------------------------------------------------------------------

# Below this many images one process scores them: starting a pool costs more than it saves.
PARALLEL_MIN_IMAGES = 100


def score_panoptic(gt: Any, pred: Any, workers: int = 1) -> dict:
    """PQ / SQ / RQ of a prediction split against its ground truth, as the COCO panoptic API.

    gt, pred: :class:`groundkit.data.formats.PanopticDataset` (``pred`` read with ``gt`` as its
    reference). Every ground-truth image needs a prediction; extra predicted images are ignored,
    as in the official ``pq_compute``. ``workers`` > 1 scores the images on a process pool when
    there are at least ``PARALLEL_MIN_IMAGES``; the numbers are the same to the last bit (the
    stats of the images are added in the same order).
    """
    image_ids = list(gt.annotations)
    for image_id in image_ids:
        if image_id not in pred.annotations:
            raise FormatError(pred.json_path, f"no prediction for image {image_id} of "
                                              f"{gt.json_path}")
    stat = PQStat()
    for image_stat in _image_stats(gt, pred, image_ids, workers):
        stat += image_stat
    return pq_average(stat, gt.categories)


def _image_stats(gt: Any, pred: Any, image_ids: list[int], workers: int) -> Iterator[PQStat]:
    """The stats of ``image_ids`` in their order, on ``workers`` processes when worth it.

    The workers get the datasets once, when they start (inherited on fork); a task is a run of
    image ids, several per worker so that a worker slowed by other jobs gets fewer.
    """
    if workers <= 1 or len(image_ids) < PARALLEL_MIN_IMAGES:
        yield from (_panoptic_image_stat(gt, pred, i) for i in image_ids)
        return
    size = -(-len(image_ids) // (4 * workers))
    runs = [image_ids[k:k + size] for k in range(0, len(image_ids), size)]
    with multiprocessing.Pool(workers, _keep_datasets, (gt, pred)) as pool:
        for stats in pool.imap(_panoptic_run_stats, runs):
            yield from stats


_DATASETS: tuple[Any, Any] | None = None  # (gt, pred) in a pool worker of _image_stats


def _keep_datasets(gt: Any, pred: Any) -> None:
    global _DATASETS
    _DATASETS = (gt, pred)


def _panoptic_run_stats(image_ids: list[int]) -> list[PQStat]:
    gt, pred = _DATASETS
    return [_panoptic_image_stat(gt, pred, i) for i in image_ids]


def _panoptic_image_stat(gt: Any, pred: Any, image_id: int) -> PQStat:
    """The stats of one image, its PNGs read here."""
    from groundkit.data.formats import read_segment_png

    ann, pred_ann = gt.annotations[image_id], pred.annotations[image_id]
    # the PNGs as they are: pq_stats_image makes the official checks, at a fraction of the
    # cost of PanopticDataset.id_map's (an np.unique over every pixel of both maps)
    where = f"image {image_id} in {gt.json_path}"
    gt_ids = read_segment_png(gt.png_dir / ann.file_name, gt.shape(image_id), where, np.uint32)
    pred_ids = read_segment_png(pred.png_dir / pred_ann.file_name, gt.shape(image_id), where,
                                np.uint32)
    return pq_stats_image(gt_ids, ann.segments, pred_ids, pred_ann.segments, gt.categories,
                          image_id=image_id, source=str(pred.json_path))


def score_panoptic_files(gt_json: str | Path, gt_dir: str | Path, pred_json: str | Path,
                         pred_dir: str | Path, workers: int = 1) -> dict:
    """:func:`score_panoptic` of two COCO panoptic JSON + PNG folder pairs."""
    from groundkit.data.formats import load_panoptic

    gt = load_panoptic(gt_json, gt_dir)
    return score_panoptic(gt, load_panoptic(pred_json, pred_dir, reference=gt), workers)


# --- referring expressions ----------------------------------------------------------------------

def referring_by_sentence(records: Iterable[Mapping[str, Any]], file: str | Path | None = None
                          ) -> dict[tuple[int, int], Mapping[str, Any]]:
    """Read referring prediction records keyed by ``(ref_id, sent_id)``; duplicates are errors."""
    out: dict[tuple[int, int], Mapping[str, Any]] = {}
    for r in records:
        key = (r["ref_id"], r["sent_id"])
        if key in out:
            raise FormatError(file, "predicted twice", item=f"ref {key[0]}, sentence {key[1]}")
        out[key] = r
    return out


def score_referring_files(task: str, refs_path: str | Path, instances_path: str | Path,
                          split: str, pred_path: str | Path) -> tuple[dict, int]:
    """``task`` "rec" or "res": scores of a referring predictions file on ``split``, and the
    number of samples without a prediction."""
    from groundkit.data.formats import load_referring, read_referring_predictions

    samples, instances = load_referring(refs_path, instances_path, split)
    predictions = referring_by_sentence(read_referring_predictions(pred_path), pred_path)
    if task == "rec":
        return score_rec(samples, instances, predictions)
    return score_res(samples, instances, predictions, pred_path)


def score_rec(samples: list, instances: Any,
              predictions: Mapping[tuple[int, int], Mapping[str, Any]]) -> tuple[dict, int]:
    """REC Acc@0.5 over ``samples``; predictions ``{(ref_id, sent_id): {"box": xyxy, ...}}``.

    Returns the scores and the number of samples without a prediction (counted as wrong).
    """
    pred_boxes, gt_boxes, missing = [], [], 0
    for s in samples:
        p = predictions.get((s.ref_id, s.sent_id))
        missing += p is None
        pred_boxes.append(np.zeros(4) if p is None else np.asarray(p["box"], dtype=np.float64))
        gt_boxes.append(instances.gt_box(s))
    scores = rec_accuracy(np.array(pred_boxes).reshape(-1, 4), np.array(gt_boxes).reshape(-1, 4))
    return scores, missing


def score_res(samples: list, instances: Any,
              predictions: Mapping[tuple[int, int], Mapping[str, Any]],
              pred_file: str | Path | None = None) -> tuple[dict, int]:
    """RES oIoU / mIoU / Pr@X over ``samples``; predictions carry a ``"mask"`` RLE at image size.

    Returns the scores and the number of samples without a predicted mask (empty mask, IoU 0).
    """
    from groundkit.ops.masks import decode_rle

    inter, union, missing = [], [], 0
    for s in samples:
        gt = instances.gt_mask(s)
        p = predictions.get((s.ref_id, s.sent_id))
        if p is None or p.get("mask") is None:
            missing += 1
            pred = np.zeros_like(gt)
        else:
            # the size checked before decoding: a few bytes of RLE may declare gigabytes of mask
            size = [int(v) for v in p["mask"]["size"]]
            if tuple(size) != gt.shape:
                raise FormatError(pred_file, f"mask size {size} differs from the "
                                  f"image size {list(gt.shape)}", field="mask",
                                  item=f"ref {s.ref_id}, sentence {s.sent_id}")
            pred = decode_rle(p["mask"])
        i, u = mask_intersection_union(pred, gt)
        inter.append(i)
        union.append(u)
    return res_scores(np.array(inter), np.array(union)), missing


def score_proposals(samples: list, instances: Any,
                    predictions: Mapping[tuple[int, int], Mapping[str, Any]],
                    ks: tuple[int, ...] = RECALL_KS) -> tuple[dict | None, int]:
    """Recall of the referent (IoU > 0.5) among the first K ``"proposals"`` of each prediction
    (best first), for K in ``ks`` (:func:`~groundkit.metrics.proposals.recall_at_k`); when the
    samples name contextual objects (``context_ann_ids``: the other objects an expression
    mentions, e.g. the synthetic refs' true ones), also their recall, ``context_recall@K`` over
    every named object, and ``context_n`` their number.

    Returns the scores and the number of samples whose prediction is missing or has no
    ``"proposals"`` key (counted as not recalled, with no proposal); the scores are None when no
    prediction of these samples has proposals (a one-stage model's file): nothing to measure.
    """
    proposals, targets, contexts, missing = [], [], [], 0
    for s in samples:
        p = predictions.get((s.ref_id, s.sent_id))
        boxes = None if p is None else p.get("proposals")
        missing += boxes is None
        proposals.append(np.zeros((0, 4)) if boxes is None else np.asarray(boxes, dtype=np.float64))
        targets.append(instances.gt_box(s))
        named = getattr(s, "context_ann_ids", ()) or ()
        contexts.append(np.array([instances.box(a) for a in named], dtype=np.float64).reshape(-1, 4))
    if missing == len(samples):
        return None, missing
    scores = recall_at_k(proposals, targets, ks)
    if any(len(c) for c in contexts):
        context = recall_at_k(proposals, contexts, ks)
        scores.update({f"context_{k}": v for k, v in context.items() if k.startswith("recall@")})
        scores["context_n"] = context["n"]
    return scores, missing
