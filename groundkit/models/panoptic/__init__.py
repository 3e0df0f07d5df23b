"""Unified panoptic segmentation (Li, Qi, Torr 2020): a semantic head, an FCOS detector, the dynamic
potential, the dense instance affinity and the panoptic matching loss, trained end to end; inference
is an argmax over the panoptic logits, no heuristics."""

from groundkit.models.panoptic.model import PanopticConfig, PanopticModel, build_panoptic, load_panoptic

__all__ = ["PanopticConfig", "PanopticModel", "build_panoptic", "load_panoptic"]
