"""The referring family: referring expression comprehension (boxes) and segmentation (masks) on
RefCOCO-format folders (PBREC / PBREC-MT, VL-NMS).

Prediction files are ``predictions.json`` (formats.md section 4: ``{ref_id, sent_id, box, score,
mask, proposals}`` per sentence, at the original image size); scores are REC Acc@0.5 and RES
oIoU / mIoU / Pr@X of those files, overall and by expression type when the data names types, and
the recall of the referent among the first K proposals when the records have proposals.

Contextual objects (VL-NMS's positives beside the referent) are set on training datasets by the
model config's ``contextual``: ``pseudo`` computes the pseudo ground truth once per dataset
(:func:`groundkit.data.contextual.samples_contextual_objects`, word vectors from the model's text
encoder, threshold ``gamma``), ``true`` keeps what the refs say, ``none`` clears them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from groundkit.data.contextual import Embed, samples_contextual_objects
from groundkit.data.formats import read_referring_predictions, write_referring_predictions
from groundkit.data.referring import ReferringDataConfig, ReferringDataset, collate_referring
from groundkit.engine.tasks import Case, EvalConfig, Evaluation, Task, predicted_batches
from groundkit.engine.trainer import TrainerConfig
from groundkit.errors import ConfigError
from groundkit.metrics.files import referring_by_sentence, score_proposals, score_rec, score_res
from groundkit.metrics.referring import box_iou, mask_intersection_union
from groundkit.metrics.report import pct
from groundkit.models.referring.matcher_model import MatcherConfig
from groundkit.models.referring.pbrec import PBRECConfig, PBRECModel
from groundkit.models.referring.vlnms_model import VLNMSConfig
from groundkit.ops.masks import encode_rle, segmentation_to_mask
from groundkit.structures import ReferringResult
from groundkit.text.encoder import TextEncoder
from groundkit.text.words import word_embedder

PREDICTIONS = "predictions.json"
RES_COLUMNS = ("oiou", "miou", "pr@0.5", "pr@0.6", "pr@0.7", "pr@0.8", "pr@0.9")


@dataclass
class PBRECExperiment:
    """``groundkit train`` of PBREC / PBREC-MT (``configs/pbrec_synthetic.yaml``)."""

    model_type: str = "pbrec"
    model: PBRECConfig = field(default_factory=PBRECConfig)
    data: ReferringDataConfig = field(default_factory=ReferringDataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class VLNMSExperiment:
    """``groundkit train`` of VL-NMS's relatedness module (``configs/vlnms_fc_synthetic.yaml``)."""

    model_type: str = "vlnms"
    model: VLNMSConfig = field(default_factory=VLNMSConfig)
    data: ReferringDataConfig = field(default_factory=ReferringDataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class MatcherExperiment:
    """``groundkit train`` of the two-stage matcher on ground-truth boxes
    (``configs/matcher_synthetic.yaml``)."""

    model_type: str = "matcher"
    model: MatcherConfig = field(default_factory=MatcherConfig)
    data: ReferringDataConfig = field(default_factory=ReferringDataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


EXPERIMENTS: dict[str, type] = {"pbrec": PBRECExperiment, "vlnms": VLNMSExperiment,
                                "matcher": MatcherExperiment}


@dataclass
class ReferringEvaluation(Evaluation):
    """REC and RES scores, overall (``"all"``) and per expression type."""

    groups: dict[str, dict[str, Any]]   # group -> {"rec": {...}, "res": {...}[, "proposals": {...}]}
    no_prediction: int = 0

    def scores(self) -> dict[str, Any]:
        return self.groups

    def table(self, title: str | None = None) -> str:
        header = f"{'expressions':14} {'Acc@0.5':>8} " + " ".join(f"{c:>7}" for c in RES_COLUMNS)
        lines = ([title] if title else []) + [header + f" {'n':>6}"]
        for group, s in self.groups.items():
            res = s["res"]
            lines.append(f"{group:14} {pct(s['rec']['acc@0.5']):>8} "
                         + " ".join(f"{pct(res[c]):>7}" for c in RES_COLUMNS)
                         + f" {s['rec']['n']:>6}")
        if "proposals" in self.groups["all"]:
            ks = [k for k in self.groups["all"]["proposals"] if k.startswith("recall@")]
            lines += ["", "recall of the referent (IoU > 0.5) among the first K proposals",
                      f"{'expressions':14} " + " ".join(f"{'R@' + k[7:]:>7}" for k in ks)
                      + f" {'mean K':>7} {'n':>6}"]
            for group, s in self.groups.items():
                p = s.get("proposals")
                if p is None:   # a group none of whose records has proposals
                    continue
                lines.append(f"{group:14} " + " ".join(f"{pct(p[k]):>7}" for k in ks)
                             + f" {p['mean_proposals']:>7.2f} {p['n']:>6}")
            named = [(g, s["proposals"]) for g, s in self.groups.items()
                     if "context_n" in s.get("proposals", {})]
            if named:
                lines += ["", "recall of the contextual objects (the other objects an expression "
                          "names) among the first K proposals",
                          f"{'expressions':14} " + " ".join(f"{'R@' + k[7:]:>7}" for k in ks)
                          + f" {'objects':>7}"]
                lines += [f"{g:14} " + " ".join(f"{pct(p['context_' + k]):>7}" for k in ks)
                          + f" {p['context_n']:>7}" for g, p in named]
        return "\n".join(lines)

    def log_metrics(self) -> dict[str, float]:
        overall = self.groups["all"]
        out = {"acc@0.5": overall["rec"]["acc@0.5"], "oiou": overall["res"]["oiou"],
               "miou": overall["res"]["miou"]}
        out.update({f"proposal_{k}": v for k, v in overall.get("proposals", {}).items()
                    if k.startswith("recall@")})
        return out

    @property
    def missing(self) -> int:
        return self.no_prediction


class ReferringTask(Task):
    name = "referring"
    api_class = "Referrer"
    default_checkpoint = "pbrec-synthetic"
    result_type = ReferringResult
    unit = "expressions"
    fixed_input_size = True   # every image is letterboxed to the same S x S square
    heading = "Referring expressions: the box and mask of the one object an expression names"
    metric_note = ("REC Acc@0.5: the share of expressions whose predicted box has IoU >= 0.5 with "
                   "the referent's. RES: oIoU = total intersection / total union of the masks "
                   "over all expressions, mIoU = their mean IoU, Pr@X = the share with IoU >= X.")
    case_note = "the box IoU (REC) and the mask IoU (RES) of each expression"

    def input_size_overrides(self, size: int) -> list[str]:
        return [f"data.input_size={size}"]   # the letterboxed square's side

    def experiment_class(self, model_type: str) -> type:
        if model_type not in EXPERIMENTS:
            raise ConfigError(f"model_type {model_type!r} is not a referring model "
                              f"(expected one of {sorted(EXPERIMENTS)})")
        return EXPERIMENTS[model_type]

    def dataset(self, cfg: Any, root: str | Path, split: str, *, train: bool = False,
                max_items: int | None = None, cache: bool = False) -> ReferringDataset:
        dataset = ReferringDataset(replace(cfg.data, root=str(root)), split, train=train,
                                   max_items=max_items, cache=cache)
        contextual = getattr(cfg.model, "contextual", None)   # models trained on context objects
        if train and contextual == "none":
            dataset.set_context([[] for _ in dataset.samples])
        elif train and contextual == "pseudo":
            embed = _word_embedder(cfg.model.text_encoder)
            dataset.set_context(samples_contextual_objects(dataset.samples, dataset.instances, embed,
                                                           cfg.model.gamma))
        return dataset

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_referring(items)

    def prepare(self, cfg: Any, train_set: ReferringDataset) -> Any:
        if not hasattr(cfg.model, "num_classes"):   # VL-NMS: the detector's classes are its own
            return cfg
        found = len(train_set.category_ids())
        if cfg.model.num_classes == 0:
            return replace(cfg, model=replace(cfg.model, num_classes=found))
        if cfg.model.num_classes != found:
            raise ConfigError(f"model.num_classes is {cfg.model.num_classes} but the training "
                              f"instances have {found} categories: set it to {found} (or 0)")
        return cfg

    def prepare_model(self, model: PBRECModel, dataset: ReferringDataset) -> None:
        if model.text_cache is not None:  # encode every expression once, before epoch 1
            model.text_cache.get_or_compute([s.sentence for s in dataset.samples])

    def set_inference_options(self, model: Any, options: Any) -> None:
        """As every family's; a two-stage matcher also loads its proposal source at once, so a
        wrong ``proposals`` (a missing file, a checkpoint of another kind) fails here, before
        any image is read (and leaves the model as it was)."""
        before = model.cfg
        super().set_inference_options(model, options)
        try:
            if hasattr(model, "proposer") and model.cfg.proposals != "gt":
                model.proposer()
        except Exception:
            model.cfg = before   # a refused option leaves the model as it was
            raise

    def predict(self, model: PBRECModel, dataset: ReferringDataset, pred_dir: str | Path,
                batch_size: int = 8, progress: bool = True, workers: int = 0) -> list[Path]:
        self.prepare_model(model, dataset)  # expressions encoded once, in one order (grounding's)
        path = Path(pred_dir) / PREDICTIONS
        write_referring_predictions(path, predict_records(model, dataset, batch_size, progress,
                                                          workers))
        return [path]

    def score(self, dataset: ReferringDataset, pred_dir: str | Path) -> ReferringEvaluation:
        path = Path(pred_dir) / PREDICTIONS
        predictions = referring_by_sentence(read_referring_predictions(path), path)
        groups = {"all": list(range(len(dataset.samples)))}
        for k, kind in enumerate(dataset.types):
            if kind:
                groups.setdefault(kind, []).append(k)
        scores, missing = {}, 0
        for group, index in groups.items():
            samples = [dataset.samples[k] for k in index]
            rec, missing_boxes = score_rec(samples, dataset.instances, predictions)
            res, _ = score_res(samples, dataset.instances, predictions, path)
            scores[group] = {"rec": rec, "res": res}
            recall, _ = score_proposals(samples, dataset.instances, predictions)
            if recall is not None:
                scores[group]["proposals"] = recall
            missing = missing_boxes if group == "all" else missing
        return ReferringEvaluation(scores, missing)

    def results(self, dataset: ReferringDataset, pred_dir: str | Path
                ) -> Iterator[tuple[np.ndarray, ReferringResult]]:
        path = Path(pred_dir) / PREDICTIONS
        predictions = referring_by_sentence(read_referring_predictions(path), path)
        for sample in dataset.samples:
            p = predictions.get((sample.ref_id, sample.sent_id))
            image = dataset.load_image(sample.image_id)
            if p is None:
                yield image, ReferringResult(np.zeros(4), 0.0, np.zeros(image.shape[:2], bool),
                                             expression=sample.sentence)
                continue
            mask = (segmentation_to_mask(p["mask"], *image.shape[:2])  # size checked first
                    if p.get("mask") is not None else None)
            proposals = (np.asarray(p["proposals"], np.float64).reshape(-1, 4)
                         if p.get("proposals") is not None else None)
            yield image, ReferringResult(np.asarray(p["box"], np.float64), float(p["score"]), mask,
                                         proposals, expression=sample.sentence)

    def cases(self, dataset: ReferringDataset, pred_dir: str | Path) -> Iterator[Case]:
        for index, (sample, (image, prediction)) in enumerate(
                zip(dataset.samples, self.results(dataset, pred_dir))):
            box, mask = dataset.instances.gt_box(sample), dataset.instances.gt_mask(sample)
            ious = [("box", float(box_iou(prediction.box, box)[0]))]
            if prediction.mask is not None:
                inter, union = mask_intersection_union(prediction.mask, mask)
                ious.append(("mask", inter / union if union else 0.0))
            yield Case(index, f"ref {sample.ref_id}, sentence {sample.sent_id}", image,
                       ReferringResult(box, None, mask, expression=sample.sentence), prediction,
                       ious)


def predict_records(model: PBRECModel, dataset: ReferringDataset, batch_size: int = 8,
                    progress: bool = True, workers: int = 0) -> list[dict[str, Any]]:
    """Referring prediction records (formats.md section 4) of every sentence, in order."""
    return [referring_record(ref_id, sent_id, result)
            for batch, results in predicted_batches(model, dataset, collate_referring, batch_size,
                                                    progress, workers)
            for result, ref_id, sent_id in zip(results, batch["ref_ids"], batch["sent_ids"])]


def referring_record(ref_id: int, sent_id: int, result: ReferringResult) -> dict[str, Any]:
    """One line of a referring predictions file."""
    record = {"ref_id": int(ref_id), "sent_id": int(sent_id),
              "box": [float(v) for v in result.box], "score": float(result.score)}
    if result.mask is not None:
        record["mask"] = encode_rle(result.mask)
    if result.proposals is not None:
        record["proposals"] = [[float(v) for v in box] for box in np.asarray(result.proposals).reshape(-1, 4)]
    return record


_EMBEDDERS: dict[str | None, Embed] = {}


def _word_embedder(text_encoder: str | None) -> Embed:
    """The word vectors of the pseudo ground truth (:func:`groundkit.text.words.word_embedder`),
    one encoder per folder per process (a training run's datasets share it)."""
    if text_encoder not in _EMBEDDERS:
        _EMBEDDERS[text_encoder] = word_embedder(TextEncoder(text_encoder))
    return _EMBEDDERS[text_encoder]
