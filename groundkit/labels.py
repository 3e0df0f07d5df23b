"""Label values shared by the data pipeline and the models (no dependencies, so any layer may
import it)."""
from __future__ import annotations

IGNORE_LABEL = 255
"""Semantic label of the pixels no loss should see: VOID (no segment), padding, and grid cells that
no category covers enough. Written by the datasets, skipped by the semantic and panoptic losses."""
