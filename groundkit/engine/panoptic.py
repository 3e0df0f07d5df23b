"""The panoptic family: the unified panoptic segmentation model on COCO panoptic splits.

Prediction files are COCO panoptic files (one JSON + one PNG per image); scores are the PQ of
those files, so the PQ printed by ``groundkit evaluate`` is exactly what ``groundkit score
panoptic`` (or the official ``pq_compute``) reports on them.

Usage::

    task = PanopticTask()
    cfg = load_config(PanopticExperiment, "configs/panoptic_synthetic.yaml", ["trainer.epochs=2"])
    task.train(cfg)
    model, cfg = task.load("runs/panoptic-synthetic")
    scores = task.evaluate(model, task.dataset(cfg, root, "val")).scores()   # ["All"]["pq"]
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from groundkit.data.formats import PanopticDataset, load_panoptic, write_panoptic_predictions
from groundkit.data.panoptic_dataset import PanopticDataConfig, PanopticSegDataset, collate_panoptic
from groundkit.engine.tasks import Case, EvalConfig, Evaluation, Task, predicted_batches
from groundkit.engine.trainer import TrainerConfig
from groundkit.errors import ConfigError
from groundkit.metrics.files import score_panoptic
from groundkit.metrics.report import pq_table
from groundkit.models.panoptic import PanopticConfig, PanopticModel
from groundkit.structures import Category, PanopticAnnotation, PanopticResult


@dataclass
class PanopticExperiment:
    """``groundkit train`` of the panoptic model (``configs/panoptic_synthetic.yaml``).

    ``categories``: names and colours of the model's classes, taken from the training split when
    empty, so a checkpoint can name what it predicts.
    """

    model_type: str = "panoptic"
    model: PanopticConfig = field(default_factory=PanopticConfig)
    data: PanopticDataConfig = field(default_factory=PanopticDataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    categories: tuple[Category, ...] = ()


@dataclass
class PanopticEvaluation(Evaluation):
    """PQ / SQ / RQ of a split (:func:`metrics.files.score_panoptic`: ``{"All"|"Things"|"Stuff":
    {"pq", "sq", "rq", "n"}, "per_class": ...}``)."""

    pq: dict[str, Any]

    def scores(self) -> dict[str, Any]:
        return self.pq

    def table(self, title: str | None = None) -> str:
        return pq_table(self.pq, title)

    def log_metrics(self) -> dict[str, float]:
        """``{"pq", "sq", "rq", "pq_things", ..., "rq_stuff"}``."""
        out: dict[str, float] = {}
        for group, suffix in (("All", ""), ("Things", "_things"), ("Stuff", "_stuff")):
            for key in ("pq", "sq", "rq"):
                out[f"{key}{suffix}"] = float(self.pq[group][key])
        return out


class PanopticTask(Task):
    name = "panoptic"
    api_class = "Segmenter"
    default_checkpoint = "panoptic-synthetic"
    result_type = PanopticResult
    unit = "images"
    heading = "Panoptic segmentation: every pixel a class, every object its own segment"
    metric_note = ("Panoptic Quality (COCO panoptic API rules): a predicted and a ground-truth "
                   "segment of the same class match when their IoU > 0.5; per class PQ = the sum "
                   "of matched IoUs / (TP + FP/2 + FN/2) = SQ (mean matched IoU) x RQ (an F1 "
                   "score), averaged over the classes (things, stuff, all).")
    case_note = ("each ground-truth segment's best IoU with a predicted segment of its class (0: "
                 "none); false positives show in the picture, not in these numbers")

    def experiment_class(self, model_type: str) -> type:
        if model_type != "panoptic":
            raise ConfigError(f"model_type {model_type!r} is not a panoptic model")
        return PanopticExperiment

    def dataset(self, cfg: Any, root: str | Path, split: str, *, train: bool = False,
                max_items: int | None = None, cache: bool = False) -> PanopticSegDataset:
        """Labelled in the order of the model's ``thing_ids`` / ``stuff_ids``; ``train`` turns on
        the flip augmentation of ``cfg.data``."""
        return PanopticSegDataset(root, split, cfg.data.resize, flip=train and cfg.data.flip,
                                  cache=cache, max_items=max_items,
                                  thing_ids=cfg.model.thing_ids, stuff_ids=cfg.model.stuff_ids)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_panoptic(items)

    def prepare(self, cfg: Any, train_set: PanopticSegDataset) -> Any:
        if cfg.categories:
            return cfg
        found = sorted(train_set.panoptic.categories.values(), key=lambda c: c.id)
        return dataclasses.replace(cfg, categories=tuple(found))

    def predict(self, model: PanopticModel, dataset: PanopticSegDataset, pred_dir: str | Path,
                batch_size: int = 8, progress: bool = True, workers: int = 0) -> list[Path]:
        """``pred_dir/panoptic_<split>.json`` and the PNGs in ``pred_dir/panoptic_<split>/``."""
        results = predict_results(model, dataset, batch_size, progress, workers)
        gt = ground_truth(dataset)
        json_path, png_dir = prediction_paths(dataset, pred_dir)
        write_panoptic_predictions(json_path, png_dir, results, gt.images, gt.categories.values())
        return [json_path, png_dir]

    def score(self, dataset: PanopticSegDataset, pred_dir: str | Path) -> PanopticEvaluation:
        gt = ground_truth(dataset)
        return PanopticEvaluation(score_panoptic(gt, self._read(dataset, pred_dir)))

    def results(self, dataset: PanopticSegDataset, pred_dir: str | Path
                ) -> Iterator[tuple[np.ndarray, PanopticResult]]:
        pred = self._read(dataset, pred_dir)
        for image_id in dataset.image_ids:
            yield dataset.load_image(image_id), panoptic_result(pred, image_id)

    def cases(self, dataset: PanopticSegDataset, pred_dir: str | Path) -> Iterator[Case]:
        gt, pred = ground_truth(dataset), self._read(dataset, pred_dir)
        for index, image_id in enumerate(dataset.image_ids):
            truth, prediction = panoptic_result(gt, image_id), panoptic_result(pred, image_id)
            ious = segment_ious(gt.annotation(image_id), truth.id_map,
                                pred.annotation(image_id), prediction.id_map)
            yield Case(index, f"image {image_id}", dataset.load_image(image_id), truth,
                       prediction, [(f"{gt.categories[s.category_id].name} ({area} px)", iou)
                                    for s, area, iou in ious])

    def title(self, cfg: Any, root: str | Path, split: str, dataset: PanopticSegDataset) -> str:
        return (super().title(cfg, root, split, dataset)
                + "; COCO panoptic API rules at the original image resolution")

    def _read(self, dataset: PanopticSegDataset, pred_dir: str | Path) -> PanopticDataset:
        return load_panoptic(*prediction_paths(dataset, pred_dir), reference=ground_truth(dataset))


def prediction_paths(dataset: PanopticSegDataset, pred_dir: str | Path) -> tuple[Path, Path]:
    """The JSON and PNG folder of ``dataset``'s predictions in ``pred_dir``, named as its ground
    truth (``panoptic_<split>.json``, ``panoptic_<split>/``)."""
    return (Path(pred_dir) / dataset.paths.panoptic_json.name,
            Path(pred_dir) / dataset.paths.panoptic_dir.name)


def predict_results(model: PanopticModel, dataset: PanopticSegDataset, batch_size: int = 8,
                    progress: bool = True, workers: int = 0) -> dict[int, PanopticResult]:
    """``{image_id: PanopticResult}`` of every image of ``dataset``, id maps at the image's size."""
    results: dict[int, PanopticResult] = {}
    for batch, out in predicted_batches(model, dataset, collate_panoptic, batch_size, progress,
                                        workers):
        results.update(zip(batch["image_ids"], out))
    return results


