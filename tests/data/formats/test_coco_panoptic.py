from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from PIL import Image

from groundkit.data.formats.coco_panoptic import (
    id_to_rgb,
    load_panoptic,
    read_segment_png,
    rgb_to_id,
    write_panoptic_json,
    write_segment_png,
)
from groundkit.errors import FormatError

IMAGE = 142238


def load(root):
    return load_panoptic(root / "panoptic.json", root / "panoptic")


def test_reads_the_real_sample(sample):
    ds = load(sample)
    assert set(ds.images) == {142238, 439180}
    assert len(ds.categories) == 133
    assert sum(c.isthing for c in ds.categories.values()) == 80
    assert ds.categories[1].name == "person" and ds.categories[1].color == (220, 20, 60)
    first = ds.annotations[IMAGE].segments[0]
    assert (first.id, first.category_id, first.area, first.bbox) == (3937500, 1, 3528, (282, 207, 48, 149))


def test_id_map_matches_segments_info(sample):
    ds = load(sample)
    ids = ds.id_map(IMAGE)
    assert ids.shape == (427, 640) and ids.dtype == np.int64
    # The official areas are the pixel counts of each id in the PNG.
    for seg in ds.annotations[IMAGE].segments:
        assert (ids == seg.id).sum() == seg.area


def test_segment_and_union_masks(sample):
    ds = load(sample)
    people = [s.id for s in ds.annotations[IMAGE].segments if s.category_id == 1]
    union = ds.union_mask(IMAGE, people)
    assert union.dtype == bool
    assert union.sum() == sum(ds.segment_mask(IMAGE, s).sum() for s in people)  # disjoint segments
    assert not ds.union_mask(IMAGE, []).any()
    many = ds.union_masks(IMAGE, [people, [], people[:1]])
    assert many.shape == (3, 427, 640)
    assert (many[0] == union).all() and not many[1].any()
    assert (many[2] == ds.segment_mask(IMAGE, people[0])).all()
    assert ds.union_masks(IMAGE, []).shape == (0, 427, 640)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P"])
