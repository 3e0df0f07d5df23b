from __future__ import annotations

import pytest

from groundkit.data.formats._fields import read_json
from groundkit.errors import FormatError


def test_hostile_json_is_a_format_error(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(FormatError, match=r"deep\.json: .*nested too deeply") as e:
        read_json(deep)
    assert e.value.file == str(deep)
    digits = tmp_path / "digits.json"
    digits.write_text('{"id": ' + "7" * 5000 + "}")
    with pytest.raises(FormatError, match=r"digits\.json: .*digits") as e:
        read_json(digits)
    assert e.value.file == str(digits)
