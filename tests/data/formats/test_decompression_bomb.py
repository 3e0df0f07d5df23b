"""Images whose header claims more pixels than Pillow's decompression-bomb limit: refused with an
error naming the file, before any pixel is decoded."""
from __future__ import annotations

import warnings

import pytest
from PIL import Image

from groundkit.data.formats.coco_panoptic import read_segment_png
from groundkit.data.images import read_image
from groundkit.errors import FormatError, InputError


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """A 20000 x 20000 PNG of a few kB: twice Pillow's default limit (89.5 M pixels) is 179 M."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (20000, 20000)).save(path)
    assert path.stat().st_size < 100_000
    return path


def test_read_image_refuses_a_decompression_bomb(bomb):
    with pytest.raises(InputError, match=r"bomb\.png: .*decompression bomb"):
        read_image(bomb)


def test_read_segment_png_refuses_a_decompression_bomb(bomb):
    with pytest.raises(FormatError, match=r"bomb\.png: .*decompression bomb") as e:
        read_segment_png(bomb)
    assert e.value.file == str(bomb)


def test_a_bomb_warning_turned_error_is_refused_too(tmp_path, monkeypatch):
    # between Pillow's limit and twice it, Pillow warns; `-W error` makes the warning raise
    path = tmp_path / "big.png"
    Image.new("1", (12, 12)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(InputError, match=r"big\.png: .*decompression bomb"):
            read_image(path)
        with pytest.raises(FormatError, match=r"big\.png: .*decompression bomb"):
            read_segment_png(path)
