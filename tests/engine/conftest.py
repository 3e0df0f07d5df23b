from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

TINY_TASK = Path(__file__).with_name("tiny_task.py")


@pytest.fixture(scope="session")
def tiny() -> ModuleType:
    """The tiny task module (loaded by path: tests are imported in importlib mode)."""
    spec = importlib.util.spec_from_file_location("groundkit_tests_tiny_task", TINY_TASK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
