import sys
import types

import pytest

from groundkit.errors import InputError
from groundkit.text import phrases
from groundkit.text.phrases import check_spans, noun_chunk_spans, parse_marked_caption, parse_spans


def test_parse_marked_caption():
    caption, spans = parse_marked_caption("There is [a red circle] next to [the grass].")
    assert caption == "There is a red circle next to the grass."
    assert [caption[s:e] for s, e in spans] == ["a red circle", "the grass"]


def test_parse_trims_spaces_inside_brackets_and_accepts_no_marks():
    caption, spans = parse_marked_caption("[ two dogs ]and [a cat]")
    assert caption == " two dogs and a cat"
    assert [caption[s:e] for s, e in spans] == ["two dogs", "a cat"]
    assert parse_marked_caption("no phrases here") == ("no phrases here", [])


@pytest.mark.parametrize("text,message", [
    ("a [big [red] ball]", "nested '\\[' at position 7"),
    ("a [big ball", "'\\[' at position 2 is never closed"),
    ("a big] ball", "'\\]' at position 5 closes no"),
    ("an [ ] empty one", "empty phrase .* at position 3"),
])
def test_parse_errors_name_the_position(text, message):
    with pytest.raises(InputError, match=message):
        parse_marked_caption(text)


def test_check_spans_accepts_and_normalises():
    import numpy as np
    caption = "a dog and a cat"
    assert check_spans(caption, [[10, 15], (np.int64(0), 5)]) == [(10, 15), (0, 5)]
    assert check_spans(caption, []) == []


@pytest.mark.parametrize("spans,message", [
    ([(0, 5), (4, 9)], "span 0 .* and span 1 .* overlap"),
    ([(3, 3)], "span 0"),
    ([(10, 99)], "caption length"),
    ([(-1, 2)], "span 0"),
    ([(5, 6)], "only spaces"),
    ([(0, 2, 3)], "two integers"),
    ([(0.5, 2)], "two integers"),
])
def test_check_spans_rejects(spans, message):
    with pytest.raises(InputError, match=message):
        check_spans("a dog and a cat", spans)


def test_parse_spans_reads_the_command_line_form():
    assert parse_spans("9:21,30:39") == [(9, 21), (30, 39)]
    assert parse_spans(" 0:5 , 6:9 ") == [(0, 5), (6, 9)]


@pytest.mark.parametrize("text,message", [
    ("", "got nothing"),
    ("9-21", "item 0 '9-21': expected START:END"),
    ("0:5,", "item 1 '': expected START:END"),
    ("0:5,a:b", "item 1 'a:b'"),
])
def test_parse_spans_rejects_what_is_not_start_end(text, message):
    with pytest.raises(InputError, match=message):
        parse_spans(text)


@pytest.fixture(autouse=True)
def fresh_spacy_cache():
    phrases._load_spacy.cache_clear()
    yield
    phrases._load_spacy.cache_clear()


def test_without_spacy_the_message_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "spacy", None)  # import spacy -> ImportError
    with pytest.raises(InputError, match=r"groundkit\[spacy\].*en_core_web_sm.*brackets"):
        noun_chunk_spans("a dog on the grass")


def fake_spacy(installed):
    """A stand-in spaCy whose 'English model' calls each run of non-space text a noun chunk."""
    import re

    class Doc:
        def __init__(self, text):
            self.noun_chunks = [types.SimpleNamespace(start_char=m.start(), end_char=m.end())
                                for m in re.finditer(r"\S+", text)]

    def load(name):
        if name not in installed:
            raise OSError(f"[E050] Can't find model '{name}'")
        return Doc

    return types.SimpleNamespace(load=load)


def test_with_spacy_returns_chunk_spans(monkeypatch):
    monkeypatch.setitem(sys.modules, "spacy", fake_spacy({"en_core_web_md"}))
    assert noun_chunk_spans("dogs  run") == [(0, 4), (6, 9)]


def test_spacy_without_english_model(monkeypatch):
    monkeypatch.setitem(sys.modules, "spacy", fake_spacy(set()))
    with pytest.raises(InputError, match="no spaCy English model installed.*spacy download"):
        noun_chunk_spans("a dog")
