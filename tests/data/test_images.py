"""read_image: an image file whose bytes are not the format its suffix says is refused."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from groundkit.data.images import read_image
from groundkit.errors import InputError

PIXELS = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)


@pytest.mark.parametrize("name, saved_as, found", [
    ("tiff.png", "TIFF", "TIFF"), ("png.jpg", "PNG", "PNG"), ("jpeg.png", "JPEG", "JPEG"),
    ("gif.tif", "GIF", "GIF")])
def test_bytes_of_another_format_than_the_suffix_are_refused(tmp_path, name, saved_as, found):
    Image.fromarray(PIXELS).save(tmp_path / name, format=saved_as)
    with pytest.raises(InputError, match=rf"{name}: the file is a {found} image, not the "):
        read_image(tmp_path / name)


@pytest.mark.parametrize("name, saved_as", [
    ("a.png", "PNG"), ("a.JPG", "JPEG"), ("a.jpeg", "JPEG"), ("a.tif", "TIFF"),
    ("phone.jpg", "MPO"),  # a multi-picture JPEG, as phones write: Pillow calls it MPO
    ("no_suffix", "PNG"), ("a.unknown", "PNG")])  # no suffix Pillow knows: nothing to compare
def test_matching_or_unknown_suffixes_are_read(tmp_path, name, saved_as):
    picture = Image.fromarray(PIXELS)
    frames = {"save_all": True, "append_images": [picture]} if saved_as == "MPO" else {}
    picture.save(tmp_path / name, format=saved_as, **frames)
    assert Image.open(tmp_path / name).format == saved_as
    image = read_image(tmp_path / name)
    assert image.shape == (4, 5, 3)
    if saved_as in ("PNG", "TIFF"):
        assert (image == PIXELS).all()


def test_a_corrupt_header_is_a_named_error(tmp_path):
    """Pillow raises ValueError for a PNG whose IHDR chunk is cut short (found by fuzzing)."""
    path = tmp_path / "cut_header.png"
    Image.fromarray(PIXELS).save(path)
    data = bytearray(path.read_bytes())
    data[8:12] = (5).to_bytes(4, "big")          # IHDR's length: 5 of its 13 bytes
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="cut_header.png"):
        read_image(path)
