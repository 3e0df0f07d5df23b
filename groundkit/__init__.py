"""groundkit: ground language in pixels.

Panoptic narrative grounding (PPMN, DRMN), panoptic segmentation and referring expressions on
PyTorch, with the field's exact metrics and data formats.
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {"Grounder": "groundkit.api", "Segmenter": "groundkit.api", "Referrer": "groundkit.api"}


def __getattr__(name: str):
    # The API pulls in torch and transformers; import it only when asked for.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'groundkit' has no attribute {name!r}")
