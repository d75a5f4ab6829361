"""The layout's rules, read from the source with ``ast``: imports point down, no circles, no private names.

Layers, bottom to top: ``sources`` ← ``feature_repo`` ← ``model`` ← ``api`` ← ``bench`` ← ``cli``.
A module may import its own layer and those below it. Package ``__init__`` files hold a
docstring only, so importing a module never runs a sibling's code by surprise and every
edge below is between two real modules. Imports made inside functions count too: they
still run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["sources", "feature_repo", "model", "api", "bench", "cli"]
RANK = {name: rank for rank, name in enumerate(LAYERS)}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def our_modules() -> dict[str, Path]:
    found = {}
    for layer in LAYERS:
        for path in sorted((REPO / layer).rglob("*.py")):
            found[module_name(path)] = path
    return found


MODULES = our_modules()


def imports(path: Path) -> Iterator[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import of one of our modules."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in RANK:
                    yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in RANK:
                continue
            modules = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
            names = [a.name for a in node.names if f"{node.module}.{a.name}" not in MODULES]
            for module in modules:
                yield module, [], node.lineno
            if names:
                yield node.module, names, node.lineno


def graph() -> dict[str, set[str]]:
    return {name: {target for target, _, _ in imports(path) if target in MODULES} for name, path in MODULES.items()}


def test_every_import_of_ours_names_a_module_that_exists() -> None:
    missing = [f"{name}:{line} imports {target}" for name, path in MODULES.items()
               for target, _, line in imports(path) if target not in MODULES]  # fmt: skip
    assert not missing, "\n".join(missing)


def test_imports_point_down_the_layers() -> None:
    upward = []
    for name, path in MODULES.items():
        for target, _, line in imports(path):
            if RANK[target.split(".")[0]] > RANK[name.split(".")[0]]:
                upward.append(f"{name}:{line} imports {target}, a layer above it")
    assert not upward, "\n".join(upward)


def test_package_inits_hold_no_imports() -> None:
    busy = [name for name, path in MODULES.items() if path.name == "__init__.py" and list(imports(path))]
    assert not busy, f"these __init__ files import our modules: {busy}"


def test_no_private_name_is_imported_from_another_module() -> None:
    private = []
    for name, path in MODULES.items():
        for target, names, line in imports(path):
            leaf = target.rsplit(".", 1)[-1]
            leaked = [n for n in names if n.startswith("_")] or ([target] if leaf.startswith("_") else [])
            if leaked:
                private.append(f"{name}:{line} imports {', '.join(leaked)} from {target}")
    assert not private, "\n".join(private)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A shortest-first depth-first search for one import circle; None when the graph is acyclic."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_there_is_no_import_circle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_recommendation_serving_imports_neither_graphql_nor_http() -> None:
    leaks = []
    for name, path in MODULES.items():
        if not (name.startswith("api.recommendations") or name.startswith("model.serve")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            roots = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])  # fmt: skip
            leaks += [f"{name} imports {r}" for r in roots
                      if r.split(".")[0] in {"strawberry", "starlette", "graphql", "uvicorn"}]  # fmt: skip
    assert not leaks, "\n".join(leaks)


def test_model_serving_never_imports_training_code() -> None:
    edges = graph()
    reached, todo = set(), [m for m in MODULES if m.startswith("model.serve")]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(edges[module])
    training = sorted(m for m in reached if m.startswith("model.train"))
    assert not training, f"model.serve reaches {training}"


def test_only_the_command_line_reaches_experiment_tracking() -> None:
    """MLflow is for `marquee train`/`evaluate` (model/tracking.py): no API or model module reaches it."""
    edges = graph()
    reached, todo = set(), [m for m in MODULES if not m.startswith(("cli", "model.tracking"))]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(edges[module])
    assert "model.tracking" not in reached
    users = [name for name, path in MODULES.items() if name != "model.tracking"
             and any(r.split(".")[0] == "mlflow" for r, _, _ in _all_imports(path))]  # fmt: skip
    assert not users, f"{users} import mlflow: go through model.tracking"


def _all_imports(path: Path) -> Iterator[tuple[str, list[str], int]]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((a.name, [], node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [], node.lineno


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"a"}}, ["a", "a"]),
    ],
)
def test_the_circle_finder_finds_circles(edges: dict[str, set[str]], expected: list[str] | None) -> None:
    assert find_cycle(edges) == expected
