"""Training and evaluation of the unified panoptic segmentation model on a COCO panoptic split.

Evaluation writes the predictions as COCO panoptic files (one JSON + one PNG per image) and
scores those files, so the PQ printed by ``groundkit evaluate`` is exactly what
``groundkit score panoptic`` (or the official ``pq_compute``) reports on them.

Usage::

    cfg = load_config(experiment_class(), "configs/panoptic_synthetic.yaml", ["trainer.epochs=2"])
    train_panoptic(cfg)
    model, cfg = load_panoptic_model("runs/panoptic-synthetic")
    scores = evaluate_panoptic(model, PanopticSegDataset(...), "preds/")   # scores["All"]["pq"]
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
from contextlib import nullcontext
from dataclasses import field, make_dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from groundkit.config import config_from_dict, config_to_dict
from groundkit.data.formats import PanopticDataset, load_panoptic, write_panoptic_predictions
from groundkit.data.panoptic_dataset import PanopticDataConfig, PanopticSegDataset, collate_panoptic
from groundkit.engine.checkpoint import load_checkpoint, seed_everything
from groundkit.engine.distributed import cleanup_distributed
from groundkit.engine.grounding import EvalConfig
from groundkit.engine.trainer import Trainer, TrainerConfig
from groundkit.metrics.files import score_panoptic
from groundkit.models.panoptic import PanopticConfig, PanopticModel, build_panoptic
from groundkit.structures import Category, PanopticResult

MODEL_TYPE = "panoptic"


def experiment_class() -> type:
    """The experiment config: ``model_type``, model, data, trainer, eval, and ``categories``
    (names and colours of the model's classes, taken from the training split when empty, so a
    checkpoint can name what it predicts)."""
    return make_dataclass("PanopticExperiment", [
        ("model_type", str, field(default=MODEL_TYPE)),
        ("model", PanopticConfig, field(default_factory=PanopticConfig)),
        ("data", PanopticDataConfig, field(default_factory=PanopticDataConfig)),
        ("trainer", TrainerConfig, field(default_factory=TrainerConfig)),
        ("eval", EvalConfig, field(default_factory=EvalConfig)),
        ("categories", tuple[Category, ...], field(default=())),
    ])


def split_dataset(cfg: Any, root: str | Path, split: str, train: bool = False,
                  max_items: int | None = None) -> PanopticSegDataset:
    """``split`` of ``root`` labelled in the order of the model's ``thing_ids`` / ``stuff_ids``;
    ``train`` turns on the flip augmentation of ``cfg.data``."""
    return PanopticSegDataset(root, split, cfg.data.resize, flip=train and cfg.data.flip,
                              cache=cfg.data.cache, max_items=max_items,
                              thing_ids=cfg.model.thing_ids, stuff_ids=cfg.model.stuff_ids)


# --- prediction and scoring -------------------------------------------------------------------

@torch.no_grad()
def predict_panoptic_split(model: PanopticModel, dataset: PanopticSegDataset, batch_size: int = 8,
                           progress: bool = True) -> dict[int, PanopticResult]:
    """``{image_id: PanopticResult}`` of every image of ``dataset``, id maps at the image's size."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_panoptic)
    results: dict[int, PanopticResult] = {}
    for batch in tqdm(loader, desc="predict", unit="batch", disable=not progress, leave=False):
        out = model.predict(batch["images"].to(device), batch["image_sizes"], batch["orig_sizes"])
        results.update(zip(batch["image_ids"], out))
    model.train(was_training)
    return results


def evaluate_panoptic(model: PanopticModel, dataset: PanopticSegDataset, pred_dir: str | Path,
                      batch_size: int = 8, progress: bool = True) -> dict:
    """Predict ``dataset``, write ``pred_dir/panoptic_<split>.json`` and the COCO panoptic PNGs
    in ``pred_dir/panoptic_<split>/``, and return the PQ of those files
    (:func:`metrics.files.score_panoptic`: ``{"All"|"Things"|"Stuff": {"pq", "sq", "rq", "n"},
    "per_class": ...}``)."""
    results = predict_panoptic_split(model, dataset, batch_size, progress)
    gt = _ground_truth(dataset)
    json_path = Path(pred_dir) / dataset.paths.panoptic_json.name
    png_dir = Path(pred_dir) / dataset.paths.panoptic_dir.name
    write_panoptic_predictions(json_path, png_dir, results, gt.images, gt.categories.values())
    return score_panoptic(gt, load_panoptic(json_path, png_dir, reference=gt))


def _ground_truth(dataset: PanopticSegDataset) -> PanopticDataset:
    """The split's ground truth restricted to the dataset's images (``max_items``)."""
    gt = dataset.panoptic
    if len(dataset.image_ids) == len(gt.annotations):
        return gt
    annotations = {i: gt.annotations[i] for i in dataset.image_ids}
    return PanopticDataset(gt.json_path, gt.png_dir, gt.images, annotations, gt.categories)


def flat_scores(scores: Mapping[str, Any]) -> dict[str, float]:
    """``{"pq", "sq", "rq", "pq_things", ..., "rq_stuff"}`` of a PQ result, for the metrics log."""
    out: dict[str, float] = {}
    for group, suffix in (("All", ""), ("Things", "_things"), ("Stuff", "_stuff")):
        for key in ("pq", "sq", "rq"):
            out[f"{key}{suffix}"] = float(scores[group][key])
    return out


