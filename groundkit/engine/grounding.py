"""Training and evaluation of the one-stage grounding models (PPMN, DRMN) on a PNG-format split."""
from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from groundkit.config import config_to_dict
from groundkit.data.formats import grounding_record
from groundkit.data.grounding import GroundingDataConfig, GroundingDataset, collate_grounding
from groundkit.engine.checkpoint import seed_everything
from groundkit.engine.distributed import cleanup_distributed
from groundkit.engine.trainer import Trainer, TrainerConfig
from groundkit.metrics.files import PhraseIoUs, grounding_masks, png_phrase_ious
from groundkit.models import GROUNDING_MODELS, model_spec
from groundkit.models.grounding import GroundingModel, postprocess_grounding


@dataclass
class EvalConfig:
    """How evaluation runs during and after training."""

    batch_size: int = 8
    max_items: int | None = None   # evaluate on the first N narratives only (quick checks)


def experiment_class(model_type: str) -> type:
    """The experiment config of a grounding model: ``model_type``, model, data, trainer, eval."""
    cfg_cls, _ = model_spec(model_type)
    return make_dataclass(f"{cfg_cls.__name__}Experiment", [
        ("model_type", str, field(default=model_type)),
        ("model", cfg_cls, field(default_factory=cfg_cls)),
        ("data", GroundingDataConfig, field(default_factory=GroundingDataConfig)),
        ("trainer", TrainerConfig, field(default_factory=TrainerConfig)),
        ("eval", EvalConfig, field(default_factory=EvalConfig)),
    ])


def build_grounding_model(model_type: str, model_cfg: Any) -> GroundingModel:
    _, build = model_spec(model_type)
    return build(model_cfg)


@torch.no_grad()
def predict_split(model: GroundingModel, dataset: GroundingDataset, batch_size: int = 8,
                  progress: bool = True) -> list[dict[str, Any]]:
    """Prediction records (formats.md section 4) of every narrative of ``dataset``, in order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_grounding)
    records, index = [], 0
    for batch in tqdm(loader, desc="predict", unit="batch", disable=not progress, leave=False):
        batch["images"] = batch["images"].to(device)
        probs = model(batch)
        for k, phrase_probs in enumerate(probs):
            masks, scores = postprocess_grounding(phrase_probs.cpu(), batch["input_size"][k],
                                                  batch["orig_size"][k], model.cfg.threshold)
            records.append(grounding_record(dataset.narratives[index], batch["segment_indices"][k],
                                            masks.numpy(), scores.numpy()))
            index += 1
    model.train(was_training)
    return records


def score_records(dataset: GroundingDataset, records: list[dict[str, Any]]) -> PhraseIoUs:
    """Phrase IoUs of prediction records against the split's ground truth (original resolution)."""
    return png_phrase_ious(dataset.narratives, dataset.panoptic, grounding_masks(records))


def evaluate_split(model: GroundingModel, dataset: GroundingDataset, batch_size: int = 8,
                   progress: bool = True) -> tuple[PhraseIoUs, list[dict[str, Any]]]:
    records = predict_split(model, dataset, batch_size, progress)
    return score_records(dataset, records), records


def flat_scores(phrases: PhraseIoUs) -> dict[str, float]:
    """``{"ar": .., "ar_things": .., "acc@0.5": .., ...}`` for the metrics log."""
    out: dict[str, float] = {}
    for split, s in phrases.scores().items():
        suffix = "" if split == "overall" else f"_{split}"
        out[f"ar{suffix}"] = s["ar"]
        out[f"acc@0.5{suffix}"] = s["acc@0.5"]
    return out


def train_grounding(cfg: Any, resume: bool = False) -> dict[str, float]:
    """Train ``cfg.model_type`` on ``cfg.data`` with periodic evaluation on the val split."""
    data = cfg.data
    semantic = cfg.model.semantic_classes > 0
    train_set = GroundingDataset.from_root(data.root, data.train_split, data.resize, data.cache,
                                           data.max_items, semantic=semantic)
    if semantic and len(train_set.category_ids()) != cfg.model.semantic_classes:
        from groundkit.errors import ConfigError
        raise ConfigError(f"model.semantic_classes is {cfg.model.semantic_classes} but "
                          f"{train_set.paths.panoptic_json} has {len(train_set.category_ids())} "
                          f"categories: set it to that number (or 0 to train without the loss)")
    val_set = GroundingDataset.from_root(data.root, data.val_split, data.resize, data.cache,
                                         cfg.eval.max_items)
    seed_everything(cfg.trainer.seed)  # the initial weights are a function of the seed
    model = build_grounding_model(cfg.model_type, cfg.model)
    if model.text_cache is not None:  # encode every caption once, before the clock of epoch 1
        model.text_cache.get_or_compute([n.caption for n in train_set.narratives])

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        phrases, _ = evaluate_split(m, val_set, cfg.eval.batch_size, progress=False)
        return flat_scores(phrases)

    trainer = Trainer(model, train_set, collate_grounding, cfg.trainer, evaluate,
                      model_type=cfg.model_type, experiment_config=config_to_dict(cfg))
    try:
        return trainer.fit(resume=resume)
    finally:
        cleanup_distributed()


def load_grounding_model(checkpoint: str | Path, device: str | torch.device = "cpu"
                         ) -> tuple[GroundingModel, Any]:
    """A grounding model and its experiment config from a checkpoint path or bundled name."""
    from groundkit.config import config_from_dict
    from groundkit.engine.checkpoint import load_checkpoint
    from groundkit.hub import resolve_checkpoint

    state, meta = load_checkpoint(resolve_checkpoint(checkpoint))
    model_type = meta.get("model_type")
    if model_type not in GROUNDING_MODELS:
        from groundkit.errors import ConfigError
        raise ConfigError(f"{checkpoint}: a {model_type!r} checkpoint is not a grounding model "
                          f"(expected one of {list(GROUNDING_MODELS)})")
    cfg = config_from_dict(experiment_class(model_type), meta["config"], source=str(checkpoint))
    # The checkpoint holds every weight: the backbone file it started from (``backbone.weights``,
    # kept in cfg as a record) is neither read nor needed on this machine.
    initial = replace(cfg.model, backbone=replace(cfg.model.backbone, weights=None))
    model = build_grounding_model(model_type, initial)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), cfg

