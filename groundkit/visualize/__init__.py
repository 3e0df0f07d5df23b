"""Pictures people look at instead of reading numbers.

* :func:`overlay_grounding`: each phrase's mask tinted in its own colour over the image, and the
  caption below with each phrase written in that colour, so colours match phrases at a glance;
* :func:`overlay_panoptic`: a panoptic map over the image with a legend of the categories present,
  one swatch per colour drawn;
* :func:`overlay_referring`: the referent's mask and box, the proposals it was chosen among drawn
  faintly, and the expression below;
* labels on the image, as detectron2's Visualizer puts them: each phrase or segment named in small
  white text on a box of its colour darkened, at the deepest point of its region, the largest
  regions first, never one label over another (:func:`place_labels`; a picture's labels are in
  ``picture.info["labels"]``). Every region's tint is painted before any outline, so an outline
  stays visible under another region's tint, and labels come last;
* :func:`contact_sheet`: many such pictures on one page; :func:`save_image` writes a PNG atomically;
* :func:`region_layer` and :func:`label_point`: one mask as a transparent layer, and where its
  label goes, for views that show or highlight the parts of a result one at a time (the web app).

Pillow and numpy (the labels: :mod:`groundkit.visualize.labels`); text uses Pillow's built-in
font, so nothing is downloaded or looked up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from groundkit._io import atomic_path
from groundkit.data.images import to_rgb_array
from groundkit.errors import InputError
from groundkit.ops.masks import erode
from groundkit.structures import Category
from groundkit.visualize.labels import (
    RGB,
    WHITE,
    Font,
    Label,
    LabelItem,
    corner_label,
    draw_labels,
    label_font,
    label_point,
    label_regions,
    place_labels,
    shorten,
)

__all__ = [
    "ALPHA", "MIN_WIDTH", "Label", "LabelItem", "contact_sheet", "label_point", "overlay_grounding",
    "overlay_panoptic", "overlay_referring", "phrase_colors", "place_labels", "region_layer",
    "save_image", "segment_colours",
]

# Saturated, far apart in hue, and dark enough to read as text on white (hence no yellow or cyan).
_PALETTE: tuple[RGB, ...] = (
    (230, 25, 75), (0, 110, 230), (30, 160, 50), (245, 120, 0), (145, 40, 205),
    (0, 160, 160), (225, 30, 185), (140, 90, 20), (110, 140, 0), (25, 40, 150),
)
_TEXT: RGB = (64, 64, 64)  # caption words that are no phrase, legend names
MIN_WIDTH = 384  # narrower images are upscaled (nearest) so that the text below stays readable
ALPHA = 0.5  # opacity of a mask's tint


@dataclass
class _Run:
    """A piece of text of one colour; style "underline" marks phrases, "swatch" is a colour box."""

    text: str
    colour: RGB
    style: str = "plain"


def phrase_colors(n: int) -> list[RGB]:
    """``n`` clearly distinct saturated colours: a fixed palette of 10, cycled for more phrases."""
    if n < 0:
        raise InputError(f"phrase_colors: n must be >= 0, got {n}")
    return [_PALETTE[i % len(_PALETTE)] for i in range(n)]


# --- grounding -----------------------------------------------------------------------------------

def overlay_grounding(image: np.ndarray, caption: str, spans: Sequence[tuple[int, int]],
                      masks: np.ndarray, scores: np.ndarray | None = None,
                      labels: bool = True) -> Image.Image:
    """The image with phrase ``k``'s mask tinted and outlined in colour ``k``, caption below.

    image: ``(H, W, 3) uint8`` (any form :func:`~groundkit.data.images.to_rgb_array` takes);
    spans: N ``[start, end)`` character spans of the phrases in ``caption``;
    masks: ``(N, H, W) bool``; scores: ``(N,)`` or None, written after each phrase when given;
    labels: each phrase (shortened) written on its region (``picture.info["labels"]``).
    Tints blend in phrase order, then every outline is drawn over all tints. Images narrower
    than :data:`MIN_WIDTH` are upscaled by an integer factor (nearest), so a 128-pixel image
    becomes 384 pixels wide.
    """
    rgb = to_rgb_array(image)
    masks, spans, scores = _check_grounding(rgb.shape[:2], caption, spans, masks, scores)
    factor = _upscale_factor(rgb.shape[1])
    canvas = _upscale(rgb, factor)
    colours = phrase_colors(len(spans))
    regions = [_upscale(mask, factor) for mask in masks]
    _paint_regions(canvas, regions, colours)
    picture = Image.fromarray(canvas)
    placed = label_regions(picture, [" ".join(caption[s:e].split()) for s, e in spans], masks,
                            regions, colours, factor) if labels else []
    font = _font(canvas.shape[1])
    panel = _text_panel(_caption_words(caption, spans, colours, scores), canvas.shape[1], font)
    return _stack(picture, panel, placed)


def _check_grounding(size: tuple[int, int], caption: str, spans: Sequence[tuple[int, int]],
                     masks: np.ndarray, scores: np.ndarray | None,
                     ) -> tuple[np.ndarray, list[tuple[int, int]], np.ndarray | None]:
    if not isinstance(caption, str):
        raise InputError(f"overlay_grounding: caption must be a string, "
                         f"got {type(caption).__name__}")
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[1:] != size:
        raise InputError(f"overlay_grounding: masks must be (N, {size[0]}, {size[1]}) to match the "
                         f"image, got shape {tuple(masks.shape)}")
    if not (masks.dtype == np.bool_ or np.issubdtype(masks.dtype, np.integer)):
        raise InputError(f"overlay_grounding: masks must be boolean (threshold probabilities "
                         f"first), got {masks.dtype}")
    spans = [(int(s), int(e)) for s, e in spans]
    if len(spans) != len(masks):
        raise InputError(f"overlay_grounding: {len(spans)} spans for {len(masks)} masks")
    for k, (start, end) in enumerate(spans):
        if not 0 <= start < end <= len(caption):
            raise InputError(f"overlay_grounding: span {k} ({start}, {end}) is not a non-empty "
                             f"range inside the caption of {len(caption)} characters")
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (len(masks),):
            raise InputError(f"overlay_grounding: scores must have shape ({len(masks)},), "
                             f"got {tuple(scores.shape)}")
    return masks.astype(bool), spans, scores


def _caption_words(caption: str, spans: list[tuple[int, int]], colours: list[RGB],
                   scores: np.ndarray | None) -> list[list[_Run]]:
    """The caption cut into words (trailing spaces kept), each a list of styled runs."""
    owner = np.full(len(caption), -1)
    for k, (start, end) in enumerate(spans):
        owner[start:end] = k  # overlapping spans: the later phrase wins, as its mask does
    chars: list[tuple[str, RGB, str]] = []
    for i, ch in enumerate(caption):
        k = int(owner[i])
        chars.append((" " if ch.isspace() else ch, _TEXT if k < 0 else colours[k],
                      "plain" if k < 0 else "underline"))
        ends_phrase = k >= 0 and (i + 1 == len(caption) or owner[i + 1] != k)
        if scores is not None and ends_phrase and i + 1 == spans[k][1]:
            chars += [(c, colours[k], "plain") for c in f" ({scores[k]:.2f})"]
    words: list[list[tuple[str, RGB, str]]] = []
    for ch in chars:
        if not words or (ch[0] != " " and words[-1][-1][0] == " "):
            words.append([])
        words[-1].append(ch)
    return [_merge_runs(w) for w in words]


def _merge_runs(chars: list[tuple[str, RGB, str]]) -> list[_Run]:
    runs: list[_Run] = []
    for text, colour, style in chars:
        if runs and runs[-1].colour == colour and runs[-1].style == style:
            runs[-1].text += text
        else:
            runs.append(_Run(text, colour, style))
    return runs


# --- panoptic ------------------------------------------------------------------------------------

def overlay_panoptic(image: np.ndarray, id_map: np.ndarray,
                     segments_info: Sequence[Mapping[str, Any]],
                     categories: Mapping[int, Category], labels: bool = True) -> Image.Image:
    """The image with every segment tinted and outlined, and a legend of its categories below.

    id_map: ``(H, W) int`` segment ids (0 = void, left untinted); segments_info: detectron2's
    ``[{"id", "category_id", ...}]``; categories: by id; labels: each segment's category name
    written on it (``picture.info["labels"]``). Stuff segments take their category's colour;
    thing instances a per-instance variation of it (:func:`segment_colours`), so that neighbours
    can be told apart. The legend has a swatch for every colour drawn: a category's instances
    side by side, then its name and count.
    """
    rgb = to_rgb_array(image)
    ids = np.asarray(id_map)
    if ids.shape != rgb.shape[:2] or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"overlay_panoptic: id_map must be an integer ({rgb.shape[0]}, "
                         f"{rgb.shape[1]}) array to match the image, got {ids.dtype} "
                         f"{tuple(ids.shape)}")
    segments = _check_segments(ids, segments_info, categories)
    factor = _upscale_factor(rgb.shape[1])
    canvas = _upscale(rgb, factor)
    colours = _segment_colours(segments)
    regions = [_upscale(ids == segment_id, factor) for segment_id, _ in segments]
    _paint_regions(canvas, regions, colours)
    picture = Image.fromarray(canvas)
    placed = label_regions(picture, [category.name for _, category in segments],
                            [ids == segment_id for segment_id, _ in segments], regions, colours,
                            factor) if labels else []
    font = _font(canvas.shape[1])
    legend = _text_panel(_legend(segments, colours, font), canvas.shape[1], font)
    return _stack(picture, legend, placed)


def overlay_referring(image: np.ndarray, expression: str, box: np.ndarray,
                      mask: np.ndarray | None = None, proposals: np.ndarray | None = None,
                      score: float | None = None, labels: bool = True) -> Image.Image:
    """The image with the referent's mask tinted, its box drawn, the ``proposals`` it was chosen
    among drawn thin and faint (as PBREC's Fig. 4), and the expression below in the box's colour.

    box: ``(4,)`` xyxy pixels; mask: ``(H, W) bool`` or None; proposals: ``(k, 4)`` or None;
    labels: the expression (shortened) on a label at the box's top-left corner, above the box
    when there is room, else just inside it (``picture.info["labels"]``).
    """
    rgb = to_rgb_array(image)
    box = np.asarray(box, dtype=np.float64).reshape(-1)
    if box.shape != (4,) or not np.isfinite(box).all():
        raise InputError(f"overlay_referring: box must be 4 finite numbers, got {box.tolist()}")
    if mask is not None and np.asarray(mask).shape != rgb.shape[:2]:
        raise InputError(f"overlay_referring: mask must have the image's shape {rgb.shape[:2]}, "
                         f"got {np.asarray(mask).shape}")
    factor = _upscale_factor(rgb.shape[1])
    canvas = _upscale(rgb, factor)
    colour, faint = _PALETTE[0], _PALETTE[1]
    if mask is not None:
        _paint_regions(canvas, [_upscale(np.asarray(mask, bool), factor)], [colour])
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture, "RGBA")
    for p in [] if proposals is None else np.asarray(proposals, dtype=np.float64).reshape(-1, 4):
        draw.rectangle((p * factor).tolist(), outline=(*faint, 110), width=1)
    draw.rectangle((box * factor).tolist(), outline=colour, width=max(2, factor))
    placed = []
    if labels:
        placed = [corner_label(" ".join(expression.split()), box * factor, colour,
                                picture.size, label_font(picture.width))]
        draw_labels(picture, placed, label_font(picture.width))
    text = expression if score is None else f"{expression} ({score:.2f})"
    font = _font(canvas.shape[1])
    return _stack(picture, _text_panel([[_Run(text, colour, "underline")]], canvas.shape[1], font),
                  placed)


def _check_segments(ids: np.ndarray, segments_info: Sequence[Mapping[str, Any]],
                    categories: Mapping[int, Category]) -> list[tuple[int, Category]]:
    segments = []
    for k, info in enumerate(segments_info):
        if "id" not in info or "category_id" not in info:
            raise InputError(f"overlay_panoptic: segments_info[{k}] needs 'id' and 'category_id', "
                             f"has {sorted(info)}")
        if info["category_id"] not in categories:
            raise InputError(f"overlay_panoptic: segments_info[{k}] (segment {info['id']}): "
                             f"category_id {info['category_id']} is not a known category")
        segments.append((int(info["id"]), categories[info["category_id"]]))
    unlisted = set(np.unique(ids).tolist()) - {0} - {s for s, _ in segments}
    if unlisted:
        raise InputError(f"overlay_panoptic: id_map has segment id {min(unlisted)}, which "
                         f"segments_info does not list")
    return segments


def segment_colours(segments_info: Sequence[Mapping[str, Any]],
                    categories: Mapping[int, Category]) -> list[RGB]:
    """The colour :func:`overlay_panoptic` tints each segment of ``segments_info`` with (each has
    a swatch of exactly this colour in its legend)."""
    return _segment_colours([(int(s["id"]), categories[s["category_id"]]) for s in segments_info])


def _segment_colours(segments: list[tuple[int, Category]]) -> list[RGB]:
    """Stuff: its category colour; thing instance r of a category: a fixed jitter of it (none for
    r = 0, so the first instance matches the legend swatch exactly)."""
    seen: dict[int, int] = {}
    colours = []
    for _, category in segments:
        rank = seen[category.id] = seen.get(category.id, -1) + 1
        colour = np.array(category.color)
        if category.isthing and rank > 0:  # a step of fixed length in a random RGB direction
            step = np.random.default_rng([category.id, rank]).normal(size=3)
            colour = colour + 90 * step / np.linalg.norm(step)
        colours.append(tuple(int(c) for c in colour.round().clip(0, 255)))
    return colours


def _legend(segments: list[tuple[int, Category]], colours: list[RGB],
            font: Font) -> list[list[_Run]]:
    """Per category present, in id order: a swatch of every colour its segments are drawn in
    (one for stuff; its instances' side by side for things), then the name (and count).

    A long row of swatches is cut into items of at most a dozen, so that it can wrap."""
    drawn: dict[int, list[RGB]] = {}
    counts: dict[int, int] = {}
    by_id = {c.id: c for _, c in segments}
    for (_, category), colour in zip(segments, colours):
        counts[category.id] = counts.get(category.id, 0) + 1
        if colour not in drawn.setdefault(category.id, []):
            drawn[category.id].append(colour)
    items = []
    for cid in sorted(counts):
        category = by_id[cid]
        name = f"{category.name} ({counts[cid]})" if category.isthing and counts[cid] > 1 \
            else category.name
        style = "swatch" if len(drawn[cid]) == 1 else "chip"
        chips = [_Run("", c, style) for c in drawn[cid]]
        groups = [chips[i:i + 12] for i in range(0, len(chips), 12)]
        items += groups[:-1]
        items.append([*groups[-1], _Run(f" {name}    ", _TEXT)])
    return items


# --- one part at a time -------------------------------------------------------------------------

def region_layer(size: tuple[int, int], colour: RGB, mask: np.ndarray | None = None,
                 box: Sequence[float] | None = None) -> Image.Image:
    """An RGBA layer ``size = (H, W)``, clear but for ``mask (H, W) bool`` tinted and outlined as
    the overlays draw it, and ``box`` (xyxy pixels) outlined: laid over the image, it looks like
    that part of the overlay alone."""
    h, w = size
    layer = np.zeros((h, w, 4), np.uint8)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != (h, w):
            raise InputError(f"region_layer: mask must have shape {(h, w)}, got {mask.shape}")
        layer[mask] = (*colour, round(255 * ALPHA))
        layer[mask & ~erode(mask, max(1, w // 640))] = (*colour, 255)
    picture = Image.fromarray(layer, "RGBA")
    if box is not None:
        ImageDraw.Draw(picture).rectangle([float(v) for v in box], outline=(*colour, 255),
                                          width=max(1, w // 160))
    return picture


# --- contact sheet and files ---------------------------------------------------------------------

def contact_sheet(images: Sequence[Image.Image], columns: int = 3,
                  titles: Sequence[str] | None = None) -> Image.Image:
    """The images on a white page, ``columns`` per row, each centred in a cell of the largest size.

    titles: one per image (or None), written above it and shortened with "..." when too long.
    """
    if not images:
        raise InputError("contact_sheet: no images")
    if columns < 1:
        raise InputError(f"contact_sheet: columns must be >= 1, got {columns}")
    if titles is not None and len(titles) != len(images):
        raise InputError(f"contact_sheet: {len(titles)} titles for {len(images)} images")
    cell_w, cell_h = max(im.width for im in images), max(im.height for im in images)
    font = _font(min(cell_w, 640))
    title_h = _line_height(font) if titles is not None else 0
    pad = max(8, _line_height(font) // 2)
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    size = (pad + columns * (cell_w + pad), pad + rows * (title_h + cell_h + pad))
    sheet = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(sheet)
    for i, im in enumerate(images):
        x0 = pad + (i % columns) * (cell_w + pad)
        y0 = pad + (i // columns) * (title_h + cell_h + pad)
        if titles is not None:
            draw.text((x0 + cell_w // 2, y0), shorten(str(titles[i]), cell_w, font), fill=_TEXT,
                      font=font, anchor="ma")
        sheet.paste(im.convert("RGB"), (x0 + (cell_w - im.width) // 2, y0 + title_h))
    return sheet


def save_image(image: Image.Image, path: str | Path) -> None:
    """Write ``image`` to ``path`` as PNG atomically (a crash leaves no half-written file)."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


# --- drawing helpers -----------------------------------------------------------------------------

def _upscale_factor(width: int) -> int:
    return max(1, math.ceil(MIN_WIDTH / width))


def _upscale(array: np.ndarray, factor: int) -> np.ndarray:
    """Nearest upscaling of the first two axes of ``(H, W, ...)`` by an integer ``factor``; always
    a new array, as the overlays paint on it (never on the caller's image)."""
    return array.copy() if factor == 1 else array.repeat(factor, axis=0).repeat(factor, axis=1)


def _paint_regions(canvas: np.ndarray, masks: Sequence[np.ndarray], colours: Sequence[RGB]
                   ) -> None:
    """Tint ``canvas (H, W, 3) uint8`` in place inside each ``mask (H, W) bool``, in order, then
    outline every mask opaque over all the tints: no region's tint hides another's outline.

    An outline lies inside its mask, 1 pixel wide per 640 pixels of width (at least 1).
    """
    for mask, colour in zip(masks, colours):
        tint = canvas[mask].astype(np.float64) * (1 - ALPHA) + np.array(colour) * ALPHA
        canvas[mask] = tint.round().astype(np.uint8)
    width = max(1, canvas.shape[1] // 640)
    for mask, colour in zip(masks, colours):
        canvas[mask & ~erode(mask, width)] = colour


def _font(width: int) -> Font:
    """Pillow's built-in font at a size that grows with the picture width (14 to 28 pixels)."""
    return ImageFont.load_default(size=min(28, max(14, round(width / 36))))


def _line_height(font: Font) -> int:
    return round(font.getbbox("Ag")[3] * 1.4)


def _run_width(run: _Run, font: Font) -> float:
    if run.style == "swatch":
        return _swatch_size(font)[0]
    if run.style == "chip":  # a square swatch and a gap: one of several side by side
        return _swatch_size(font)[1] + 2
    return font.getlength(run.text)


def _swatch_size(font: Font) -> tuple[int, int]:
    _, top, _, baseline = font.getbbox("A")
    height = baseline - top + 4
    return round(1.6 * height), height


def _flow(items: list[list[_Run]], width: int, font: Font, margin: int) -> list[list[list[_Run]]]:
    """Greedy line filling; the trailing spaces of an item may hang past the right margin."""
    lines: list[list[list[_Run]]] = [[]]
    x = margin
    for item in items:
        advance = sum(_run_width(r, font) for r in item)
        visible = advance - font.getlength(item[-1].text) + font.getlength(item[-1].text.rstrip())
        if lines[-1] and x + visible > width - margin:
            lines.append([])
            x = margin
        lines[-1].append(item)
        x += advance
    return lines


def _text_panel(items: list[list[_Run]], width: int, font: Font) -> Image.Image:
    """A white panel ``width`` wide with ``items`` (words, legend entries) wrapped onto lines."""
    margin, line_h = max(8, width // 48), _line_height(font)
    lines = _flow(items, width, font, margin) if items else []
    panel = Image.new("RGB", (width, 2 * margin + max(1, len(lines)) * line_h - (line_h // 3)),
                      WHITE)
    draw = ImageDraw.Draw(panel)
    baseline = font.getbbox("A")[3]
    for i, line in enumerate(lines):
        x, y = float(margin), margin + i * line_h
        runs = [r for item in line for r in item]
        if runs and runs[-1].style not in ("swatch", "chip"):  # no underline under end spaces
            runs[-1] = _Run(runs[-1].text.rstrip(), runs[-1].colour, runs[-1].style)
        for run in runs:
            x += _draw_run(draw, run, x, y, baseline, font)
    return panel


def _draw_run(draw: ImageDraw.ImageDraw, run: _Run, x: float, y: int, baseline: int,
              font: Font) -> float:
    """Draw one run with its top-left at ``(x, y)``; returns its advance."""
    if run.style in ("swatch", "chip"):
        w, h = _swatch_size(font)
        w = w if run.style == "swatch" else h
        top = y + baseline - h + 2
        # a thin grey frame keeps pale swatches (sky, snow) visible on the white panel
        draw.rectangle([x, top, x + w - 1, top + h - 1], fill=run.colour, outline=_TEXT)
        return w + (2 if run.style == "chip" else 0)
    draw.text((x, y), run.text, fill=run.colour, font=font)
    advance = font.getlength(run.text)
    if run.style == "underline":
        thick = max(2, round(font.size / 10)) if hasattr(font, "size") else 2
        draw.rectangle([x, y + baseline + 2, x + advance - 1, y + baseline + 1 + thick],
                       fill=run.colour)
    return advance


def _stack(picture: Image.Image, panel: Image.Image, labels: list[Label]) -> Image.Image:
    """``picture`` above ``panel`` (same width); ``labels`` (drawn on ``picture``, in its pixels,
    which are the top of the result's) are kept in ``info["labels"]``."""
    out = Image.new("RGB", (picture.width, picture.height + panel.height), WHITE)
    out.paste(picture, (0, 0))
    out.paste(panel, (0, picture.height))
    out.info["labels"] = list(labels)
    return out