# --- training and loading ---------------------------------------------------------------------

def train_panoptic(cfg: Any, resume: bool = False) -> dict[str, float]:
    """Train on ``cfg.data``'s train split, evaluating PQ on its val split every
    ``cfg.trainer.eval_every`` epochs; returns the last evaluation's :func:`flat_scores`."""
    data = cfg.data
    train_set = split_dataset(cfg, data.root, data.train_split, train=True,
                              max_items=data.max_items)
    val_set = split_dataset(cfg, data.root, data.val_split, max_items=cfg.eval.max_items)
    if not cfg.categories:
        found = sorted(train_set.panoptic.categories.values(), key=lambda c: c.id)
        cfg = dataclasses.replace(cfg, categories=tuple(found))
    seed_everything(cfg.trainer.seed)  # the initial weights are a function of the seed
    model = build_panoptic(cfg.model)

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        with tempfile.TemporaryDirectory() as tmp:
            return flat_scores(evaluate_panoptic(m, val_set, tmp, cfg.eval.batch_size,
                                                 progress=False))

    trainer = Trainer(model, train_set, collate_panoptic, cfg.trainer, evaluate,
                      model_type=MODEL_TYPE, experiment_config=config_to_dict(cfg))
    try:
        return trainer.fit(resume=resume)
    finally:
        cleanup_distributed()


def load_panoptic_model(checkpoint: str | Path, device: str | torch.device = "cpu"
                        ) -> tuple[PanopticModel, Any]:
    """A panoptic model (eval mode) and its experiment config from a checkpoint path or bundled
    name; a checkpoint of another model type is a ConfigError."""
    from groundkit.hub import resolve_checkpoint

    state, meta = load_checkpoint(resolve_checkpoint(checkpoint), expected_model_type=MODEL_TYPE)
    cfg = config_from_dict(experiment_class(), meta["config"], source=str(checkpoint))
    model = build_panoptic(cfg.model)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), cfg


def model_categories(cfg: Any) -> dict[int, Category]:
    """``{category_id: Category}`` of every class the model predicts: the checkpoint's own
    names and colours, or numbered names in distinct colours when it has none."""
    from groundkit.visualize import phrase_colors

    known = {c.id: c for c in cfg.categories}
    ids = [*cfg.model.thing_ids, *cfg.model.stuff_ids]
    colours = phrase_colors(len(ids))
    out = {}
    for k, cid in enumerate(ids):
        isthing = k < cfg.model.num_things
        out[cid] = known.get(cid) or Category(cid, f"{'thing' if isthing else 'stuff'} {cid}",
                                              isthing, colours[k])
    return out


# --- commands (parsed by groundkit.commands.evaluate / predict) -------------------------------

def evaluate_command(args: argparse.Namespace) -> int:
    """``groundkit evaluate`` of a panoptic checkpoint: print the PQ table of the written files."""
    from groundkit.api import default_device
    from groundkit.data.formats import write_scores
    from groundkit.metrics.report import pq_table

    model, cfg = load_panoptic_model(args.checkpoint, args.device or default_device())
    if getattr(args, "merge", None):
        model.cfg.merge = args.merge  # an inference option: the same weights, another merge
    dataset = split_dataset(cfg, args.data, args.split, max_items=args.max_items)
    keep = nullcontext(args.pred_out) if args.pred_out else tempfile.TemporaryDirectory()
    with keep as pred_dir:
        scores = evaluate_panoptic(model, dataset, pred_dir, args.batch_size)
    print(pq_table(scores, f"PANOPTIC on {args.data} [{args.split}], {len(dataset)} images; "
                           f"COCO panoptic API rules at the original image resolution"))
    if args.pred_out:
        print(f"predictions: {Path(pred_dir) / dataset.paths.panoptic_json.name} and "
              f"{Path(pred_dir) / dataset.paths.panoptic_dir.name}/")
    if args.json:
        write_scores(args.json, scores)
    return 0


def predict_command(args: argparse.Namespace) -> int:
    """``groundkit predict --task panoptic``: ``overlay.png``, ``panoptic.png``, ``result.json``."""
    from groundkit._io import write_json
    from groundkit.api import Segmenter, as_rgb
    from groundkit.data.formats import write_segment_png
    from groundkit.visualize import overlay_panoptic, save_image

    segmenter = Segmenter.from_pretrained(args.checkpoint or "panoptic-synthetic", args.device)
    image = as_rgb(args.image)
    result = segmenter.segment(image)
    out = Path(args.out)
    save_image(overlay_panoptic(image, result.id_map, result.segments_info, segmenter.categories),
               out / "overlay.png")
    write_segment_png(out / "panoptic.png", result.id_map)
    segments = [{**s, "category": segmenter.categories[s["category_id"]].name,
                 "area": int((result.id_map == s["id"]).sum())} for s in result.segments_info]
    write_json(out / "result.json", {"image": str(args.image), "height": image.shape[0],
                                     "width": image.shape[1], "segments_info": segments}, indent=2)
    for s in segments:
        print(f"segment {s['id']:3d}  {s['category']:12} score {s['score']:.3f}  "
              f"area {s['area']} px")
    print(f"wrote {out / 'overlay.png'}, {out / 'panoptic.png'} and {out / 'result.json'}")
    return 0
