import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

LITERAL = Path(__file__).with_name("literal.py")


@pytest.fixture(scope="session")
def literal() -> ModuleType:
    """The literal reference module (loaded by path: tests are imported in importlib mode)."""
    spec = importlib.util.spec_from_file_location("groundkit_tests_metrics_literal", LITERAL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
