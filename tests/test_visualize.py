"""Overlay pictures: colours land inside their masks only; captions and legends carry them."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from groundkit.errors import InputError
from groundkit.ops.masks import erode
from groundkit.structures import Category
from groundkit.visualize import (
    ALPHA,
    MIN_WIDTH,
    LabelItem,
    contact_sheet,
    label_point,
    overlay_grounding,
    overlay_panoptic,
    overlay_referring,
    phrase_colors,
    place_labels,
    region_layer,
    save_image,
    segment_colours,
)

SAMPLE = Path(__file__).parent / "fixtures" / "coco_sample"
GREY = 128


def _has(pixels: np.ndarray, colour) -> bool:
    return bool((pixels.reshape(-1, 3) == np.array(colour)).all(axis=1).any())


def _blend(base: np.ndarray, colour) -> np.ndarray:
    return np.round(np.asarray(base, float) * (1 - ALPHA) + np.array(colour) * ALPHA)


def _two_boxes(h: int = 32, w: int = 48) -> np.ndarray:
    masks = np.zeros((2, h, w), bool)
    masks[0, 2:14, 3:20] = True
    masks[1, 16:30, 25:45] = True
    return masks


def test_phrase_colors_distinct_saturated_and_cycled():
    colours = phrase_colors(10)
    assert len(set(colours)) == 10
    assert all(max(c) - min(c) >= 100 for c in colours)  # saturated: far from grey
    assert phrase_colors(12)[10:] == colours[:2]
    assert phrase_colors(0) == []
    with pytest.raises(InputError):
        phrase_colors(-1)


def test_grounding_colours_inside_masks_only():
    image = np.full((32, 48, 3), GREY, np.uint8)
    caption = "a red ball on the green grass"
    masks = _two_boxes()
    out = np.asarray(overlay_grounding(image, caption, [(2, 10), (18, 29)], masks, labels=False))
    factor = MIN_WIDTH // 48  # 48 px wide -> upscaled 8 times
    assert out.shape[1] == 48 * factor and out.shape[0] > 32 * factor
    picture = out[:32 * factor]
    up = masks.repeat(factor, axis=1).repeat(factor, axis=2)
    for mask, colour in zip(up, phrase_colors(2)):
        exact = (picture == np.array(colour)).all(axis=-1)
        assert exact[mask].any() and not exact[~mask].any()  # the outline, inside the mask only
        assert exact[mask].mean() < 0.3  # a thin outline, not a filled region
        centre = np.argwhere(mask).mean(axis=0).astype(int)
        assert (picture[tuple(centre)] == _blend([GREY] * 3, colour)).all()
    assert (picture[~up.any(axis=0)] == GREY).all()  # untouched outside every mask


def test_caption_panel_has_every_phrase_colour():
    image = np.full((32, 48, 3), GREY, np.uint8)
    colours = phrase_colors(3)
    masks = np.concatenate([_two_boxes(), np.zeros((1, 32, 48), bool)])
    out = overlay_grounding(image, "a red ball on the green grass near trees",
                            [(2, 10), (18, 29), (35, 40)], masks, scores=np.array([0.9, 0.5, 0.1]))
    panel = np.asarray(out)[32 * 8:]
    assert all(_has(panel, c) for c in colours)
    assert not _has(panel, phrase_colors(4)[3])


def test_tints_blend_in_order_and_every_outline_stays_visible():
    image = np.full((40, 400, 3), GREY, np.uint8)  # wide enough: no upscaling
    masks = np.zeros((2, 40, 400), bool)
    masks[0, 5:35, 10:200] = True
    masks[1, 5:35, 100:300] = True
    first, second = phrase_colors(2)
    out = np.asarray(overlay_grounding(image, "left and right", [(0, 4), (9, 14)], masks,
                                       labels=False))
    assert out.shape[1] == 400
    assert (out[20, 150] == _blend(_blend([GREY] * 3, first), second)).all()
    assert (out[6:34, 199] == first).all()  # the earlier outline, under the later tint, on top
    assert (out[6:34, 100] == second).all()  # the later outline crosses the earlier tint


def test_caption_panel_grows_with_the_text():
    image = np.full((32, 48, 3), GREY, np.uint8)
    empty = np.zeros((0, 32, 48), bool)
    short = overlay_grounding(image, "a ball", [], empty)
    long = overlay_grounding(image, "a ball on the grass " * 20, [], empty)
    assert long.height > short.height + 3 * 14
    assert long.width == short.width == 384


@pytest.mark.parametrize("spans, masks, scores, words", [
    ([(0, 3)], np.zeros((1, 32, 40), bool), None, "masks must be"),
    ([(0, 3)], np.zeros((1, 32, 48), np.float32), None, "boolean"),
    ([(0, 3), (4, 6)], np.zeros((1, 32, 48), bool), None, "2 spans for 1 masks"),
    ([(3, 99)], np.zeros((1, 32, 48), bool), None, "span 0"),
    ([(3, 3)], np.zeros((1, 32, 48), bool), None, "span 0"),
    ([(0, 3)], np.zeros((1, 32, 48), bool), np.ones(2), "scores"),
])
def test_grounding_bad_input(spans, masks, scores, words):
    with pytest.raises(InputError, match=words):
        overlay_grounding(np.zeros((32, 48, 3), np.uint8), "a ball", spans, masks, scores)


# --- panoptic ------------------------------------------------------------------------------------

CATEGORIES = {
    1: Category(1, "person", True, (220, 20, 60)),
    7: Category(7, "car", True, (0, 0, 142)),
    184: Category(184, "grass", False, (152, 251, 152)),
}


def _panoptic_case():
    ids = np.full((32, 48), 30, np.int64)  # stuff: grass everywhere
    ids[4:20, 4:20] = 10
    ids[4:20, 24:40] = 11
    ids[28:, :] = 0  # void
    info = [{"id": 10, "category_id": 1}, {"id": 11, "category_id": 1},
            {"id": 30, "category_id": 184, "isthing": False}]
    return ids, info


def test_panoptic_colours_and_legend():
    ids, info = _panoptic_case()
    out = np.asarray(overlay_panoptic(np.full((32, 48, 3), GREY, np.uint8), ids, info, CATEGORIES,
                                      labels=False))
    assert out.shape[1] == 384 and out.shape[0] > 256
    picture, legend = out[:256], out[256:]
    # inside each segment's interior: the image blended with the segment colour
    person_a, person_b, grass = picture[12 * 8, 12 * 8], picture[12 * 8, 32 * 8], picture[24 * 8, 4]
    assert (person_a == _blend([GREY] * 3, (220, 20, 60))).all()  # first instance: category colour
    assert (person_b != person_a).any()  # instances of one category differ
    assert (grass == _blend([GREY] * 3, (152, 251, 152))).all()
    assert (picture[30 * 8:, :] == GREY).all()  # void untouched
    # the legend shows a swatch of each category present, none of the absent car
    assert _has(legend, (220, 20, 60)) and _has(legend, (152, 251, 152))
    assert not _has(legend, (0, 0, 142))


def test_panoptic_bad_input():
    ids, info = _panoptic_case()
    image = np.zeros((32, 48, 3), np.uint8)
    with pytest.raises(InputError, match="segment id 30"):
        overlay_panoptic(image, ids, info[:2], CATEGORIES)
    with pytest.raises(InputError, match="category_id 5"):
        overlay_panoptic(image, ids, info + [{"id": 40, "category_id": 5}], CATEGORIES)
    with pytest.raises(InputError, match="id_map"):
        overlay_panoptic(image, ids[:10], info, CATEGORIES)


def test_overlays_never_paint_on_the_callers_image():
    # at MIN_WIDTH and wider the picture is not upscaled: it must still be a copy
    image = np.full((40, MIN_WIDTH, 3), GREY, np.uint8)
    masks = np.ones((1, 40, MIN_WIDTH), bool)
    overlay_grounding(image, "all", [(0, 3)], masks)
    ids, info = np.ones((40, MIN_WIDTH), np.int64), [{"id": 1, "category_id": 1}]
    overlay_panoptic(image, ids, info, CATEGORIES)
    assert (image == GREY).all()


# --- one part at a time --------------------------------------------------------------------------

def test_a_region_layer_over_the_image_is_that_part_of_the_overlay():
    image = np.full((32, 48, 3), GREY, np.uint8)
    masks = _two_boxes()
    overlay = np.asarray(overlay_grounding(image, "a b", [(0, 1), (2, 3)], masks,
                                           labels=False))[:256, :384]
    picture = Image.fromarray(image).convert("RGBA")
    for mask, colour in zip(masks, phrase_colors(2)):
        layer = region_layer((32, 48), colour, mask)
        assert layer.mode == "RGBA" and layer.size == (48, 32)
        assert (np.asarray(layer)[~mask, 3] == 0).all()  # clear outside the mask
        picture = Image.alpha_composite(picture, layer)
    # the overlay is drawn 8 times wider (its outline is thinner than a pixel of the layer): off
    # the masks' edges, its pixels at the layer's pixel centres are the layers over the image
    edges = masks.any(axis=0) & ~(erode(masks[0], 1) | erode(masks[1], 1))
    ours = np.asarray(picture.convert("RGB")).astype(int)[~edges]
    theirs = overlay[4::8, 4::8].astype(int)[~edges]
    assert np.abs(ours - theirs).max() <= 1  # alpha compositing rounds once more


def test_a_region_layer_outlines_a_box():
    layer = np.asarray(region_layer((20, 30), (255, 0, 0), box=(5, 4, 25, 15)))
    assert layer[4, 10, 3] == 255 and layer[10, 5, 3] == 255  # on the box's edges
    assert layer[10, 15, 3] == 0 and layer[0, 0, 3] == 0      # inside and outside: clear
    with pytest.raises(InputError, match="shape"):
        region_layer((20, 30), (255, 0, 0), np.ones((10, 10), bool))


def test_a_label_sits_deep_inside_its_region():
    ring = np.zeros((41, 41), bool)
    yy, xx = np.mgrid[:41, :41]
    r = np.hypot(yy - 20, xx - 20)
    ring[(r >= 12) & (r <= 18)] = True  # the centroid (20, 20) lies in the hole
    x, y = label_point(ring)
    assert ring[y, x] and 14 <= np.hypot(y - 20, x - 20) <= 16
    square = np.zeros((10, 10), bool)
    square[2:7, 3:8] = True
    assert label_point(square) == (5, 4)
    assert label_point(np.zeros((5, 5), bool)) is None


def test_segment_colours_are_those_of_the_panoptic_overlay():
    ids, info = _panoptic_case()
    out = np.asarray(overlay_panoptic(np.full((32, 48, 3), GREY, np.uint8), ids, info, CATEGORIES,
                                      labels=False))
    colours = segment_colours(info, CATEGORIES)
    for segment, colour in zip(info, colours):
        x, y = label_point(ids == segment["id"])
        assert (out[y * 8 + 4, x * 8 + 4] == _blend([GREY] * 3, colour)).all()


# --- contact sheet and saving --------------------------------------------------------------------

def test_contact_sheet_layout():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    images = [Image.new("RGB", size, c) for size, c in zip([(60, 40), (30, 50), (45, 45)], colours)]
    sheet = contact_sheet(images, columns=2)
    titled = contact_sheet(images, columns=2, titles=["red", "green", "a very long title " * 5])
    one_column = contact_sheet(images, columns=1)
    assert 2 * 60 < sheet.width < 2 * 60 + 60 and 2 * 50 < sheet.height < 2 * 50 + 60
    assert one_column.width < sheet.width and one_column.height > 3 * 50
    assert titled.width == sheet.width and titled.height > sheet.height
    pixels = np.asarray(titled).reshape(-1, 3)
    for im, c in zip(images, colours):  # every image pasted whole
        assert (pixels == c).all(axis=1).sum() == im.width * im.height
    with pytest.raises(InputError):
        contact_sheet([], 2)
    with pytest.raises(InputError):
        contact_sheet(images, 2, titles=["one"])


def test_save_image_atomic(tmp_path, monkeypatch):
    image = Image.fromarray(np.arange(48 * 32 * 3, dtype=np.uint8).reshape(32, 48, 3))
    path = tmp_path / "out" / "picture.png"
    save_image(image, path)
    with Image.open(path) as im:
        assert im.format == "PNG" and (np.asarray(im) == np.asarray(image)).all()
    assert [p.name for p in path.parent.iterdir()] == ["picture.png"]

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(Image.Image, "save", broken)
    with pytest.raises(OSError):
        save_image(image, tmp_path / "out" / "other.png")
    assert [p.name for p in path.parent.iterdir()] == ["picture.png"]  # no partial file left


def test_real_sample_grounding_and_panoptic():
    from groundkit.data.formats import load_narratives, load_panoptic
    from groundkit.data.images import read_image
    panoptic = load_panoptic(SAMPLE / "panoptic.json", SAMPLE / "panoptic")
    narrative = next(n for n in load_narratives(SAMPLE / "png_narratives.json")
                     if n.image_id == 142238)
    image = read_image(SAMPLE / "images" / "000000142238.jpg")
    phrases = [u for _, u in narrative.grounded()]
    masks = panoptic.union_masks(142238, [u.segment_ids for u in phrases])
    out = overlay_grounding(image, narrative.caption, [u.span for u in phrases], masks)
    assert out.width == 640 and out.height > 427
    assert all(_has(np.asarray(out)[427:], c) for c in phrase_colors(len(phrases)))
    info = [{"id": s.id, "category_id": s.category_id}
            for s in panoptic.annotation(142238).segments]
    pan = overlay_panoptic(image, panoptic.id_map(142238), info, panoptic.categories)
    legend = np.asarray(pan)[427:]
    assert all(_has(legend, panoptic.categories[i["category_id"]].color) for i in info)


# --- labels on the image -------------------------------------------------------------------------

def _inside(box, point, margin=0) -> bool:
    x0, y0, x1, y1 = box
    return x0 - margin <= point[0] < x1 + margin and y0 - margin <= point[1] < y1 + margin


def _no_two_overlap(labels) -> bool:
    boxes = [lb.box for lb in labels]
    return all(a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
               for i, a in enumerate(boxes) for b in boxes[i + 1:])


def _changed_only_in(labelled, plain, labels) -> None:
    """The labelled picture differs from the plain one inside the label boxes only, and in each."""
    changed = (np.asarray(labelled) != np.asarray(plain)).any(axis=-1)
    covered = np.zeros_like(changed)
    for label in labels:
        x0, y0, x1, y1 = label.box
        covered[y0:y1, x0:x1] = True
        assert changed[y0:y1, x0:x1].mean() > 0.5  # a filled box, not a few letters
    assert changed.any() and not changed[~covered].any()


def test_grounding_labels_name_each_phrase_on_its_region_and_nothing_else_changes():
    image = np.full((32, 48, 3), GREY, np.uint8)
    masks = _two_boxes()
    caption = "a red ball on the green grass"
    plain = overlay_grounding(image, caption, [(2, 10), (18, 29)], masks, labels=False)
    labelled = overlay_grounding(image, caption, [(2, 10), (18, 29)], masks)
    assert plain.info["labels"] == [] and labelled.size == plain.size
    labels = labelled.info["labels"]
    assert sorted(lb.text for lb in labels) == ["green grass", "red ball"]
    for label in labels:  # at the deepest point of its region (upscaled 8 times)
        k = ["red ball", "green grass"].index(label.text)
        x, y = label_point(masks[k])
        assert label.point == (8 * x + 4, 8 * y + 4) and _inside(label.box, label.point)
        assert label.colour == phrase_colors(2)[k]
    _changed_only_in(labelled, plain, labels)


def test_a_long_phrase_is_shortened_on_its_label():
    image = np.full((64, 400, 3), GREY, np.uint8)
    caption = "the very long and winding road that leads to the door of the old house"
    out = overlay_grounding(image, caption, [(0, len(caption))], np.ones((1, 64, 400), bool))
    (label,) = out.info["labels"]
    assert label.text.endswith("...") and caption.startswith(label.text[:-3])
    assert label.box[2] - label.box[0] <= 0.4 * 400 + 12


def test_placed_labels_never_overlap_and_stay_inside_the_picture():
    rng = np.random.default_rng(0)
    items = [LabelItem(f"region {k}", (int(rng.integers(0, 300)), int(rng.integers(0, 200))),
                       (200, 0, 0), int(rng.integers(2000, 20000))) for k in range(40)]
    items += [LabelItem("same place", (150, 100), (0, 0, 200), 30000 - k) for k in range(5)]
    labels = place_labels(items, (200, 300))
    assert len(labels) >= 10 and _no_two_overlap(labels)
    assert all(0 <= lb.box[0] < lb.box[2] <= 300 and 0 <= lb.box[1] < lb.box[3] <= 200
               for lb in labels)
    # the largest first, at its point; the others that wanted the same place moved off it
    assert labels[0].text == "same place" and _inside(labels[0].box, (150, 100))
    assert sum(lb.text == "same place" for lb in labels) == 5


def test_a_small_region_is_labelled_beside_itself_and_a_speck_not_at_all():
    mask = np.zeros((120, 200), bool)
    mask[50:60, 90:100] = True  # 100 px: smaller than its label
    speck = np.zeros((120, 200), bool)
    speck[5, 5] = True
    big = np.ones((120, 200), bool)
    labels = place_labels([LabelItem("ball", (95, 55), (0, 150, 0), 100, mask),
                           LabelItem("dust", (5, 5), (0, 0, 150), 1, speck),
                           LabelItem("grass", (100, 60), (150, 0, 0), big.sum(), big)],
                          (120, 200))
    assert [lb.text for lb in labels] == ["grass", "ball"] and _no_two_overlap(labels)
    x0, y0, x1, y1 = labels[1].box
    assert not mask[y0:y1, x0:x1].any()  # beside the ball, not over it
    assert _inside(labels[1].box, (95, 55), margin=labels[1].box[3] - labels[1].box[1] + 2)


def test_panoptic_labels_name_each_segment_and_every_drawn_colour_is_a_legend_swatch():
    ids = np.full((48, 96), 30, np.int64)
    info = [{"id": 30, "category_id": 184}]
    for k in range(4):  # four people: four colours, each with its swatch
        ids[4:24, 4 + 22 * k:22 + 22 * k] = 10 + k
        info.append({"id": 10 + k, "category_id": 1})
    image = np.full((48, 96, 3), GREY, np.uint8)
    plain = overlay_panoptic(image, ids, info, CATEGORIES, labels=False)
    labelled = overlay_panoptic(image, ids, info, CATEGORIES)
    colours = segment_colours(info, CATEGORIES)
    assert len(set(colours)) == 5
    legend = np.asarray(labelled)[48 * 4:]
    assert all(_has(legend, c) for c in colours) and not _has(legend, (0, 0, 142))
    labels = labelled.info["labels"]
    assert sorted(lb.text for lb in labels) == ["grass"] + ["person"] * 4
    assert labels[0].text == "grass"  # the largest first
    assert {lb.colour for lb in labels} == set(colours) and _no_two_overlap(labels)
    _changed_only_in(np.asarray(labelled)[:48 * 4], np.asarray(plain)[:48 * 4], labels)


def test_real_sample_panoptic_legend_has_every_drawn_colour():
    from groundkit.data.formats import load_panoptic
    from groundkit.data.images import read_image
    panoptic = load_panoptic(SAMPLE / "panoptic.json", SAMPLE / "panoptic")
    for image_id in sorted(panoptic.images):
        info = [{"id": s.id, "category_id": s.category_id}
                for s in panoptic.annotation(image_id).segments]
        image = read_image(SAMPLE / "images" / f"{image_id:012d}.jpg")
        out = overlay_panoptic(image, panoptic.id_map(image_id), info, panoptic.categories)
        legend = np.asarray(out)[image.shape[0]:]
        assert all(_has(legend, c) for c in segment_colours(info, panoptic.categories))
        assert len(out.info["labels"]) >= 5 and _no_two_overlap(out.info["labels"])


def test_referring_label_sits_at_the_box_corner_inside_the_image():
    image = np.full((200, 400, 3), GREY, np.uint8)
    low = overlay_referring(image, "the red   ball on the left", np.array([50, 80, 150, 160]))
    (label,) = low.info["labels"]
    assert label.text == "the red ball on the left"
    assert label.box[0] == 50 and label.box[3] == 80  # just above the box's top-left corner
    top = overlay_referring(image, "the red ball", np.array([-5, 0, 150, 160]))
    (label,) = top.info["labels"]
    assert label.box[:2] == (0, 0)  # no room above: just inside, within the picture
    plain = overlay_referring(image, "the red ball", np.array([-5, 0, 150, 160]), labels=False)
    _changed_only_in(top, plain, [label])
