"""The ``groundkit`` command itself: --version."""
from importlib.metadata import version

import pytest

from groundkit.cli import main


def test_version_prints_the_installed_version_and_exits_0(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"groundkit {version('groundkit')}"
