import numpy as np
import pytest

from groundkit.data.synthetic import CATEGORIES
from groundkit.data.synthetic.scene import COLOURS, SHAPES, STUFF, _shape_mask, make_scene
from groundkit.ops.masks import erode

SCENES = [make_scene(np.random.default_rng(seed), 128) for seed in range(30)]


def test_categories_are_plain_nouns_with_unique_ids():
    things = [c for c in CATEGORIES if c.isthing]
    stuff = [c for c in CATEGORIES if not c.isthing]
    assert len(things) >= 8 and len(stuff) >= 6 and len(COLOURS) >= 6
    assert len({c.id for c in CATEGORIES}) == len(CATEGORIES)
    assert all(c.name.isalpha() and c.name.islower() for c in CATEGORIES)


@pytest.mark.parametrize("scene", SCENES[:10])
def test_every_pixel_belongs_to_exactly_one_segment(scene):
    masks = np.stack([s.mask for s in [*scene.stuff, *scene.things]])
    assert (masks.sum(axis=0) == 1).all()
    ids = scene.id_map()
    for s in [*scene.stuff, *scene.things]:
        assert ((ids == s.segment_id) == s.mask).all()
    assert len({s.segment_id for s in [*scene.stuff, *scene.things]}) == len(masks)


def test_scene_contents_are_in_range():
    for scene in SCENES:
        assert scene.image.shape == (128, 128, 3) and scene.image.dtype == np.uint8
        assert 3 <= len(scene.things) <= 10
        assert 2 <= len(scene.stuff) <= 4
        assert len({s.name for s in scene.stuff}) == len(scene.stuff)  # one segment a category
        assert all(t.mask.sum() >= 40 for t in scene.things)  # nothing is hidden away
    assert {t.shape for s in SCENES for t in s.things} == set(SHAPES)
    assert {t.colour for s in SCENES for t in s.things} == set(COLOURS)
    assert {r.name for s in SCENES for r in s.stuff} == set(STUFF)


def test_things_are_painted_in_their_colour():
    for scene in SCENES[:10]:
        for t in scene.things:
            median = np.median(scene.image[erode(t.mask)].astype(float), axis=0)
            assert np.abs(median - COLOURS[t.colour]).max() < 20, (t.colour, median)


def _areas(scenes, size):
    return [t.mask.sum() for s in scenes for t in s.things if t.size == size]


def test_sizes_are_clearly_distinct_and_scale_with_the_image():
    assert np.median(_areas(SCENES, "large")) > 2.5 * np.median(_areas(SCENES, "small"))
    big = [make_scene(np.random.default_rng(seed), 256) for seed in range(8)]
    assert big[0].image.shape == (256, 256, 3)
    ratio = np.median(_areas(big, "small")) / np.median(_areas(SCENES, "small"))
    assert 3 < ratio < 5  # areas grow with the square of the side


def test_ring_has_a_hole_and_shapes_fill_their_box():
    ring = _shape_mask("ring", 32, 32, 30, 0.0, 64)
    assert not ring[32, 32] and ring[32, 32 + 11]
    for shape in SHAPES:
        mask = _shape_mask(shape, 32, 32, 30, 0.2, 64)
        ys, xs = np.nonzero(mask)
        assert 20 <= xs.max() - xs.min() + 1 <= 31 and 20 <= ys.max() - ys.min() + 1 <= 31, shape


def test_same_generator_same_scene():
    a = make_scene(np.random.default_rng(7), 96)
    b = make_scene(np.random.default_rng(7), 96)
    assert (a.image == b.image).all() and (a.id_map() == b.id_map()).all()
