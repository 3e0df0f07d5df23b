"""Labels on a picture, as detectron2's Visualizer puts them: each region named in small white
text on a box of its colour darkened, at the deepest point of the region (:func:`label_point`),
the largest regions first, never one label over another (:func:`place_labels`); a box's label at
its corner (:func:`corner_label`). The overlays of :mod:`groundkit.visualize` draw with these.

Pillow's built-in font and scipy's distance transform: nothing is downloaded or looked up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import distance_transform_edt
from scipy.ndimage import label as connected_components

RGB = tuple[int, int, int]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

WHITE: RGB = (255, 255, 255)


@dataclass(frozen=True)
class LabelItem:
    """A region that wants a label: its ``text``, the ``point (x, y)`` it names (see
    :func:`label_point`), its ``colour``, its ``area`` in pixels (larger regions are labelled
    first) and, when given, its ``mask (H, W) bool``: a label that must move stays on it if it
    can."""

    text: str
    point: tuple[int, int]
    colour: RGB
    area: int
    mask: np.ndarray | None = None


@dataclass(frozen=True)
class Label:
    """A label as drawn: ``box = (x0, y0, x1, y1)`` in the picture's pixels (x1, y1 exclusive),
    inside the picture and overlapping no other label's box."""

    text: str
    box: tuple[int, int, int, int]
    point: tuple[int, int]
    colour: RGB


