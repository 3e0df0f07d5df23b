"""Task families: one interface that every kind of model (grounding, panoptic, referring) plugs into.

A family is what the commands and the API need to know about a kind of model. Each is one engine
module with a :class:`Task` subclass (its experiment configs, datasets, prediction files, scores)
registered in :data:`FAMILIES`; each model type names its family in :mod:`groundkit.models`.
``groundkit train | evaluate | predict | demo`` look the family up and never switch on it.

The model surface every family's models share:

- ``model(batch)`` in train mode: a dict of scalar losses with the total under ``"loss"``;
- ``model(batch)`` in eval mode: one result per image (:attr:`Task.result_type`), at the
  ``orig_sizes`` of the batch;
- batches carry ``images (B, 3, H, W)``, ``image_sizes`` (each image inside the padding) and
  ``orig_sizes`` (the size results are returned at).

Adding a family: a module ``engine/<family>.py`` with a :class:`Task` subclass, one line in
:data:`FAMILIES`, its model types in ``models/__init__.py`` and its API class in ``api.py``.
"""
from __future__ import annotations

import importlib
import json
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from groundkit.config import config_from_dict, config_to_dict, override_config, update_config
from groundkit.engine.checkpoint import checkpoint_meta, load_checkpoint, seed_everything
from groundkit.engine.distributed import cleanup_distributed
from groundkit.engine.trainer import Trainer
from groundkit.errors import ConfigError, TrainingInterrupted
from groundkit.hub import resolve_checkpoint
from groundkit.models import build_model, model_spec_of, model_types

# family -> "module:class" of its Task (imported when first asked for)
FAMILIES: dict[str, str] = {
    "grounding": "groundkit.engine.grounding:GroundingTask",
    "panoptic": "groundkit.engine.panoptic:PanopticTask",
    "referring": "groundkit.engine.referring:ReferringTask",
}


TINY_TRAINER = ("trainer.epochs=1", "trainer.quiet=true", "trainer.tensorboard=false",
                "trainer.device=cpu")


@dataclass
class Case:
    """One item of a split with its ground truth beside its prediction (:meth:`Task.cases`), for
    galleries that show the worst cases first.

    truth / prediction: results of the family's :attr:`Task.result_type` at the image's size; the
    truth's scores are None. ious: ``(part, IoU)`` of every part the family's metric scores (a
    grounded phrase, a ground-truth segment, the box and the mask), in the item's order."""

    index: int          # position in the dataset
    label: str          # what the item is, for people ("image 2000001", "ref 20000010 ...")
    image: np.ndarray   # (H, W, 3) uint8
    truth: Any
    prediction: Any
    ious: list[tuple[str, float]]

    @property
    def mean_iou(self) -> float:
        """The mean of :attr:`ious` (NaN for an item with no scored part)."""
        return float(np.mean([v for _, v in self.ious])) if self.ious else float("nan")


@dataclass
class EvalConfig:
    """How evaluation runs during and after training."""

    batch_size: int = 8
    max_items: int | None = None   # evaluate on the first N items only (quick checks)


class Evaluation(ABC):
    """The scores of one split's prediction files, as a family reports them."""

    @abstractmethod
    def scores(self) -> dict[str, Any]:
        """The nested scores written by ``--json`` (fractions in [0, 1])."""

    @abstractmethod
    def table(self, title: str | None = None) -> str:
        """The table printed by ``groundkit evaluate`` (percentages)."""

    @abstractmethod
    def log_metrics(self) -> dict[str, float]:
        """Flat ``{name: value}`` for the training log (``eval/<name>``)."""

    def plot(self, path: str | Path) -> bool:
        """Draw the family's curves to ``path``; False when it has none."""
        return False

    @property
    def missing(self) -> int:
        """Ground-truth items that had no prediction (counted as failures)."""
        return 0


