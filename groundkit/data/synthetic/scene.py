"""Scenes of the synthetic benchmark: textured stuff regions under coloured, overlapping shapes.

A scene is drawn at ``size x size`` pixels; every length below is given for 128 px and scaled.
Stuff regions are horizontal bands (one may be split left/right) with wavy, slanted borders, each
filled with its category's noisy texture. Things are flat-coloured shapes with a darker outline,
placed one after another on top of each other; a placement is rejected when it would hide more
than half of an earlier shape, so every instance stays clearly visible.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from groundkit.ops.masks import erode
from groundkit.structures import Category

SHAPES = ("circle", "square", "triangle", "star", "cross", "heart", "ring", "diamond", "hexagon")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 200, 70), "blue": (40, 80, 235), "yellow": (245, 220, 40),
    "purple": (150, 60, 205), "orange": (250, 140, 20), "white": (245, 245, 245),
    "black": (25, 25, 25),
}
SIZES = ("small", "large")
STUFF = ("sky", "grass", "water", "sand", "wall", "road", "floor")

# Things get ids 1.., stuff 101..: COCO ids are not contiguous either, and readers must cope.
CATEGORIES: tuple[Category, ...] = tuple(
    [Category(i + 1, name, True, (40 + 20 * i, 200 - 15 * i, 90), "shape")
     for i, name in enumerate(SHAPES)]
    + [Category(101 + i, name, False, (90, 120 + 15 * i, 200 - 20 * i), name)
       for i, name in enumerate(STUFF)])
CATEGORY_ID = {c.name: c.id for c in CATEGORIES}

_DIAMETER = {"small": (14, 20), "large": (26, 40)}  # pixels at 128 px: clearly distinct sizes
_MIN_VISIBLE = 0.5  # share of its own area an earlier shape must keep when a new one is placed
_TRIES = 12


@dataclass(eq=False)
class Thing:
    """One visible shape instance. ``mask``: ``(H, W) bool`` of its visible pixels."""

    shape: str
    colour: str
    size: str
    segment_id: int
    mask: np.ndarray

    @property
    def category_id(self) -> int:
        return CATEGORY_ID[self.shape]

    @property
    def centre(self) -> tuple[float, float]:
        """``(x, y)`` centroid of the visible pixels."""
        ys, xs = np.nonzero(self.mask)
        return float(xs.mean()), float(ys.mean())


@dataclass(eq=False)
class StuffRegion:
    """One stuff segment. ``where``: a location phrase true of it ("at the top")."""

    name: str
    segment_id: int
    mask: np.ndarray
    where: str

    @property
    def category_id(self) -> int:
        return CATEGORY_ID[self.name]


@dataclass(eq=False)
class Scene:
    """``image``: ``(H, W, 3) uint8``; things in drawing order (later ones on top)."""

    image: np.ndarray
    things: list[Thing] = field(default_factory=list)
    stuff: list[StuffRegion] = field(default_factory=list)

    def id_map(self) -> np.ndarray:
        """``(H, W) int64`` panoptic segment ids (every pixel belongs to one segment)."""
        ids = np.zeros(self.image.shape[:2], dtype=np.int64)
        for seg in [*self.stuff, *self.things]:
            ids[seg.mask] = seg.segment_id
        return ids


def make_scene(rng: np.random.Generator, size: int = 128) -> Scene:
    """Draw one random scene of ``size x size`` pixels from ``rng``."""
    labels, names = _stuff_layout(rng, size)
    image = np.zeros((size, size, 3), dtype=np.float32)
    for k, name in enumerate(names):
        region = labels == k
        image[region] = _texture(name, rng, size)[region]
    full, visible, specs = _place_things(rng, size)
    things = []
    for j, ((shape, colour, size_word), mask, vis) in enumerate(zip(specs, full, visible)):
        _paint_thing(image, mask, vis, colour, rng)
        things.append(Thing(shape, colour, size_word, CATEGORY_ID[shape] * 1000 + j + 1, vis))
    covered = np.any(visible, axis=0) if visible else np.zeros((size, size), bool)
    stuff = []
    for k, name in enumerate(names):
        mask = (labels == k) & ~covered
        if mask.any():
            stuff.append(StuffRegion(name, CATEGORY_ID[name] * 1000, mask, _where(labels == k)))
    return Scene(np.clip(image, 0, 255).round().astype(np.uint8), things, stuff)


# --- stuff ----------------------------------------------------------------------------------------

def _stuff_layout(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[str]]:
    """``(H, W) int`` region labels 0..k-1 and the stuff name of each region (2-4 regions)."""
    k = int(rng.integers(2, 5))
    names = [str(n) for n in rng.choice(STUFF, k, replace=False)]
    if "sky" in names:  # the sky stays on top, as in a photo
        names.remove("sky")
        names.insert(0, "sky")
    split = k == 4 or (k == 3 and rng.random() < 0.4)  # one band cut into left and right
    bands = k - 1 if split else k
    tops = np.sort(rng.uniform(0.2, 0.8, bands - 1))
    while bands > 2 and np.diff(tops).min() < 0.18:  # keep every band at least ~18% high
        tops = np.sort(rng.uniform(0.2, 0.8, bands - 1))
    x = np.arange(size, dtype=np.float32)
    yy = np.arange(size, dtype=np.float32)[:, None]
    band = np.zeros((size, size), dtype=np.int64)
    for top in tops:
        border = (top * size + rng.uniform(-0.15, 0.15) * (x - size / 2)
                  + rng.uniform(0, 3) * size / 128 * np.sin(rng.uniform(0.05, 0.2) * 128 / size * x
                                                             + rng.uniform(0, 6.3)))
        band += yy > border[None, :]
    if not split:
        return band, names
    cut = int(rng.integers(1 if names[0] == "sky" else 0, bands))  # the sky spans the width
    xx = x[None, :]
    border = rng.uniform(0.3, 0.7) * size + rng.uniform(-0.2, 0.2) * (yy - size / 2)
    labels = np.where(band > cut, band + 1, band)
    labels = np.where((band == cut) & (xx > border), cut + 1, labels)
    return labels, names


def _smooth_noise(rng: np.random.Generator, size: int, cell: int) -> np.ndarray:
    """``(size, size) float32`` noise in about [-1, 1], smooth over ``cell`` pixels (at 128 px)."""
    low = max(2, round(size / max(1, cell * size / 128)))
    small = Image.fromarray(rng.uniform(-1, 1, (low, low)).astype(np.float32), mode="F")
    return np.asarray(small.resize((size, size), Image.BILINEAR), dtype=np.float32)


@lru_cache(maxsize=4)
def _grid(size: int) -> np.ndarray:
    """``(2, size, size) float32`` pixel rows and columns in 128 px units (read-only)."""
    grid = np.mgrid[0:size, 0:size].astype(np.float32) * np.float32(128 / size)
    grid.flags.writeable = False
    return grid


def _texture(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """``(size, size, 3) float32`` texture of one stuff category, with a random tint and noise."""
    yy, xx = _grid(size)
    fine = rng.standard_normal((size, size), dtype=np.float32)
    tint = rng.uniform(-12, 12, 3).astype(np.float32)
    if name == "sky":  # blue gradient, lighter downwards, with soft clouds
        base = np.array([80, 140, 230], np.float32) + (yy / 128)[..., None] * [90, 70, 15]
        clouds = 35 * np.clip(_smooth_noise(rng, size, 24), 0, 1)
        value = base + (clouds + 3 * fine)[..., None]
    elif name == "grass":  # green with strong grain and vertical blades
        blades = _smooth_noise(rng, size, 2) * 0.5 + np.sin(xx * 1.7 + 2 * fine) * 0.5
        value = [70, 135, 45] + (25 * blades + 12 * fine)[..., None] * np.float32([0.6, 1, 0.4])
    elif name == "water":  # blue-green with horizontal waves
        waves = np.sin(yy * 0.9 + 3 * _smooth_noise(rng, size, 16))
        value = [35, 95, 150] + (30 * waves + 5 * fine)[..., None] * np.float32([0.7, 0.9, 1])
    elif name == "sand":  # pale beige with speckles and soft dunes
        speckle = (rng.random((size, size)) < 0.08) * -40.0
        value = (np.array([215, 190, 135], np.float32)
                 + (12 * _smooth_noise(rng, size, 20) + speckle + 6 * fine)[..., None])
    elif name == "wall":  # bricks in offset rows with light mortar
        row = (yy // 8).astype(np.int64)
        mortar = (yy % 8 < 1.2) | ((xx + 8 * (row % 2)) % 16 < 1.2)
        value = np.where(mortar[..., None], np.float32(205), np.array([160, 75, 55], np.float32))
        value = value + (10 * fine + 10 * _smooth_noise(rng, size, 8))[..., None]
    elif name == "road":  # dark grey asphalt: fine grain and blotches
        grain = 14 * fine + 12 * _smooth_noise(rng, size, 10)
        value = 85 + grain[..., None] * np.float32([1, 1, 1.05])
    elif name == "floor":  # wooden planks with grain
        grain = np.sin(yy * 2.5 + 4 * _smooth_noise(rng, size, 12))
        seams = (xx % 24 < 1.2)
        value = np.array([150, 100, 60], np.float32) + (15 * grain + 5 * fine)[..., None]
        value = np.where(seams[..., None], value * 0.55, value)
    else:
        raise ValueError(f"unknown stuff category {name!r}")
    return (value + tint).astype(np.float32)


def _where(region: np.ndarray) -> str:
    """A location phrase true of ``region (H, W) bool``: its band, or its side of a cut band."""
    h, w = region.shape
    ys, xs = np.nonzero(region)
    top, bottom, left, right = ys.min() / h, ys.max() / h, xs.min() / w, xs.max() / w
    if left < 0.05 and right > 0.95:  # a full-width band
        if top < 0.05:
            return "at the top"
        if bottom > 0.95:
            return "at the bottom"
        return "in the middle"
    side = "left" if left < 0.05 else "right"
    return f"on the {side}"


# --- things ---------------------------------------------------------------------------------------

def _unit_outline(shape: str) -> np.ndarray:
    """``(K, 2)`` polygon of ``shape`` inside the unit circle, y pointing down."""
    if shape == "square":
        return np.array([[-0.75, -0.75], [0.75, -0.75], [0.75, 0.75], [-0.75, 0.75]])
    if shape == "triangle":
        return np.array([[0, -0.8], [0.95, 0.85], [-0.95, 0.85]])
    if shape == "diamond":
        return np.array([[0, -1], [0.62, 0], [0, 1], [-0.62, 0]])
    if shape in ("star", "hexagon"):
        n, inner = (5, 0.42) if shape == "star" else (6, 1.0)
        angles = -np.pi / 2 + np.arange(2 * n) * np.pi / n
        radii = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
        pts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
        return pts if shape == "star" else pts[::2]
    if shape == "cross":
        a, b = 0.3, 0.9
        return np.array([[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b],
                         [-a, a], [-b, a], [-b, -a], [-a, -a]])
    if shape == "heart":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return np.stack([x, y + 2.5], axis=1) / 17.5
    raise ValueError(f"unknown polygon shape {shape!r}")


def _shape_mask(shape: str, cx: float, cy: float, diameter: float, angle: float,
                size: int) -> np.ndarray:
    """``(size, size) bool`` pixels of one shape centred at ``(cx, cy)``."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    r = diameter / 2
    if shape in ("circle", "ring"):
        draw.ellipse([cx - 0.92 * r, cy - 0.92 * r, cx + 0.92 * r, cy + 0.92 * r], fill=1)
        if shape == "ring":
            draw.ellipse([cx - 0.45 * r, cy - 0.45 * r, cx + 0.45 * r, cy + 0.45 * r], fill=0)
    else:
        c, s = np.cos(angle), np.sin(angle)
        pts = _unit_outline(shape) @ np.array([[c, s], [-s, c]]) * r + [cx, cy]
        draw.polygon([tuple(p) for p in pts.tolist()], fill=1)
    return np.asarray(canvas, dtype=bool)


