from __future__ import annotations

import errno
import json
import logging

import pytest

from groundkit.engine.logging import MetricsLogger, read_metrics
from groundkit.errors import FormatError, WriteError


def write_log(path, lines: list[str], tail: str = "") -> None:
    path.write_text("".join(line + "\n" for line in lines) + tail)


RECORDS = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (1, 2, 3)]


def test_an_incomplete_last_line_is_dropped_with_a_warning(tmp_path, caplog):
    write_log(tmp_path / "metrics.jsonl", RECORDS, tail='{"step": 4, "lo')  # disk full mid-write
    with caplog.at_level(logging.WARNING, logger="groundkit"):
        assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    assert "metrics.jsonl: line 4 is incomplete" in caplog.text

    write_log(tmp_path / "metrics.jsonl", RECORDS, tail="\0\0\0\0\n\n")  # a zero-filled tail
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]

    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.truncate_after(2)
    assert (tmp_path / "metrics.jsonl").read_text() == "".join(r + "\n" for r in RECORDS[:2])


def test_a_bad_line_before_the_last_is_a_format_error_naming_file_and_line(tmp_path):
    write_log(tmp_path / "metrics.jsonl", [RECORDS[0], '{"step": 2, "lo', RECORDS[2]])
    with pytest.raises(FormatError, match=r"metrics.jsonl: line 2: expected one JSON object per "
                                          r"line, got not valid JSON"):
        read_metrics(tmp_path)
    with pytest.raises(FormatError, match="metrics.jsonl: line 2"):
        MetricsLogger(tmp_path, tensorboard=False).truncate_after(5)
    write_log(tmp_path / "metrics.jsonl", [RECORDS[0], "", "[1, 2]", RECORDS[2]])
    with pytest.raises(FormatError, match="line 3: expected one JSON object per line, got a JSON "
                                          "list"):
        read_metrics(tmp_path / "metrics.jsonl")


def test_reset_does_not_read_the_old_log(tmp_path):
    write_log(tmp_path / "metrics.jsonl", ["garbage", "more garbage"])
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.reset()
    logger.log({"step": 1, "loss": 0.5})
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 0.5}]


def test_a_full_disk_while_logging_is_a_write_error(tmp_path, monkeypatch):
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.log({"step": 1})

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(tmp_path), "open", full)
    with pytest.raises(WriteError, match="metrics.jsonl: could not append a record: no space left "
                                         "on device"):
        logger.log({"step": 2})