class Task(ABC):
    """The interface of a task family; subclasses are stateless and built once per process."""

    name: ClassVar[str]                 # the family: "grounding", "panoptic", ...
    api_class: ClassVar[str]            # its predictor in groundkit.api ("Grounder", ...)
    default_checkpoint: ClassVar[str]   # the bundled model ``groundkit predict`` uses by default
    result_type: ClassVar[type]         # what its models return per image in eval mode
    unit: ClassVar[str] = "items"       # what one dataset item is, for messages ("narratives")
    # The resolutions ``groundkit evaluate --protocol`` may score at ("ppmn": the grounding
    # family's PPMN protocol, ``score(..., ppmn_size=...)``).
    protocols: ClassVar[tuple[str, ...]] = ("original",)
    # True when every input has one size (letterboxed squares): a batch never pads one image
    # for another, so batch independence holds by construction.
    fixed_input_size: ClassVar[bool] = False
    # For pages that explain themselves (``groundkit demo``'s report): the task in a few words,
    # what its scores mean, and what the IoUs of :meth:`cases` are.
    heading: ClassVar[str] = ""
    metric_note: ClassVar[str] = ""
    case_note: ClassVar[str] = ""

    # --- configs and models ------------------------------------------------------------------

    @abstractmethod
    def experiment_class(self, model_type: str) -> type:
        """The declared experiment dataclass of ``model_type``: ``model_type``, ``model``,
        ``data``, ``trainer``, ``eval`` and what else the family needs."""

    def build_model(self, cfg: Any, **parts: Any) -> torch.nn.Module:
        """The model of an experiment config, from parts another model may own (``parts``)."""
        return build_model(cfg.model_type, cfg.model, **parts)

    def input_size_overrides(self, size: int) -> list[str]:
        """``key=value`` overrides of the data config that size images to about ``size`` pixels
        (the resize of most families: short side ``size``, long side at most ``size``)."""
        return [f"data.resize.short_side={size}", f"data.resize.max_size={size}"]

    def tiny_overrides(self, model_type: str) -> list[str]:
        """``key=value`` overrides of the experiment that make ``model_type`` tiny (64 px inputs)
        and its training one quiet CPU epoch (tests, smoke runs)."""
        tiny = json.dumps(dict(model_spec_of(model_type).tiny))  # JSON is YAML: one override
        return [f"model={tiny}", *self.input_size_overrides(64), *TINY_TRAINER]

    # --- data --------------------------------------------------------------------------------

    @abstractmethod
    def dataset(self, cfg: Any, root: str | Path, split: str, *, train: bool = False,
                max_items: int | None = None, cache: bool = False) -> Dataset:
        """Split ``split`` of the folder ``root``; ``train`` adds training targets/augmentation."""

    @abstractmethod
    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """A padded batch of the model surface from dataset items."""

    # --- prediction and scoring --------------------------------------------------------------

    @abstractmethod
    def predict(self, model: torch.nn.Module, dataset: Dataset, pred_dir: str | Path,
                batch_size: int = 8, progress: bool = True, workers: int = 0) -> list[Path]:
        """Predict every item of ``dataset`` and write the field's prediction files into
        ``pred_dir``; returns their paths. ``workers``: loader processes reading the items
        (:func:`predicted_batches`)."""

    @abstractmethod
    def score(self, dataset: Dataset, pred_dir: str | Path) -> Evaluation:
        """Score the prediction files in ``pred_dir`` against ``dataset``'s ground truth."""

    @abstractmethod
    def results(self, dataset: Dataset, pred_dir: str | Path
                ) -> Iterator[tuple[np.ndarray, Any]]:
        """``(image (H, W, 3) uint8, result)`` of every item, read back from the prediction
        files, in dataset order (for galleries)."""

    @abstractmethod
    def cases(self, dataset: Dataset, pred_dir: str | Path) -> Iterator[Case]:
        """Every item of ``dataset`` as a :class:`Case`: its ground truth and its prediction (read
        back from the files in ``pred_dir``) and the IoU of each of its parts, in dataset order."""

    def evaluate(self, model: torch.nn.Module, dataset: Dataset, batch_size: int = 8,
                 progress: bool = True, pred_dir: str | Path | None = None) -> Evaluation:
        """:meth:`predict` then :meth:`score`: the printed scores are those of the files.
        ``pred_dir`` keeps the files (default: a temporary folder)."""
        if pred_dir is not None:
            self.predict(model, dataset, pred_dir, batch_size, progress)
            return self.score(dataset, pred_dir)
        with tempfile.TemporaryDirectory() as tmp:
            return self.evaluate(model, dataset, batch_size, progress, tmp)

    def title(self, cfg: Any, root: str | Path, split: str, dataset: Dataset) -> str:
        """The heading of an evaluation table."""
        return f"{cfg.model_type.upper()} on {root} [{split}], {len(dataset)} {self.unit}"

    # --- training and checkpoints ------------------------------------------------------------

    def prepare(self, cfg: Any, train_set: Dataset) -> Any:
        """Check ``cfg`` against the training data, or fill in what it takes from it."""
        return cfg

    def prepare_model(self, model: torch.nn.Module, dataset: Dataset) -> None:
        """Work done once before a model runs over ``dataset`` (training's first epoch, a
        prediction): e.g. caching the frozen text features of all its captions at once."""

    def train(self, cfg: Any, resume: bool = False) -> dict[str, float]:
        """Train on ``cfg.data``'s train split, evaluating on its val split every
        ``cfg.trainer.eval_every`` epochs; returns the last evaluation's log metrics."""
        data = cfg.data
        train_set = self.dataset(cfg, data.root, data.train_split, train=True,
                                 max_items=data.max_items, cache=data.cache)
        val_set = self.dataset(cfg, data.root, data.val_split, max_items=cfg.eval.max_items,
                               cache=data.cache)
        for name, split, dataset in (("data.train_split", data.train_split, train_set),
                                     ("data.val_split", data.val_split, val_set)):
            if len(dataset) == 0:  # found now, not after the training it would end
                raise ConfigError(f"{name}: the split '{split}' of {data.root} has no items to "
                                  f"{'train on' if dataset is train_set else 'evaluate on'}")
        cfg = self.prepare(cfg, train_set)
        seed_everything(cfg.trainer.seed)  # the initial weights are a function of the seed
        model = self.build_model(cfg)

        def evaluate(m: torch.nn.Module) -> dict[str, float]:
            return self.evaluate(m, val_set, cfg.eval.batch_size, progress=False).log_metrics()

        trainer = Trainer(model, train_set, self.collate, cfg.trainer, evaluate,
                          model_type=cfg.model_type, experiment_config=config_to_dict(cfg))
        self.prepare_model(model, train_set)  # on the trainer's device: a GPU encodes text faster
        try:
            metrics = trainer.fit(resume=resume)
        except TrainingInterrupted:  # every rank stopped after the same step
            cleanup_distributed()
            raise
        except BaseException:  # a failed rank may never reach the barrier
            cleanup_distributed(synchronize=False)
            raise
        cleanup_distributed()
        return metrics

    def load(self, checkpoint: str | Path, device: str | torch.device = "cpu",
             **parts: Any) -> tuple[torch.nn.Module, Any]:
        """A model (eval mode) and its experiment config from a checkpoint path or bundled name;
        a checkpoint of another family is a ConfigError."""
        state, meta = load_checkpoint(resolve_checkpoint(checkpoint))
        model_type = meta.get("model_type")
        check_family(model_type, self.name, str(checkpoint))
        cfg = config_from_dict(self.experiment_class(model_type), meta["config"],
                               source=str(checkpoint))
        model = self.build_model(without_initial_weights(cfg), **parts)
        model.load_state_dict(state, strict=True)
        return place_for_inference(model, device), cfg

    def set_inference_options(self, model: torch.nn.Module,
                              options: Sequence[str] | Mapping[str, Any]) -> None:
        """Apply overrides of the model config that change inference only: ``key=value`` texts
        (e.g. ``merge=heuristic``) or a mapping (``{"merge": "heuristic"}``); an unknown key is a
        ConfigError that suggests one."""
        if isinstance(options, Mapping):
            model.cfg = update_config(model.cfg, options, source="inference options")
        else:
            model.cfg = override_config(model.cfg, options)


