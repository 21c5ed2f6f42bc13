"""The layout issue 19 asks for, kept: module count and size, layers, no import cycles.

Layers, lowest first: the top-level modules of `tracker` (settings, db, logs, ...) are the
base; then tasks -> upstream -> storage -> flows -> web and cli. An import (at the top of a
module or inside a function) never points to a higher layer, and no chain of imports comes
back to where it started.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

TRACKER = Path(__file__).resolve().parent.parent / "tracker"
LAYERS = {"base": 0, "tasks": 1, "upstream": 2, "storage": 3, "flows": 4, "web": 5, "cli": 5}
MOST_MODULES = 70
MOST_LINES = 300


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(TRACKER.rglob("*.py")):
        parts = list(path.relative_to(TRACKER.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS):
        return LAYERS[parts[1]]
    return LAYERS["base"]


def imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """Every tracker module `module` imports, with the line (TYPE_CHECKING blocks skipped)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module and name != "tracker":
                yield name, node.lineno


def test_at_most_70_modules_none_over_300_lines() -> None:
    found = modules()
    long = {m: n for m, p in found.items() if (n := len(p.read_text().splitlines())) > MOST_LINES}
    assert long == {}
    assert len(found) <= MOST_MODULES, sorted(found)


def test_no_two_modules_share_a_name() -> None:
    """One thing, one name: `callbacks` is the route's, not also the store's (issue 19)."""
    names = [path.stem for path in modules().values() if path.name != "__init__.py"]
    assert sorted({name for name in names if names.count(name) > 1}) == []


def test_no_import_points_to_a_higher_layer() -> None:
    found = modules()
    upward = [
        f"{module}:{line} imports {target}"
        for module, path in found.items()
        for target, line in imports(module, path, found)
        if layer(target) > layer(module)
    ]
    assert upward == []


def test_no_import_cycles() -> None:
    found = modules()
    graph = {m: {t for t, _ in imports(m, p, found)} for m, p in found.items()}
    # a package's __init__ importing its own children is how a package is made, not a cycle
    for module in graph:
        graph[module] = {t for t in graph[module] if not t.startswith(module + ".")}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


@pytest.mark.parametrize("module", ["tracker.tasks.store", "tracker.web.app"])
def test_the_checks_see_imports(module: str) -> None:
    """The tests above read real imports (a parser that found none would pass anything)."""
    found = modules()
    assert list(imports(module, found[module], found))
