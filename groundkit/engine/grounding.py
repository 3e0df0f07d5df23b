"""The grounding family: one-stage panoptic narrative grounding models (PPMN, DRMN) on PNG splits.

Prediction files are ``predictions.json`` (formats.md section 4: per narrative, per grounded
phrase, an RLE mask at the image's size); scores are the PNG Average Recall of those files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from groundkit.data.formats import grounding_record, read_grounding_predictions, write_grounding_predictions
from groundkit.data.grounding import GroundingDataConfig, GroundingDataset, collate_grounding
from groundkit.engine.tasks import Case, EvalConfig, Evaluation, Task, predicted_batches
from groundkit.engine.trainer import TrainerConfig
from groundkit.errors import ConfigError
from groundkit.metrics.files import PhraseIoUs, check_segment_indices, grounding_masks, png_phrase_ious
from groundkit.metrics.png_ar import mask_ious
from groundkit.metrics.png_protocol import protocol_note
from groundkit.metrics.report import plot_png_recall, png_table
from groundkit.models.drmn import DRMNConfig
from groundkit.models.grounding import GroundingModel
from groundkit.models.ppmn import PPMNConfig
from groundkit.ops.masks import segmentation_to_mask
from groundkit.structures import GroundingResult

PREDICTIONS = "predictions.json"


@dataclass
class PPMNExperiment:
    """``groundkit train`` of a PPMN (``configs/ppmn_synthetic.yaml``)."""

    model_type: str = "ppmn"
    model: PPMNConfig = field(default_factory=PPMNConfig)
    data: GroundingDataConfig = field(default_factory=GroundingDataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class DRMNExperiment(PPMNExperiment):
    """``groundkit train`` of a DRMN (``configs/drmn_synthetic.yaml``)."""

    model_type: str = "drmn"
    model: DRMNConfig = field(default_factory=DRMNConfig)


EXPERIMENTS: dict[str, type] = {"ppmn": PPMNExperiment, "drmn": DRMNExperiment}


@dataclass
class GroundingEvaluation(Evaluation):
    """PNG Average Recall of every grounded phrase of a split."""

    phrases: PhraseIoUs
    note: str = protocol_note("original")  # the resolution the IoUs were computed at

    def scores(self) -> dict[str, Any]:
        return self.phrases.scores()

    def table(self, title: str | None = None) -> str:
        return png_table(self.scores(), f"{title}; {self.note}" if title
                         else f"PNG Average Recall ({self.note})")

    def log_metrics(self) -> dict[str, float]:
        """``{"ar": .., "ar_things": .., "acc@0.5": .., ...}``."""
        out: dict[str, float] = {}
        for split, s in self.scores().items():
            suffix = "" if split == "overall" else f"_{split}"
            out[f"ar{suffix}"] = s["ar"]
            out[f"acc@0.5{suffix}"] = s["acc@0.5"]
        return out

    def plot(self, path: str | Path) -> bool:
        plot_png_recall(self.phrases, path)
        return True

    @property
    def missing(self) -> int:
        return self.phrases.missing


class GroundingTask(Task):
    name = "grounding"
    protocols = ("original", "ppmn")
    api_class = "Grounder"
    default_checkpoint = "ppmn-synthetic"
    result_type = GroundingResult
    unit = "narratives"
    heading = "Panoptic narrative grounding: a mask for every noun phrase of a caption"
    metric_note = ("PNG Average Recall (AR): the area under the curve of recall against the IoU "
                   "threshold, over every grounded noun phrase (close to their mean IoU); a phrase's "
                   "ground truth is the union of its segments. acc@0.5: the share of phrases with "
                   "IoU > 0.5. Things / stuff: by the phrase's last segment; singulars / plurals: "
                   "one segment or more.")
    case_note = ("the IoU of each grounded phrase's predicted mask with the union of its segments "
                 "(the IoU that AR averages); a narrative's mean IoU orders the gallery")

    def experiment_class(self, model_type: str) -> type:
        if model_type not in EXPERIMENTS:
            raise ConfigError(f"model_type {model_type!r} is not a grounding model "
                              f"(expected one of {sorted(EXPERIMENTS)})")
        return EXPERIMENTS[model_type]

    def dataset(self, cfg: Any, root: str | Path, split: str, *, train: bool = False,
                max_items: int | None = None, cache: bool = False) -> GroundingDataset:
        semantic = train and cfg.model.semantic_classes > 0  # targets of the auxiliary loss
        return GroundingDataset.from_root(root, split, cfg.data.resize, cache, max_items,
                                          semantic=semantic)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_grounding(items)

    def prepare(self, cfg: Any, train_set: GroundingDataset) -> Any:
        found = len(train_set.category_ids())
        if cfg.model.semantic_classes > 0 and found != cfg.model.semantic_classes:
            raise ConfigError(f"model.semantic_classes is {cfg.model.semantic_classes} but "
                              f"{train_set.paths.panoptic_json} has {found} categories: set it "
                              f"to that number (or 0 to train without the loss)")
        return cfg

    def prepare_model(self, model: GroundingModel, dataset: GroundingDataset) -> None:
        if model.text_cache is not None:  # encode every caption once, before the clock of epoch 1
            model.text_cache.get_or_compute([n.caption for n in dataset.narratives])

    def predict(self, model: GroundingModel, dataset: GroundingDataset, pred_dir: str | Path,
                batch_size: int = 8, progress: bool = True, workers: int = 0) -> list[Path]:
        # Every caption is encoded first, in one canonical order: encoded batch by batch, a
        # caption's features would depend (at float precision) on the batch it came in.
        self.prepare_model(model, dataset)
        path = Path(pred_dir) / PREDICTIONS
        write_grounding_predictions(path, predict_records(model, dataset, batch_size, progress,
                                                          workers))
        return [path]

    def score(self, dataset: GroundingDataset, pred_dir: str | Path,
              ppmn_size: tuple[int, int] | None = None) -> GroundingEvaluation:
        """``ppmn_size``: None scores at the original resolution; ``(short_side, max_size)``, the
        model's resize, scores with PPMN's protocol (IoU at 1/4 of the resized input)."""
        path = Path(pred_dir) / PREDICTIONS
        masks = grounding_masks(read_grounding_predictions(path), path)
        return GroundingEvaluation(
            png_phrase_ious(dataset.narratives, dataset.panoptic, masks, path, ppmn_size),
            protocol_note("original" if ppmn_size is None else "ppmn", ppmn_size))

    def results(self, dataset: GroundingDataset, pred_dir: str | Path
                ) -> Iterator[tuple[np.ndarray, GroundingResult]]:
        records = phrase_records(Path(pred_dir) / PREDICTIONS, dataset)
        for narrative in dataset.narratives:
            image = dataset.load_image(narrative.image_id)
            phrases = list(records.get(narrative.key, {}).values())
            spans = [narrative.utterances[p["segment_index"]].span for p in phrases]
            size = image.shape[:2]  # each RLE's size is checked before it is decoded
            masks = (np.stack([segmentation_to_mask(p["mask"], *size) for p in phrases]) if phrases
                     else np.zeros((0, *size), bool))
            yield image, GroundingResult(narrative.caption,
                                         [narrative.caption[a:b] for a, b in spans], spans, masks,
                                         np.array([p["score"] for p in phrases], np.float32))

    def cases(self, dataset: GroundingDataset, pred_dir: str | Path) -> Iterator[Case]:
        """Per narrative: its grounded phrases' ground-truth masks beside the predicted ones (an
        empty mask and score 0 where a phrase has no prediction), one colour per phrase in both."""
        records = phrase_records(Path(pred_dir) / PREDICTIONS, dataset)
        for index, narrative in enumerate(dataset.narratives):
            grounded = narrative.grounded()
            image = dataset.load_image(narrative.image_id)
            truth = dataset.panoptic.union_masks(narrative.image_id,
                                                 [u.segment_ids for _, u in grounded])
            masks, scores = np.zeros_like(truth), np.zeros(len(grounded), np.float32)
            predicted = records.get(narrative.key, {})
            for k, (i, _) in enumerate(grounded):
                if i in predicted:  # each RLE's size is checked before it is decoded
                    masks[k] = segmentation_to_mask(predicted[i]["mask"], *image.shape[:2])
                    scores[k] = predicted[i]["score"]
            spans = [u.span for _, u in grounded]
            phrases = [narrative.caption[a:b] for a, b in spans]
            ious = mask_ious(masks, truth)
            yield Case(index, f"image {narrative.image_id}", image,
                       GroundingResult(narrative.caption, phrases, spans, truth, None),
                       GroundingResult(narrative.caption, phrases, spans, masks, scores),
                       [(p if i in predicted else f"{p} (no prediction)", float(v))
                        for p, (i, _), v in zip(phrases, grounded, ious)])

    def title(self, cfg: Any, root: str | Path, split: str, dataset: GroundingDataset) -> str:
        return super().title(cfg, root, split, dataset)  # the evaluation adds its protocol


def phrase_records(path: Path, dataset: GroundingDataset
                   ) -> dict[tuple[int, str], dict[int, dict[str, Any]]]:
    """``{narrative key: {segment_index: phrase record}}`` of a predictions file (whose image ids
    are strings, as in the PNG files; a narrative's key has its integer id), after the checks
    scoring makes: each phrase predicted once, its index one of its narrative's segments."""
    read = read_grounding_predictions(path)
    check_segment_indices(dataset.narratives, grounding_masks(read, path), path)
    return {(int(r["image_id"]), r["caption"]): {p["segment_index"]: p for p in r["phrases"]}
            for r in read}


def predict_records(model: GroundingModel, dataset: GroundingDataset, batch_size: int = 8,
                    progress: bool = True, workers: int = 0) -> list[dict[str, Any]]:
    """Prediction records (formats.md section 4) of every narrative of ``dataset``, in order."""
    records = []
    for batch, results in predicted_batches(model, dataset, collate_grounding, batch_size, progress,
                                            workers):
        for result, segment_indices in zip(results, batch["segment_indices"]):
            narrative = dataset.narratives[len(records)]
            records.append(grounding_record(narrative, segment_indices, result.masks,
                                            result.scores))
    return records