def place_for_inference(model: torch.nn.Module, device: str | torch.device) -> torch.nn.Module:
    """``model`` on ``device`` in eval mode; on the CPU with its convolution weights in
    channels-last layout, oneDNN's own, which the activations then follow: an 800 x 1333 image
    1.2-1.6x faster on two cores, 128 px batches 1.0-1.2x (docs/gpu.md). The same results up to
    float rounding. CUDA keeps the default layout (not measured there). Used by :meth:`Task.load`
    (so by evaluate and the predictors' ``from_pretrained``), never on a model a caller hands
    over: one in training would keep optimizer moments in the old layout, which torch's fused
    Adam then pairs with the wrong elements (docs/training.md)."""
    model = model.to(device).eval()
    if torch.device(device).type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    return model


def predicted_batches(model: torch.nn.Module, dataset: Dataset,
                      collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
                      batch_size: int = 8, progress: bool = True, workers: int = 0
                      ) -> Iterator[tuple[dict[str, Any], list[Any]]]:
    """``(batch, results)`` of every batch of ``dataset`` in order, the model in eval mode under
    ``no_grad`` (its train mode is restored afterwards): the prediction loop of every family.
    ``workers`` > 0 reads and collates the items in that many processes while the model runs
    (worth it beside a GPU; on a CPU they compete with the model for the cores)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    # Page-locked batches on CUDA: the copy to the GPU runs asynchronously.
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                        pin_memory=device.type == "cuda", num_workers=workers)
    try:
        for batch in tqdm(loader, desc="predict", unit="batch", disable=not progress, leave=False):
            batch["images"] = batch["images"].to(device, non_blocking=True)
            with torch.no_grad():
                results = model(batch)
            yield batch, results
    finally:
        model.train(was_training)


def without_initial_weights(cfg: Any) -> Any:
    """``cfg`` with ``model.backbone.weights`` cleared: a checkpoint holds every weight, so the
    file its backbone started from (kept in the saved config as a record) is neither read nor
    needed on this machine."""
    backbone = getattr(cfg.model, "backbone", None)
    if backbone is None or not getattr(backbone, "weights", None):
        return cfg
    return replace(cfg, model=replace(cfg.model, backbone=replace(backbone, weights=None)))


def check_family(model_type: Any, family: str, source: str) -> None:
    """A ConfigError unless ``model_type`` is a registered model of ``family``."""
    if model_type not in model_types():
        raise ConfigError(f"{source}: model_type: expected one of {model_types()}, "
                          f"got {model_type!r}")
    found = model_spec_of(model_type).family
    if found != family:
        members = [m for m in model_types() if model_spec_of(m).family == family]
        raise ConfigError(f"{source}: a {model_type!r} checkpoint ({found}) is not a {family} "
                          f"model; expected a {family!r} model: one of {members}")


def get_task(family: str) -> Task:
    """The :class:`Task` of a family name."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown task family {family!r}; expected one of {sorted(FAMILIES)}")
    module, cls = FAMILIES[family].split(":")
    return getattr(importlib.import_module(module), cls)()


def task_of(model_type: Any, source: str = "config") -> Task:
    """The :class:`Task` that trains and evaluates ``model_type``."""
    if model_type not in model_types():
        raise ConfigError(f"{source}: model_type: expected one of {model_types()}, "
                          f"got {model_type!r}")
    return get_task(model_spec_of(model_type).family)


def task_of_checkpoint(checkpoint: str | Path) -> Task:
    """The :class:`Task` of the model saved in ``checkpoint`` (path or bundled name); reads only
    the checkpoint's header."""
    meta = checkpoint_meta(resolve_checkpoint(checkpoint))
    return task_of(meta.get("model_type"), source=str(checkpoint))