def label_point(mask: np.ndarray) -> tuple[int, int] | None:
    """``(x, y)`` of the pixel of ``mask (H, W) bool`` farthest from its edge: where a label sits
    inside the region (a centroid can fall outside a ring or a crescent); None when empty."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return None
    depth = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(depth.argmax()), depth.shape)
    return int(x), int(y)


def place_labels(items: Sequence[LabelItem], size: tuple[int, int], font: Font | None = None
                 ) -> list[Label]:
    """Where the labels of ``items`` go on a picture of ``size = (H, W)``, as detectron2 places
    them, but never one over another: the largest regions first, each label centred on its
    point if that is free, else moved to the nearest free spot (on its region's mask first, when
    one is given), else left out. A region smaller than its label gets the label beside it
    (above, below, left or right of the region) rather than over it; a speck (under a quarter of
    a square of the label's height) gets none. Texts longer than 40 % of the width are shortened
    with "...". The labels never overlap one another and lie inside the picture.

    Returns the labels placed, in placing order (largest region first).
    """
    height, width = size
    font = font or label_font(width)
    placed: list[Label] = []
    for item in sorted(items, key=lambda it: -it.area):  # stable: equal areas keep their order
        text = shorten(item.text, max(48, round(0.4 * width)), font)
        w, h = _label_size(text, font)
        if w > width or h > height or 4 * item.area < h * h:
            continue
        taken = [label.box for label in placed]
        box = next((b for b in _candidates(item, w, h, size)
                    if not any(_overlap(b, other) for other in taken)), None)
        if box is not None:
            placed.append(Label(text, box, item.point, item.colour))
    return placed


def _candidates(item: LabelItem, w: int, h: int, size: tuple[int, int]
                ) -> list[tuple[int, int, int, int]]:
    """Boxes ``(x0, y0, x1, y1)`` a ``w x h`` label of ``item`` may take inside a picture of
    ``size = (H, W)``, best first. A region at least as large as its label: a grid around its
    point (steps of half a label's width and a label's height), on the mask first, nearest
    first. A smaller one: just outside the bounding box of the piece of it at its point, nearest
    first."""
    height, width = size
    cx, cy = item.point
    ranked: list[tuple[bool, float, int, int]] = []

    def add(x: float, y: float, off_mask: bool | None = None) -> None:  # (x, y): the centre
        x0 = int(np.clip(round(x - w / 2), 0, width - w))
        y0 = int(np.clip(round(y - h / 2), 0, height - h))
        if off_mask is None:
            off_mask = item.mask is not None and not item.mask[y0 + h // 2, x0 + w // 2]
        ranked.append((off_mask, math.hypot(x - cx, y - cy), x0, y0))

    if item.area >= w * h:
        for i in range(-4, 5):
            for j in range(-4, 5):
                add(cx + j * w / 2, cy + i * (h + 2))
    else:
        if item.mask is not None and item.mask[cy, cx]:  # the piece of the region at the point
            pieces, _ = connected_components(item.mask)
            rows, cols = np.nonzero(pieces == pieces[cy, cx])
            top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        else:
            top, bottom, left, right = cy, cy + 1, cx, cx + 1
        for k in (-1, 0, 1):
            add(cx + k * w / 2, top - 1 - h / 2, False)        # above
            add(cx + k * w / 2, bottom + 1 + h / 2, False)     # below
            add(left - 1 - w / 2, cy + k * (h + 2), False)     # left
            add(right + 1 + w / 2, cy + k * (h + 2), False)    # right
    return [(x0, y0, x0 + w, y0 + h) for _, _, x0, y0 in sorted(ranked)]


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int = 1) -> bool:
    """Whether boxes ``a`` and ``b`` (x0, y0, x1, y1; x1, y1 exclusive) come closer than
    ``gap`` pixels."""
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1]
                or b[3] + gap <= a[1])


def label_regions(picture: Image.Image, texts: Sequence[str], masks: Sequence[np.ndarray],
                  regions: Sequence[np.ndarray], colours: Sequence[RGB], factor: int
                  ) -> list[Label]:
    """Label each region on ``picture`` (in place) at its :func:`label_point`; returns the labels.

    masks: each region at the image's size (where the point is found, cheaper than upscaled);
    regions: the same ``factor`` times larger, at the picture's size."""
    font = label_font(picture.width)
    items = []
    for text, mask, region, colour in zip(texts, masks, regions, colours):
        point = label_point(mask)
        if point is not None and text:
            x, y = (v * factor + factor // 2 for v in point)
            items.append(LabelItem(text, (x, y), colour, int(region.sum()), region))
    placed = place_labels(items, (picture.height, picture.width), font)
    draw_labels(picture, placed, font)
    return placed


def corner_label(text: str, box: np.ndarray, colour: RGB, size: tuple[int, int],
                  font: Font) -> Label:
    """A label for ``box`` (xyxy, picture pixels) on a picture of ``size = (W, H)``: at its
    top-left corner, above the box when there is room, else just inside its top edge; always
    inside the picture."""
    width, height = size
    text = shorten(text, round(0.6 * width), font)
    w, h = _label_size(text, font)
    x0 = int(np.clip(round(box[0]), 0, max(0, width - w)))
    y0 = round(box[1]) - h
    if y0 < 0:
        y0 = int(np.clip(round(box[1]), 0, max(0, height - h)))
    return Label(text, (x0, y0, x0 + w, y0 + h), (round(box[0]), round(box[1])), colour)


def draw_labels(picture: Image.Image, labels: Sequence[Label], font: Font) -> None:
    """Each label as detectron2 draws one: small white text on a box of its region's colour
    darkened (readable on any background), framed in the colour itself."""
    draw = ImageDraw.Draw(picture, "RGBA")
    top, pad = font.getbbox("Ag")[1], _label_pad(font)
    for label in labels:
        x0, y0, x1, y1 = label.box
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=(*_label_fill(label.colour), 225),
                       outline=label.colour)
        draw.text((x0 + pad, y0 + pad - top), label.text, fill=WHITE, font=font)


def _label_fill(colour: RGB) -> RGB:
    """``colour`` darkened to at most 60 % and a luminance of at most 80, so white reads on it."""
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    scale = min(0.6, 80 / max(luminance, 1.0))
    return tuple(round(c * scale) for c in colour)  # type: ignore[return-value]


def label_font(width: int) -> Font:
    """Pillow's built-in font, smaller than the caption's: 12 to 18 pixels with the width."""
    return ImageFont.load_default(size=min(18, max(12, round(width / 42))))


def _label_pad(font: Font) -> int:
    return max(2, round(getattr(font, "size", 12) / 6))


def _label_size(text: str, font: Font) -> tuple[int, int]:
    """``(w, h)`` of the box of a label reading ``text``."""
    _, top, _, bottom = font.getbbox("Ag")
    pad = _label_pad(font)
    return math.ceil(font.getlength(text)) + 2 * pad, bottom - top + 2 * pad


def shorten(text: str, width: int, font: Font) -> str:
    """``text`` cut and ended with "..." so that it fits in ``width`` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."
