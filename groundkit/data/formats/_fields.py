"""Reading untrusted JSON: every failure becomes a FormatError naming the file, item and field."""
from __future__ import annotations

import json
import math
import re
import reprlib
from pathlib import Path
from typing import Any, Iterable

from groundkit.errors import FormatError

# What a field may hold, by kind name: accepted Python types, then the words of error messages.
_KINDS: dict[str, tuple[tuple[type, ...], str, str]] = {
    "int": ((int,), "an integer", "integers"),
    "number": ((int, float), "a number", "numbers"),
    "str": ((str,), "a string", "strings"),
    "bool": ((bool,), "true or false", "booleans"),
    "flag": ((int, bool), "0, 1, true or false", "flags"),  # COCO writes 0/1 where it means a bool
    "id": ((int, str), "an integer id", "integer ids"),  # PNG narratives write ids as strings
    "list": ((list,), "a list", "lists"),
    "object": ((dict,), "an object", "objects"),
}


def read_json(path: str | Path) -> Any:
    """Parse the JSON file ``path``; a missing file or bad JSON is a FormatError with line/column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FormatError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(path, f"cannot read the file: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise FormatError(path, f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except RecursionError:  # e.g. 100,000 nested '[': no dataset nests more than a few levels
        raise FormatError(path, "invalid JSON: nested too deeply") from None
    except ValueError as e:  # an integer of more digits than Python's int max-str-digits limit
        raise FormatError(path, f"invalid JSON: {e}") from None


def is_kind(value: Any, kind: str) -> bool:
    """Whether ``value`` is of ``kind`` (see ``_KINDS``); JSON true/false are not numbers, and a
    "number" is finite (Python's JSON reads ``NaN``, ``Infinity`` and ``1e999``)."""
    if isinstance(value, bool) and kind in ("int", "number"):
        return False
    if kind == "flag":
        return isinstance(value, (int, bool)) and value in (0, 1)
    if kind == "number":
        return isinstance(value, (int, float)) and _finite(value)
    return isinstance(value, _KINDS[kind][0])


def _finite(value: int | float) -> bool:
    """Whether ``value`` is a finite float, or an int a float can hold (10**400 is not one)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _expected(value: Any, kind: str, plural: bool = False) -> str:
    """``_KINDS``' words for ``kind``, with "finite" before them when ``value`` is a number that
    is not."""
    words = _KINDS[kind][2 if plural else 1]
    if kind == "number" and not isinstance(value, bool) and isinstance(value, (int, float)):
        return "finite numbers" if plural else "a finite number"
    return words


def get(obj: Any, key: str, kind: str, file: str | Path | None, item: str,
        default: Any = ...) -> Any:
    """``obj[key]`` checked to be of ``kind``; ``default`` (when given) stands in for a missing key."""
    if not isinstance(obj, dict):
        raise FormatError(file, f"expected a JSON object, got {_short(obj)}", item=item)
    if key not in obj:
        if default is not ...:
            return default
        raise FormatError(file, "missing", item=item, field=key)
    value = obj[key]
    if not is_kind(value, kind):
        raise FormatError(file, f"expected {_expected(value, kind)}, got {_short(value)}", item=item,
                          field=key)
    return value


def get_list(obj: Any, key: str, kind: str, file: str | Path | None, item: str,
             length: int | None = None, default: Any = ...) -> list[Any]:
    """``obj[key]`` checked to be a list of ``kind`` values (of ``length`` items when given)."""
    values = get(obj, key, "list", file, item, default)
    if values is default:
        return values
    bad = [v for v in values if not is_kind(v, kind)]
    if (length is not None and len(values) != length) or bad:
        size = f"{length} " if length is not None else ""
        words = _expected(bad[0], kind, plural=True) if bad else _KINDS[kind][2]
        raise FormatError(file, f"expected a list of {size}{words}, got {_short(values)}", item=item,
                          field=key)
    return values


# Ids go into int64 arrays (category ids of the PQ tables, segment ids of the id maps).
MAX_ID = 2**63 - 1
# A COCO panoptic PNG holds a segment id in its 3 bytes of RGB; 0 is VOID.
MAX_SEGMENT_ID = 256**3 - 1
_BOUNDS = {MAX_ID: "2**63 - 1", MAX_SEGMENT_ID: "256**3 - 1"}  # as error messages write them


def get_int(obj: Any, key: str, file: str | Path | None, item: str, low: int = 0,
            high: int = MAX_ID, default: Any = ...) -> int:
    """``obj[key]``, an integer (not true/false) in ``[low, high]``: an id, an index, a count.

    Negative ids name nothing, and an id past int64 overflows the arrays it goes into.
    """
    value = get(obj, key, "int", file, item, default)
    if isinstance(obj, dict) and key not in obj:
        return value
    return in_range(value, low, high, file, item, key)


def in_range(value: int, low: int, high: int, file: str | Path | None, item: str,
             field: str) -> int:
    """``value`` (an int) unless it lies outside ``[low, high]``: then a FormatError."""
    if not low <= value <= high:
        raise FormatError(file, f"expected an integer from {low} to {_BOUNDS.get(high, high)}, got "
                          f"{_short(value)}", item=item, field=field)
    return value


def get_number(obj: Any, key: str, file: str | Path | None, item: str, low: float | None = None,
               default: Any = ...) -> float | int:
    """``obj[key]``, a finite number (at least ``low`` when given): an area, a score."""
    value = get(obj, key, "number", file, item, default)
    if isinstance(obj, dict) and key not in obj:
        return value
    if low is not None and value < low:
        raise FormatError(file, f"expected a number of at least {low}, got {_short(value)}",
                          item=item, field=key)
    return value


def get_box(obj: Any, key: str, file: str | Path | None, item: str,
            default: Any = ...) -> tuple[float | int, ...]:
    """``obj[key]``, a COCO box ``[x, y, w, h]`` of four finite, non-negative numbers."""
    box = get_list(obj, key, "number", file, item, length=4, default=default)
    if isinstance(obj, dict) and key not in obj:
        return box
    if min(box) < 0:
        raise FormatError(file, f"expected a box [x, y, w, h] of non-negative numbers, got "
                          f"{_short(box)}", item=item, field=key)
    return tuple(box)


def get_color(obj: Any, key: str, file: str | Path | None, item: str,
              default: Any = ...) -> tuple[int, int, int]:
    """``obj[key]``, an RGB colour ``[r, g, b]`` of three integers in [0, 255]."""
    color = get_list(obj, key, "int", file, item, length=3, default=default)
    if not all(0 <= c <= 255 for c in color):
        raise FormatError(file, f"expected a colour [r, g, b] of integers from 0 to 255, got "
                          f"{_short(color)}", item=item, field=key)
    return tuple(color)


# The largest image side accepted. JPEG's own limit; it keeps H * W < 2**32, so every RLE run fits
# the 32-bit counts of pycocotools, whose C code overflows (and has segfaulted, on a polygon of an
# image 2**31 high) past it, and bounds the masks decoded at an image's size.
MAX_IMAGE_SIDE = 2**16 - 1
# The most pixels an image may have: Pillow's decompression-bomb limit (2 * Image.MAX_IMAGE_PIXELS
# by default), past which `read_image` refuses the image itself. A JSON declaring a larger image
# would have masks decoded at its size (4.3 GB at 65535 x 65535) from a few bytes of RLE.
MAX_IMAGE_PIXELS = 2 * 89_478_485


def image_side(obj: Any, key: str, file: str | Path | None, item: str) -> int:
    """``obj[key]``, an image's ``height`` or ``width``: an integer in [1, MAX_IMAGE_SIDE]."""
    value = get(obj, key, "int", file, item)
    if not 1 <= value <= MAX_IMAGE_SIDE:
        raise FormatError(file, f"expected an image side of 1 to {MAX_IMAGE_SIDE} pixels, got "
                          f"{_short(value)}", item=item, field=key)
    return value


def image_size(obj: Any, file: str | Path | None, item: str) -> tuple[int, int]:
    """``(height, width)`` of an image record: each side in [1, MAX_IMAGE_SIDE], and at most
    MAX_IMAGE_PIXELS pixels in all."""
    height, width = image_side(obj, "height", file, item), image_side(obj, "width", file, item)
    if height * width > MAX_IMAGE_PIXELS:
        raise FormatError(file, f"expected at most {MAX_IMAGE_PIXELS} pixels (Pillow's "
                          f"decompression-bomb limit), got {height}x{width} = {height * width}",
                          item=item, field="height/width")
    return height, width


def by_id(records: Iterable[Any], file: str | Path | None, kind: str) -> dict[int, Any]:
    """Records keyed by their ``id``; a repeated id is a FormatError."""
    out: dict[int, Any] = {}
    for r in records:
        if r.id in out:
            raise FormatError(file, f"duplicate {kind} id {r.id}")
        out[r.id] = r
    return out


_DIGITS = re.compile(r"\s*[0-9]{1,19}\s*")  # ASCII digits only: str.isdigit() takes '²'


def int_id(value: Any, file: str | Path | None, item: str, field: str, high: int = MAX_ID) -> int:
    """An id in [0, ``high``] written as an int or as the string of an int (PNG narratives write
    ``"226461"``)."""
    if is_kind(value, "int"):
        return in_range(value, 0, high, file, item, field)
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return in_range(int(value), 0, high, file, item, field)
    raise FormatError(file, f"expected an integer id, got {_short(value)}", item=item, field=field)


def _short(value: Any, limit: int = 60) -> str:
    """The start of ``repr(value)`` for an error message, at bounded cost whatever ``value`` is: a
    pickle can nest lists a million deep, or share one list at every level of a 100-level tree
    (2**100 items to print), in a few hundred bytes."""
    try:
        text = _BRIEF.repr(value) if _larger_than(value, 1000) else repr(value)
    except ValueError:  # an int past Python's max-str-digits (a pickle may hold one)
        if isinstance(value, int):
            return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
        return "a value too long to print"
    return text if len(text) <= limit else text[:limit] + "..."


_BRIEF = reprlib.Repr()  # a few items of the first few levels
_BRIEF.maxlevel, _BRIEF.maxlist, _BRIEF.maxtuple, _BRIEF.maxdict, _BRIEF.maxset = 3, 4, 4, 4, 4
_BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlong = 60, 60, 60


def _larger_than(value: Any, budget: int) -> bool:
    """Whether ``value`` holds more than ``budget`` containers and items, counted (at most
    ``budget + 1`` of them) with shared ones counted each time they are met."""
    stack, seen = [value], 0
    while stack:
        x = stack.pop()
        seen += 1
        if seen > budget:
            return True
        if isinstance(x, (dict, list, tuple, set, frozenset)):
            if seen + len(stack) + len(x) > budget:
                return True
            stack.extend(x.values() if isinstance(x, dict) else x)
    return False
