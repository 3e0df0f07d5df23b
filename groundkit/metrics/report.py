"""Tables and figures of scores, shared by ``score``, ``evaluate`` and ``demo``.

Scores are fractions in [0, 1]; tables print percentages.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

PNG_SPLITS = ("overall", "things", "stuff", "singulars", "plurals")


def pct(x: float | None) -> str:
    return "   n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:6.2f}"


def png_table(scores: Mapping[str, Mapping[str, Any]], title: str | None = None) -> str:
    """The PNG Average Recall table (overall / things / stuff / singulars / plurals)."""
    lines = [title or "PNG Average Recall (IoU at the original image resolution)",
             f"{'split':<10} {'AR':>6} {'acc@0.5':>8} {'n':>8}"]
    for name in PNG_SPLITS:
        s = scores[name]
        lines.append(f"{name:<10} {pct(s['ar'])} {pct(s['acc@0.5']):>8} {s['n']:>8}")
    return "\n".join(lines)


def pq_table(scores: Mapping[str, Mapping[str, Any]], title: str | None = None) -> str:
    """The PQ / SQ / RQ table (All / Things / Stuff)."""
    lines = [title or "Panoptic Quality (COCO panoptic API rules)",
             f"{'':<8} {'PQ':>6} {'SQ':>6} {'RQ':>6} {'n':>5}"]
    for name in ("All", "Things", "Stuff"):
        s = scores[name]
        lines.append(f"{name:<8} {pct(s['pq'])} {pct(s['sq'])} {pct(s['rq'])} {s['n']:>5}")
    return "\n".join(lines)


def plot_png_recall(phrases: Any, path: str | Path) -> None:
    """Recall-vs-IoU curves of every PNG split (the papers' Figure 4) from ``PhraseIoUs``."""
    from groundkit.metrics.plots import plot_recall_curves
    from groundkit.metrics.png_ar import THRESHOLDS, recall_curve, split_masks

    t = THRESHOLDS[::100]  # 1,000 points draw the same curve as 100,000, not the same area
    curves = {name: (t, recall_curve(phrases.ious[sel], t))
              for name, sel in split_masks(phrases.is_thing, phrases.num_segments).items()}
    areas = {name: s["ar"] for name, s in phrases.scores().items()}  # the legend's ARs: the table's
    plot_recall_curves(curves, path, areas=areas)
