"""Model registry: ``model_type -> (config class, builder)``.

A checkpoint records its ``model_type`` and config; :func:`build_model` rebuilds the module from
them. Builders are imported lazily so that importing one model does not import all of them.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from groundkit.errors import ConfigError

# model_type -> (module, config class name, builder name)
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "ppmn": ("groundkit.models.ppmn", "PPMNConfig", "build_ppmn"),
    "drmn": ("groundkit.models.drmn", "DRMNConfig", "build_drmn"),
    "panoptic": ("groundkit.models.panoptic", "PanopticConfig", "build_panoptic"),
}

GROUNDING_MODELS = ("ppmn", "drmn")


def model_types() -> list[str]:
    return sorted(_REGISTRY)


def model_spec(model_type: str) -> tuple[type, Callable[[Any], Any]]:
    """The config class and builder of a model type; a clear error for an unknown one."""
    if model_type not in _REGISTRY:
        raise ConfigError(f"unknown model_type {model_type!r}; expected one of {model_types()}")
    module_name, cfg_name, builder_name = _REGISTRY[model_type]
    module = importlib.import_module(module_name)
    return getattr(module, cfg_name), getattr(module, builder_name)
