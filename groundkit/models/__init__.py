"""Model registry: ``model_type -> ModelSpec`` (config class, builder, task family, tiny settings).

A checkpoint records its ``model_type`` and config; :func:`build_model` rebuilds the module from
them, and the engine's task registry (:mod:`groundkit.engine.tasks`) finds the family that trains,
evaluates and loads it. Builders are imported lazily so that importing one model does not import
all of them.

Adding a model type is one entry here: the commands, the API and the parametrised model test
(``tests/models/test_registry.py``) pick it up from the registry.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from groundkit.errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    """Where a model type lives and what it is.

    module / config / builder: the module, its config dataclass and its ``build(cfg, **parts)``;
    family: the task family (``"grounding"``, ``"panoptic"``, ...) whose engine module trains it;
    tiny: model config values that make a model small enough for tests (applied together, so
    keys checked against each other, as detector levels and size limits, may change at once).
    """

    module: str
    config: str
    builder: str
    family: str
    tiny: Mapping[str, Any] = field(default_factory=dict)


_TINY_BACKBONE = {"backbone": {"depth": 18, "base_width": 8, "fpn_channels": 16, "weights": None,
                             "freeze": False}}

_REGISTRY: dict[str, ModelSpec] = {
    "ppmn": ModelSpec("groundkit.models.ppmn", "PPMNConfig", "build_ppmn", "grounding",
                      {**_TINY_BACKBONE, "neck_channels": 16, "hidden_dim": 16, "rounds": 1,
                       "top_pixels": 4, "heads": 2, "ffn_dim": 32}),
    "drmn": ModelSpec("groundkit.models.drmn", "DRMNConfig", "build_drmn", "grounding",
                      {**_TINY_BACKBONE, "hidden_dim": 16, "heads": 2, "ffn_dim": 32,
                       "encoder_layers": 1, "refine_rounds": 1, "top_k": 4}),
    "panoptic": ModelSpec("groundkit.models.panoptic", "PanopticConfig", "build_panoptic",
                          "panoptic",
                          {**_TINY_BACKBONE, "decoder_channels": 8, "decoder_convs": 1,
                           "affinity_channels": 8, "detector_convs": 1, "detector_levels": 3,
                           "size_limits": [32, 64], "stuff_area_min": 0,
                           "test_score_thresh": 0.0}),
    "pbrec": ModelSpec("groundkit.models.referring.pbrec", "PBRECConfig", "build_pbrec",
                       "referring",
                       {**_TINY_BACKBONE, "grid_stride": 8, "dim": 16, "layers": 1, "heads": 2,
                        "ffn_dim": 32, "detector_convs": 1, "mask_dim": 8, "mask_convs": 1,
                        "cell_colours": True}),
    # the bundled panoptic-synthetic (ResNet-18 / 16 wide, 0.8M parameters) gives the candidates
    "vlnms": ModelSpec("groundkit.models.referring.vlnms_model", "VLNMSConfig", "build_vlnms",
                       "referring",
                       {"visual_dim": 32, "dim": 16, "layers": 1, "heads": 2, "ffn_dim": 32,
                        "top_k": 5}),
    # a MAttNet-style matcher over ground-truth boxes (training) or proposals (inference)
    "matcher": ModelSpec("groundkit.models.referring.matcher_model", "MatcherConfig", "build_matcher",
                         "referring", {"visual_dim": 16, "dim": 16, "neighbours": 2, "top_k": 3}),
}


def model_types() -> list[str]:
    return sorted(_REGISTRY)


def families() -> list[str]:
    """The task families of the registered model types (no torch import: for ``--help``)."""
    return sorted({spec.family for spec in _REGISTRY.values()})


def model_spec_of(model_type: str) -> ModelSpec:
    """The registry entry of ``model_type``; a clear error for an unknown one."""
    if model_type not in _REGISTRY:
        raise ConfigError(f"unknown model_type {model_type!r}; expected one of {model_types()}")
    return _REGISTRY[model_type]


def model_spec(model_type: str) -> tuple[type, Callable[..., Any]]:
    """The config class and builder of a model type."""
    spec = model_spec_of(model_type)
    module = importlib.import_module(spec.module)
    return getattr(module, spec.config), getattr(module, spec.builder)


def load_trained(name_or_path: Any, model_type: str, role: str,
                 adjust: Callable[[Any], Any] | None = None, **parts: Any) -> Any:
    """A trained ``model_type`` from a groundkit checkpoint (a bundled name, a checkpoint folder or
    its weights file), frozen and in eval mode: a part another model stands on (the panoptic
    model two-stage referring takes candidates from, the VL-NMS model a matcher takes proposals
    from). The architecture comes from the checkpoint's own header, ``adjust(cfg)`` may change
    it (e.g. inference options) and ``parts`` go to the builder. ``role`` says in the error what
    the part is for; a checkpoint of another model type is a ConfigError."""
    from dataclasses import replace

    from groundkit.config import config_from_dict
    from groundkit.hub import checkpoint_header, resolve_weights_file
    from groundkit.vision.resnet import read_state_dict

    header = checkpoint_header(name_or_path)
    found = header.get("model_type")
    if found != model_type:
        raise ConfigError(f"{name_or_path}: expected a {model_type!r} checkpoint ({role}), got "
                          f"{'a ' + repr(found) if found else 'no'} model type")
    config_class, build = model_spec(model_type)
    cfg = config_from_dict(config_class, header.get("config", {}).get("model", {}),
                           source=str(name_or_path))
    backbone = getattr(cfg, "backbone", None)
    if backbone is not None:  # the checkpoint holds every weight: no starting file is read
        cfg = replace(cfg, backbone=replace(backbone, weights=None))
    model = build(adjust(cfg) if adjust else cfg, **parts)
    model.load_state_dict(read_state_dict(resolve_weights_file(name_or_path)), strict=True)
    model.requires_grad_(False)
    return model.eval()


def build_model(model_type: str, cfg: Any, **parts: Any) -> Any:
    """The module of ``model_type`` built from its config ``cfg`` and any shared ``parts`` the
    builder accepts (e.g. ``text_encoder=`` for grounding models, ``backbone=``)."""
    _, build = model_spec(model_type)
    return build(cfg, **parts)
