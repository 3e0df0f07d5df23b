"""Property-based fuzz of every reader of ``data/formats`` and every scorer of ``metrics/files``.

From valid small files (the real sample and files the writers make), hypothesis mutates one file a
target reads (hostile JSON values, missing keys, deep nesting, duplicated items; damaged or
disguised PNGs; damaged pickles) and the target must either accept it or raise one of groundkit's
typed errors, without allocating more than its ``memory_limit`` on the way. Derandomized and
bounded (a few dozen cases per target, a few seconds in all) for ``make test``; the longer random
fuzz is ``benchmarks/fuzz_readers.py``.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# pycocotools' decoder trips a NumPy 2 deprecation on every call; the result is right
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _load_fuzzing():
    name = "groundkit_tests_fuzzing"  # loaded by path: the tests are imported in importlib mode
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("fuzzing.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before running it: its dataclasses look themselves up there
        spec.loader.exec_module(module)
    return sys.modules[name]


fuzzing = _load_fuzzing()
CASES_PER_TARGET = 60


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> Path:
    return fuzzing.make_seeds(tmp_path_factory.mktemp("fuzz") / "seeds")


@pytest.mark.parametrize("name", sorted(fuzzing.TARGETS))
def test_seed_files_are_accepted(seeds, name):
    # otherwise every case would stop at the first error and the fuzz would reach nothing deeper
    target = fuzzing.TARGETS[name]
    outcome = fuzzing.execute(target, {r: seeds / rel for r, (rel, _) in target.roles.items()},
                              seeds)
    assert outcome.kind == "accepted", outcome.describe() + "\n" + outcome.trace


@pytest.mark.parametrize("name", sorted(fuzzing.TARGETS))
def test_mutated_files_give_typed_errors_only(seeds, name):
    target = fuzzing.TARGETS[name]
    tried = []

    @settings(max_examples=CASES_PER_TARGET, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def case(data):
        case_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=seeds.parent))
        try:
            outcome = fuzzing.run_case(target, seeds, fuzzing.DataChooser(data), case_dir)
            tried.append(outcome.kind)
            assert outcome.kind != "escape", f"{name}: {outcome.describe()}\n{outcome.trace}"
        finally:
            shutil.rmtree(case_dir)

    case()
    assert len(tried) >= CASES_PER_TARGET // 2  # hypothesis may skip a few
    assert "typed" in tried  # the mutations do reach the checks
