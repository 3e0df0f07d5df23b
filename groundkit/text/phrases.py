"""The phrases of a user's caption: marked inline with brackets, given as spans, or found by spaCy.

Spans are ``(start, end)`` character ranges, end exclusive, into the caption as the model sees it
(without brackets). Brackets are markup only: a caption cannot hold a literal "[" or "]".
"""
from __future__ import annotations

import operator
from collections.abc import Sequence
from functools import lru_cache

from groundkit.errors import InputError

SPACY_MODELS = ("en_core_web_sm", "en_core_web_md", "en_core_web_lg", "en_core_web_trf")


def _excerpt(text: str, pos: int, width: int = 20) -> str:
    """A short view of ``text`` around ``pos`` for error messages."""
    return repr(text[max(0, pos - width):pos + width])


def parse_marked_caption(text: str) -> tuple[str, list[tuple[int, int]]]:
    """Split "There is [a red circle] next to [the grass]." into the caption without brackets and
    the spans of the bracketed phrases (spaces just inside a bracket are left out of the span).

    Raises InputError, naming the position in ``text``, for nested, unclosed, unopened or empty
    brackets.
    """
    if not isinstance(text, str):
        raise InputError(f"caption: expected a string, got {type(text).__name__}")
    chars: list[str] = []
    spans: list[tuple[int, int]] = []
    open_at = None  # position in ``text`` of the "[" now open
    open_out = 0  # length of the output when it opened
    for i, ch in enumerate(text):
        if ch == "[":
            if open_at is not None:
                raise InputError(f"caption: nested '[' at position {i} (the '[' at position "
                                 f"{open_at} is still open) near {_excerpt(text, i)}")
            open_at, open_out = i, len(chars)
        elif ch == "]":
            if open_at is None:
                raise InputError(f"caption: ']' at position {i} closes no '[' near {_excerpt(text, i)}")
            phrase = "".join(chars[open_out:])
            if not phrase.strip():
                raise InputError(f"caption: empty phrase '[]' at position {open_at} near "
                                 f"{_excerpt(text, open_at)}")
            start = open_out + len(phrase) - len(phrase.lstrip())
            end = open_out + len(phrase.rstrip())
            spans.append((start, end))
            open_at = None
        else:
            chars.append(ch)
    if open_at is not None:
        raise InputError(f"caption: '[' at position {open_at} is never closed near "
                         f"{_excerpt(text, open_at)}")
    return "".join(chars), spans


def check_spans(caption: str, spans: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """Validate phrase spans of ``caption`` and return them as ``(start, end)`` int tuples.

    Each must be two integers with ``0 <= start < end <= len(caption)``, cover some non-space
    text, and overlap no other span. Raises InputError naming the span index otherwise.
    """
    out = []
    for i, span in enumerate(spans):
        try:
            start, end = (operator.index(v) for v in span)
        except (TypeError, ValueError):
            raise InputError(f"span {i}: expected two integers (start, end), got {span!r}") from None
        if not 0 <= start < end <= len(caption):
            raise InputError(f"span {i} ({start}, {end}): expected 0 <= start < end <= "
                             f"{len(caption)} (the caption length)")
        if not caption[start:end].strip():
            raise InputError(f"span {i} ({start}, {end}): covers only spaces")
        out.append((start, end))
    order = sorted(range(len(out)), key=lambda k: out[k])
    for a, b in zip(order, order[1:]):
        if out[b][0] < out[a][1]:
            raise InputError(f"span {a} {out[a]} and span {b} {out[b]} overlap "
                             f"({caption[out[b][0]:out[a][1]]!r})")
    return out


def parse_spans(text: str) -> list[tuple[int, int]]:
    """``"9:21,30:39"`` (how a command line gives phrase spans) -> ``[(9, 21), (30, 39)]``.

    Checks the syntax only; :func:`check_spans` checks them against the caption. Raises
    InputError naming the bad item.
    """
    items = [item.strip() for item in text.split(",")]
    if not text.strip():
        raise InputError("spans: expected START:END pairs separated by commas, e.g. 9:21,30:39; "
                         "got nothing")
    spans = []
    for i, item in enumerate(items):
        start, colon, end = item.partition(":")
        try:
            if not colon:
                raise ValueError
            spans.append((int(start), int(end)))
        except ValueError:
            raise InputError(f"spans: item {i} {item!r}: expected START:END (two integers, end "
                             f"exclusive), e.g. 9:21,30:39") from None
    return spans


def noun_chunk_spans(caption: str, model: str | None = None) -> list[tuple[int, int]]:
    """Spans of the noun chunks of ``caption`` found by spaCy.

    Uses ``model`` or the first installed of :data:`SPACY_MODELS`. Raises InputError, saying
    what to install or how to mark phrases instead, when spaCy or an English model is missing.
    """
    nlp = _load_spacy(model)
    return [(chunk.start_char, chunk.end_char) for chunk in nlp(caption).noun_chunks]


_HOW_TO = ("or mark the phrases in the caption with brackets, e.g. "
           "'[a red ball] on [the grass]', or pass their character spans "
           "(spans=[(0, 10)] in Python, --spans 0:10,14:23 on the command line)")


@lru_cache(maxsize=4)
def _load_spacy(model: str | None):  # -> spacy.Language
    try:
        import spacy
    except ImportError:
        raise InputError("finding phrases automatically needs spaCy: pip install 'groundkit[spacy]' "
                         "and an English model (python -m spacy download en_core_web_sm), "
                         + _HOW_TO) from None
    names = (model,) if model else SPACY_MODELS
    for name in names:
        try:
            return spacy.load(name)
        except OSError:  # spaCy's error for a model that is not installed
            continue
    raise InputError(f"no spaCy English model installed (tried {', '.join(names)}): "
                     f"python -m spacy download {names[0]}, " + _HOW_TO)
