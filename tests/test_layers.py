"""The package's layering (shared/DESIGN.md): imports point down, no cycles, no family switches.

Every ``import`` in every module counts, at module level or inside a function: a lazy import
still couples the layers.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import groundkit
from groundkit.models import families, model_types

PACKAGE = Path(groundkit.__file__).parent
TOP = {"api", "commands", "visualize", "cli", "app"}    # user entry points and pictures
LOWER = {"engine", "models", "data", "metrics", "vision", "text", "ops"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(name: str) -> str | None:
    """The package module that ``name`` (a module, or a name inside one) lives in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """The groundkit modules ``module`` imports, anywhere in its file."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {resolve(a.name) for a in node.names if a.name.startswith("groundkit")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, ``level - 1`` steps up
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            if base.startswith("groundkit"):
                found |= {resolve(f"{base}.{a.name}") for a in node.names}
    return {m for m in found if m is not None and m != module}


GRAPH = {m: imports_of(m) for m in MODULES}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_graph_sees_known_edges():
    # guards the checker itself: a parser that found nothing would pass every rule below
    assert "groundkit.engine.trainer" in GRAPH["groundkit.engine.tasks"]
    assert "groundkit.models.grounding" in GRAPH["groundkit.models.ppmn"]
    assert "groundkit.engine.tasks" in GRAPH["groundkit.api"]


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) in LOWER))
def test_lower_layers_never_import_entry_points(module):
    upward = {d for d in GRAPH[module] if layer(d) in TOP}
    assert not upward, f"{module} imports {sorted(upward)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) in {"models", "data",
                                                                              "metrics", "vision",
                                                                              "text", "ops"}))
def test_models_and_below_never_import_the_engine(module):
    assert not {d for d in GRAPH[module] if layer(d) == "engine"}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) in {"data", "metrics"}))
def test_data_and_metrics_never_import_models(module):
    assert not {d for d in GRAPH[module] if layer(d) == "models"}


def test_no_import_cycles():
    cycles, done = [], set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycles.append(path[path.index(module):] + [module])
            return
        if module in done:
            return
        for dep in sorted(GRAPH[module]):
            visit(dep, path + [module])
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, [])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_experiment_configs_are_declared_not_made_at_run_time():
    for module, path in MODULES.items():
        if layer(module) == "engine":
            assert "make_dataclass" not in path.read_text(), module


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) == "commands"))
def test_commands_never_switch_on_a_family_or_model_type(module):
    names = set(model_types()) | set(families())
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Compare):
            literals = {n.value for n in ast.walk(node) if isinstance(n, ast.Constant)}
            assert not literals & names, f"{module}:{node.lineno} compares with {literals & names}"