def panoptic_result(panoptic: PanopticDataset, image_id: int) -> PanopticResult:
    """The segment map and segments of ``image_id`` in a split's files (predictions or truth)."""
    info = [{"id": s.id, "category_id": s.category_id, "score": s.score,
             "isthing": panoptic.categories[s.category_id].isthing}
            for s in panoptic.annotation(image_id).segments]
    return PanopticResult(panoptic.id_map(image_id), info)


def segment_ious(truth: PanopticAnnotation, truth_ids: np.ndarray, pred: PanopticAnnotation,
                 pred_ids: np.ndarray) -> list[tuple[Any, int, float]]:
    """``(segment, area, IoU)`` of every non-crowd ground-truth segment: its best IoU with a
    predicted segment of its category (0 when there is none)."""
    out = []
    for s in truth.segments:
        if s.iscrowd:
            continue
        inside = truth_ids == s.id
        best = 0.0
        for q in pred.segments:
            if q.category_id == s.category_id:
                other = pred_ids == q.id
                union = np.count_nonzero(inside | other)
                best = max(best, np.count_nonzero(inside & other) / union if union else 0.0)
        out.append((s, int(np.count_nonzero(inside)), float(best)))
    return out


def ground_truth(dataset: PanopticSegDataset) -> PanopticDataset:
    """The split's ground truth restricted to the dataset's images (``max_items``)."""
    gt = dataset.panoptic
    if len(dataset.image_ids) == len(gt.annotations):
        return gt
    annotations = {i: gt.annotations[i] for i in dataset.image_ids}
    return PanopticDataset(gt.json_path, gt.png_dir, gt.images, annotations, gt.categories)