def _sample_specs(rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """3-10 ``(shape, colour, size)`` drawn from a small per-image palette, with distractors.

    A small palette makes plural groups ("the red shapes") common; most images start with a
    shape, the same shape in another colour and the same colour on another shape.
    """
    shapes = [str(s) for s in rng.choice(SHAPES, int(rng.integers(2, 5)), replace=False)]
    colours = [str(c) for c in rng.choice(list(COLOURS), int(rng.integers(2, 5)), replace=False)]
    n = int(rng.integers(3, 11))
    specs = [(str(rng.choice(shapes)), str(rng.choice(colours)), str(rng.choice(SIZES)))
             for _ in range(n)]
    if rng.random() < 0.85:
        s0, s1 = shapes[:2]
        c0, c1 = colours[:2]
        specs[:3] = [(s0, c0, specs[0][2]), (s0, c1, specs[1][2]), (s1, c0, specs[2][2])]
        order = rng.permutation(n)
        specs = [specs[i] for i in order]
    return specs


def _place_things(rng: np.random.Generator, size: int
                  ) -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[str, str, str]]]:
    """Full masks, visible masks (each ``(H, W) bool``) and specs of the shapes that found room."""
    s = size / 128
    full: list[np.ndarray] = []
    visible: list[np.ndarray] = []
    placed = []
    for spec in _sample_specs(rng):
        shape, _, size_word = spec
        diameter = rng.uniform(*_DIAMETER[size_word]) * s
        angle = rng.uniform(-0.25, 0.25)
        for _ in range(_TRIES):
            cx, cy = rng.uniform(diameter / 2, size - diameter / 2, 2)
            mask = _shape_mask(shape, cx, cy, diameter, angle, size)
            left = [v & ~mask for v in visible]
            if all(kept.sum() >= _MIN_VISIBLE * f.sum() for kept, f in zip(left, full)):
                visible = left + [mask]
                full.append(mask)
                placed.append(spec)
                break
    return full, visible, placed


def _paint_thing(image: np.ndarray, mask: np.ndarray, visible: np.ndarray, colour: str,
                 rng: np.random.Generator) -> None:
    """Paint a flat colour with light noise and a 1 px outline into ``image (H, W, 3) float``."""
    rgb = np.array(COLOURS[colour], np.float32)
    inner = erode(mask)  # what erosion takes away is the outline
    outline_rgb = np.float32(110) if colour == "black" else rgb * 0.45
    n = int(visible.sum())
    pixels = np.where(inner[visible][:, None], rgb, outline_rgb)
    image[visible] = pixels + rng.normal(0, 5, (n, 1)).astype(np.float32)
