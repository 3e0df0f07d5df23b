from __future__ import annotations

import numpy as np
import pytest
import torch

from groundkit.errors import InputError
from groundkit.ops.masks import (
    check_rle,
    decode_rle,
    encode_rle,
    erode,
    masks_to_rles,
    polygons_to_mask,
    resize_masks,
    rle_runs,
    rles_to_masks,
    segmentation_to_mask,
)


def column_major_runs(mask: np.ndarray) -> list[int]:
    """Slow literal reference: COCO's uncompressed RLE (runs over the column-major pixels, 0s first)."""
    runs, current, count = [], False, 0
    for value in mask.T.ravel():
        if value != current:
            runs.append(count)
            current, count = value, 0
        count += 1
    return runs + [count]


def test_rle_round_trip_and_str_counts():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (7, 9), (40, 3)]:
        mask = rng.random(shape) > 0.6
        rle = encode_rle(mask)
        assert rle["size"] == list(shape) and isinstance(rle["counts"], str)
        assert (decode_rle(rle) == mask).all()
        assert (decode_rle({**rle, "counts": rle["counts"].encode()}) == mask).all()  # bytes too


def test_uncompressed_rle_matches_literal_runs():
    mask = np.zeros((4, 5), dtype=bool)
    mask[1:3, 2:4] = True
    runs = column_major_runs(mask)
    assert runs == [9, 2, 2, 2, 5]
    assert (decode_rle({"size": [4, 5], "counts": runs}) == mask).all()


def test_rle_runs_of_compressed_strings_match_literal_runs():
    rng = np.random.default_rng(1)
    for shape, density in [((5, 5), 0.5), ((60, 70), 0.01), ((300, 200), 0.999), ((3, 1), 0.0)]:
        mask = rng.random(shape) < density
        assert rle_runs(encode_rle(mask)["counts"]).tolist() == column_major_runs(mask)
    long_runs = np.zeros((1000, 1000), dtype=bool)  # runs of ~10**6 need 5 characters
    long_runs[500:, 999] = True
    assert rle_runs(encode_rle(long_runs)["counts"]).tolist() == column_major_runs(long_runs)


def test_invalid_rle_is_refused_not_decoded_into_garbage():
    two_by_two = encode_rle(np.ones((2, 2), bool))  # runs [0, 4]
    with pytest.raises(InputError, match=r"runs cover 4 pixels, not the 3x3 = 9"):
        decode_rle({**two_by_two, "size": [3, 3]})
    with pytest.raises(InputError, match="cover 3 pixels"):
        decode_rle({"size": [3, 3], "counts": [1, 2]})
    with pytest.raises(InputError, match="not a COCO RLE string"):
        decode_rle({"size": [3, 3], "counts": "0 4"})
    with pytest.raises(InputError, match="not a COCO RLE string"):
        check_rle({"size": [3, 3], "counts": "0o"})  # ends inside a run
    with pytest.raises(InputError, match="negative run"):
        check_rle({"size": [1, 1], "counts": [2, -1]})
    assert check_rle(two_by_two) == (2, 2)


def test_many_masks():
    masks = np.zeros((3, 6, 8), dtype=bool)
    masks[1, 2:4, 1:7] = True
    masks[2] = True
    rles = masks_to_rles(masks)
    assert len(rles) == 3
    assert (rles_to_masks(rles) == masks).all()
    assert rles_to_masks([], size=(6, 8)).shape == (0, 6, 8)


def test_polygon_rasterises_a_rectangle():
    mask = polygons_to_mask([[1, 1, 6, 1, 6, 5, 1, 5]], 8, 8)
    expected = np.zeros((8, 8), dtype=bool)
    expected[1:5, 1:6] = True  # pycocotools' pixel-centre convention
    assert (mask == expected).all()
    assert not polygons_to_mask([[1, 1, 2, 2]], 8, 8).any()  # a degenerate polygon encloses nothing
    assert (segmentation_to_mask([[1, 1, 6, 1, 6, 5, 1, 5]], 8, 8) == expected).all()
    assert (segmentation_to_mask(encode_rle(expected), 8, 8) == expected).all()


def test_bad_input_is_an_input_error():
    with pytest.raises(InputError, match="'size'"):
        decode_rle({"size": [3], "counts": "0"})
    with pytest.raises(InputError, match="'counts'"):
        decode_rle({"size": [3, 3], "counts": 5})
    with pytest.raises(InputError, match=r"\(H, W\)"):
        encode_rle(np.zeros((2, 2, 2)))
    with pytest.raises(InputError, match="lists of numbers"):
        polygons_to_mask([[1, 2, "x", 4, 5, 6]], 8, 8)
    with pytest.raises(InputError, match="differs from the image size"):
        segmentation_to_mask(encode_rle(np.zeros((2, 3))), 3, 2)


def test_segmentation_size_is_checked_before_decoding(monkeypatch):
    # a few bytes declaring a 60000 x 60000 mask: decoded, it would take 3.6 GB
    import groundkit.ops.masks as masks

    def no_decode(compressed):
        raise AssertionError(f"decoded {compressed}")

    monkeypatch.setattr(masks, "_decode", no_decode)
    with pytest.raises(InputError, match=r"RLE size \[60000, 60000\] differs from the image size"):
        segmentation_to_mask({"size": [60000, 60000], "counts": [60000 * 60000]}, 8, 8)


def test_resize_masks():
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True
    out = resize_masks(masks, (8, 8))
    assert out.dtype == torch.bool and out.shape == (2, 8, 8)
    assert out[0, :4, :4].all() and out[0].sum() == 16 and not out[1].any()
    logits = torch.randn(3, 5, 5, requires_grad=True)
    up = resize_masks(logits, (10, 7), mode="bilinear")
    assert up.shape == (3, 10, 7)
    up.sum().backward()
    assert logits.grad is not None
    assert resize_masks(torch.zeros(0, 4, 4), (2, 2)).shape == (0, 2, 2)
    with pytest.raises(InputError):
        resize_masks(masks, (8, 8), mode="cubic")


def test_erode_keeps_the_image_edge():
    mask = np.zeros((6, 7), bool)
    mask[:4, :5] = True  # touches the top and left edges of the image
    once = erode(mask)
    assert once is not mask
    expected = np.zeros_like(mask)
    expected[:3, :4] = True  # only the sides inside the image are eroded
    assert (once == expected).all() and mask[:4, :5].all()
    twice = np.zeros_like(mask)
    twice[:2, :3] = True
    assert (erode(mask, 2) == twice).all() and (erode(once) == twice).all()
    assert erode(np.ones((3, 3), bool)).all()
