"""The recall-curve figure is a readable PNG."""
import numpy as np
from PIL import Image

from groundkit.metrics.plots import plot_recall_curves
from groundkit.metrics.png_ar import THRESHOLDS, recall_curve


def test_writes_a_png(tmp_path):
    ious = np.random.default_rng(0).random(50)
    t = THRESHOLDS[::100]
    curves = {"overall": (t, recall_curve(ious, t)), "stuff": (t, recall_curve(ious[:0], t))}
    path = tmp_path / "sub" / "curves.png"
    plot_recall_curves(curves, path)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    assert [p.name for p in path.parent.iterdir()] == ["curves.png"]  # no temp file left
