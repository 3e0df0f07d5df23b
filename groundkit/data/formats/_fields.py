"""Reading untrusted JSON: every failure becomes a FormatError naming the file, item and field."""
from __future__ import annotations

import json
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
    """Whether ``value`` is of ``kind`` (see ``_KINDS``); JSON true/false are not numbers."""
    if isinstance(value, bool) and kind in ("int", "number"):
        return False
    if kind == "flag":
        return isinstance(value, (int, bool)) and value in (0, 1)
    return isinstance(value, _KINDS[kind][0])


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
        raise FormatError(file, f"expected {_KINDS[kind][1]}, got {_short(value)}", item=item, field=key)
    return value


def get_list(obj: Any, key: str, kind: str, file: str | Path | None, item: str,
             length: int | None = None, default: Any = ...) -> list[Any]:
    """``obj[key]`` checked to be a list of ``kind`` values (of ``length`` items when given)."""
    values = get(obj, key, "list", file, item, default)
    if values is default:
        return values
    if (length is not None and len(values) != length) or not all(is_kind(v, kind) for v in values):
        size = f"{length} " if length is not None else ""
        raise FormatError(file, f"expected a list of {size}{_KINDS[kind][2]}, "
                          f"got {_short(values)}", item=item, field=key)
    return values


# The largest image side accepted. JPEG's own limit; it keeps H * W < 2**32, so every RLE run fits
# the 32-bit counts of pycocotools, whose C code overflows (and has segfaulted, on a polygon of an
# image 2**31 high) past it, and bounds the masks decoded at an image's size.
MAX_IMAGE_SIDE = 2**16 - 1


def image_side(obj: Any, key: str, file: str | Path | None, item: str) -> int:
    """``obj[key]``, an image's ``height`` or ``width``: an integer in [1, MAX_IMAGE_SIDE]."""
    value = get(obj, key, "int", file, item)
    if not 1 <= value <= MAX_IMAGE_SIDE:
        raise FormatError(file, f"expected an image side of 1 to {MAX_IMAGE_SIDE} pixels, got "
                          f"{_short(value)}", item=item, field=key)
    return value


def by_id(records: Iterable[Any], file: str | Path | None, kind: str) -> dict[int, Any]:
    """Records keyed by their ``id``; a repeated id is a FormatError."""
    out: dict[int, Any] = {}
    for r in records:
        if r.id in out:
            raise FormatError(file, f"duplicate {kind} id {r.id}")
        out[r.id] = r
    return out


def int_id(value: Any, file: str | Path | None, item: str, field: str) -> int:
    """An id written as an int or as the string of an int (PNG narratives write ``"226461"``)."""
    if is_kind(value, "int"):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise FormatError(file, f"expected an integer id, got {_short(value)}", item=item, field=field)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
