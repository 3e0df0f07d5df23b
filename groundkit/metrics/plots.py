"""Recall against IoU threshold, one curve per split, as Figure 4 of the PNG papers."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from groundkit._io import atomic_path


def plot_recall_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path,
                       title: str = "Panoptic narrative grounding",
                       areas: Mapping[str, float] | None = None) -> None:
    """Draw ``{name: (thresholds (T,), recall (T,))}`` on one axis and save a PNG atomically.

    The legend gives each curve's area: ``areas[name]`` when given (the exact AR, where the curve
    is drawn from fewer thresholds), else the left Riemann sum of the drawn points (the AR of
    :mod:`groundkit.metrics.png_ar` when the official thresholds are given). Empty curves (NaN)
    are skipped.
    """
    # the Agg canvas on a bare Figure: no display, and no change to the user's pyplot backend
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, (thresholds, recall) in curves.items():
        thresholds, recall = np.asarray(thresholds), np.asarray(recall)
        if len(recall) == 0 or np.isnan(recall).all():
            continue
        area = (areas[name] if areas is not None and name in areas
                else float(np.sum(np.diff(thresholds) * recall[:-1])))
        ax.plot(thresholds, recall, label=f"{name} (AR {100 * area:.1f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="IoU threshold", ylabel="Recall", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