def test_segment_png_ids_equal_rgb_to_id_of_its_pixels(tmp_path, mode):
    """read_segment_png reads Pillow's 4-byte pixels as uint32: the ids are rgb_to_id's of the
    RGB pixels, in int64 and uint32, whatever the PNG's mode (RGBA's alpha and a palette dropped)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    rgb[0, 0] = 255  # the largest id
    image = Image.fromarray(rgb)
    if mode == "RGBA":
        image = Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (5, 7), dtype=np.uint8)]))
    elif mode == "P":
        image = image.quantize(colors=16)
        rgb = np.asarray(image.convert("RGB"))
    image.save(tmp_path / "s.png")
    want = rgb_to_id(rgb)
    got64, got32 = (read_segment_png(tmp_path / "s.png", dtype=d) for d in (np.int64, np.uint32))
    assert got64.dtype == np.int64 and got32.dtype == np.uint32
    assert (got64 == want).all() and (got32 == want).all()
    assert mode == "P" or want[0, 0] == 256**3 - 1  # a palette may not keep white


def test_id_rgb_round_trip(tmp_path):
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 16757838, 256**3 - 1]])
    assert (rgb_to_id(id_to_rgb(ids)) == ids).all()
    assert rgb_to_id(np.array([[[255, 255, 255]]], dtype=np.uint8))[0, 0] == 256**3 - 1  # no uint8 wrap
    write_segment_png(tmp_path / "s.png", ids)
    assert (read_segment_png(tmp_path / "s.png") == ids).all()
    with pytest.raises(ValueError, match="256"):
        id_to_rgb(np.array([[256**3]]))


def test_json_round_trip(sample, tmp_path):
    ds = load(sample)
    write_panoptic_json(tmp_path / "p.json", ds.images.values(), ds.annotations.values(),
                        ds.categories.values())
    again = load_panoptic(tmp_path / "p.json", sample / "panoptic")
    assert (again.images, again.annotations, again.categories) == \
        (ds.images, ds.annotations, ds.categories)


def test_missing_file(tmp_path):
    with pytest.raises(FormatError, match="nope.json: file not found"):
        load_panoptic(tmp_path / "nope.json", tmp_path)


def test_truncated_json_names_line_and_column(sample_copy):
    path = sample_copy / "panoptic.json"
    path.write_text('{"images": [\n  {"id": 1,\n')
    with pytest.raises(FormatError, match=r"panoptic.json: invalid JSON at line 3, column 1"):
        load(sample_copy)


def test_missing_field_names_item_and_field(sample_copy, edit_json):
    edit_json(sample_copy / "panoptic.json", lambda d: d["images"][1].pop("height"))
    with pytest.raises(FormatError, match=r"panoptic.json: image 1: field 'height': missing"):
        load(sample_copy)


def test_wrong_type_and_unknown_category(sample_copy, edit_json):
    def change(d):
        d["annotations"][0]["segments_info"][2]["category_id"] = 999
    edit_json(sample_copy / "panoptic.json", change)
    with pytest.raises(FormatError, match=r"image 142238, segment 2: field 'category_id': .*999"):
        load(sample_copy)
    edit_json(sample_copy / "panoptic.json", lambda d: d["images"][0].update(width="640"))
    with pytest.raises(FormatError, match=r"image 0: field 'width': expected an integer, got '640'"):
        load(sample_copy)


@pytest.mark.parametrize("side", [2**31, 0, -5])
def test_image_size_out_of_range(sample_copy, edit_json, side):
    edit_json(sample_copy / "panoptic.json", lambda d: d["images"][1].update(width=side))
    with pytest.raises(FormatError, match=rf"panoptic.json: image 1: field 'width': .*got {side}"):
        load(sample_copy)


def test_repeated_or_void_segment_id(sample_copy, edit_json):
    def repeat(d):
        d["annotations"][1]["segments_info"][1]["id"] = d["annotations"][1]["segments_info"][0]["id"]
    edit_json(sample_copy / "panoptic.json", repeat)
    with pytest.raises(FormatError, match=r"image 439180: field 'segments_info': segment ids must be "
                       "unique and non-zero"):
        load(sample_copy)


def test_png_size_differs_from_image(sample_copy, edit_json):
    edit_json(sample_copy / "panoptic.json", lambda d: d["images"][0].update(height=428))
    with pytest.raises(FormatError,
                       match=r"000000142238.png: field 'size': 640x427 .* 640x428 of image 142238"):
        load(sample_copy).id_map(IMAGE)


def test_png_id_not_listed_in_json(sample_copy, edit_json):
    edit_json(sample_copy / "panoptic.json",
              lambda d: d["annotations"][0]["segments_info"].pop(0))  # drops id 3937500
    with pytest.raises(FormatError, match=r"000000142238.png: segment id 3937500 of image 142238"):
        load(sample_copy).id_map(IMAGE)


def test_unknown_segment_or_image(sample):
    ds = load(sample)
    with pytest.raises(FormatError, match="segment 7 is not in the annotation of image 142238"):
        ds.segment_mask(IMAGE, 7)
    with pytest.raises(FormatError, match="no annotation for image 5"):
        ds.id_map(5)


def test_missing_and_broken_png(sample_copy):
    (sample_copy / "panoptic" / "000000142238.png").unlink()
    with pytest.raises(FormatError, match="000000142238.png: segment PNG not found"):
        load(sample_copy).id_map(IMAGE)
    (sample_copy / "panoptic" / "000000142238.png").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(FormatError, match="cannot read the segment PNG"):
        load(sample_copy).id_map(IMAGE)


# --- hostile values: each a FormatError naming file, item and field --------------------------------

SEGMENT = "annotation of image 142238, segment 2"


@pytest.mark.parametrize("field, value", [
    ("bbox", [float("nan"), 0, 1, 1]), ("bbox", [0, 0, float("inf"), 1]), ("bbox", [0, -1, 1, 1]),
    ("bbox", [0, 0, 1, -3]), ("bbox", [0, 0, 10**400, 1]), ("area", float("nan")),
    ("area", float("-inf")), ("area", -1)])
def test_segment_bbox_and_area_must_be_finite_and_non_negative(sample_copy, edit_json, raises_naming,
                                                               field, value):
    path = sample_copy / "panoptic.json"
    edit_json(path, lambda d: d["annotations"][0]["segments_info"][2].update({field: value}))
    with raises_naming(path, SEGMENT, field):
        load(sample_copy)


@pytest.mark.parametrize("color", [[256, 0, 0], [0, -1, 0], [0, 0, 2**40], [1, 2], [1, 2, 3, 4],
                                   [1.5, 2, 3], [True, 2, 3], "red", None])
def test_category_color_is_three_ints_from_0_to_255(sample_copy, edit_json, raises_naming, color):
    path = sample_copy / "panoptic.json"
    edit_json(path, lambda d: d["categories"][4].update(color=color))
    with raises_naming(path, "category 4", "color"):
        load(sample_copy)


BAD_IDS = [-1, -2**70, 2**63, 1.5, float("nan"), True, "7", None]


@pytest.mark.parametrize("value", BAD_IDS)
@pytest.mark.parametrize("where, field, item", [
    (lambda d: d["images"][1], "id", "image 1"),
    (lambda d: d["categories"][3], "id", "category 3"),
    (lambda d: d["annotations"][1], "image_id", "annotation 1"),
    (lambda d: d["annotations"][0]["segments_info"][2], "id", SEGMENT),
    (lambda d: d["annotations"][0]["segments_info"][2], "category_id", SEGMENT)])
def test_ids_are_non_negative_integers(sample_copy, edit_json, raises_naming, where, field, item, value):
    path = sample_copy / "panoptic.json"
    edit_json(path, lambda d: where(d).update({field: value}))
    with raises_naming(path, item, field):
        load(sample_copy)


def test_segment_id_fits_the_png_rgb(sample_copy, edit_json, raises_naming):
    path = sample_copy / "panoptic.json"
    edit_json(path, lambda d: d["annotations"][0]["segments_info"][2].update(id=256**3))
    with raises_naming(path, SEGMENT, "id") as e:
        load(sample_copy)
    assert "256**3 - 1" in str(e.value)


def test_image_of_more_pixels_than_pillow_decodes(sample_copy, edit_json, raises_naming):
    path = sample_copy / "panoptic.json"
    edit_json(path, lambda d: d["images"][0].update(height=65535, width=65535))
    with raises_naming(path, "image 0", "height/width"):
        load(sample_copy)


def test_segment_png_in_another_format_is_refused(sample_copy, raises_naming):
    # a TIFF saved as .png: its ids would read right, but the format says PNG (and a JPEG's
    # lossy compression would change them)
    png = sample_copy / "panoptic" / "000000142238.png"
    ids = read_segment_png(png)
    Image.open(png).save(png, format="TIFF")
    with raises_naming(png, None, "format") as e:
        load(sample_copy).id_map(IMAGE)
    assert "expected a PNG file, got a TIFF image" in str(e.value)
    write_segment_png(png, ids)
    assert (load(sample_copy).id_map(IMAGE) == ids).all()


def test_png_size_is_checked_before_decoding(sample_copy, raises_naming):
    # a few kB claiming 640 x 65536: decoded to ids, 1 GB (24 bytes a pixel)
    png = sample_copy / "panoptic" / "000000142238.png"
    Image.new("1", (640, 65536)).save(png)
    assert png.stat().st_size < 100_000
    tracemalloc.start()
    try:
        with raises_naming(png, None, "size") as e:
            load(sample_copy).id_map(IMAGE)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "640x65536 (WxH) differs from the 640x427 of image 142238" in str(e.value)
    assert peak < 20 * 2**20
