"""The kernel's shape, read from its source: no import cycle between ``bananas`` modules, and no module above
500 lines.

The import graph comes from ``ast``: every ``import bananas.x`` / ``from bananas.x import y`` / ``from . import y``
anywhere in a module (module level and inside functions, which is where lazy imports hide a cycle).

Imports under ``if TYPE_CHECKING:`` do not count: they never run (every module has
``from __future__ import annotations``), and ``bananas/hookspecs.py`` must name the spec types of every plugin
kind for type checkers only. The worker needs none at all: ``bananas/worker/`` has no ``TYPE_CHECKING`` import
(checked below), it gets a ``WorkerContext`` from the app, never the app itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bananas"
MAX_LINES = 500

ALLOWED_OVER = {
    # module: reason. Remove an entry as soon as the work it names lands.
    "bananas.config": "the settings become plugin-owned (Kernel 0.2 point 5); that work shrinks config.py",
}
"""Modules allowed above ``MAX_LINES`` for now, each with the reason."""

SKIPPED = ("bananas.testing",)
"""Not size-checked: ``bananas/testing/conformance.py`` is being split separately."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:``."""
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _nodes(tree: ast.AST, *, type_checking: bool) -> list[ast.AST]:
    """Every node of ``tree``; the bodies of ``if TYPE_CHECKING:`` only with ``type_checking``, and then only
    those."""
    found: list[ast.AST] = []

    def walk(node: ast.AST, inside: bool) -> None:
        if inside == type_checking:
            found.append(node)
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.body:
                walk(child, True)
            for child in node.orelse:
                walk(child, inside)
            return
        for child in ast.iter_child_nodes(node):
            walk(child, inside)

    walk(tree, False)
    return found


def _imports(module: str, path: Path, known: set[str], *, type_checking: bool = False) -> set[str]:
    """The ``bananas`` modules that ``module`` imports at run time (``type_checking``: only under
    ``if TYPE_CHECKING:``); a ``from pkg import name`` of a submodule counts as that submodule."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in _nodes(tree, type_checking=type_checking):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path, node)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in known:  # bananas.x.name -> bananas.x
                target = target.rpartition(".")[0]
            if target and target != module and target.startswith("bananas"):
                found.add(target)
                break
    return found


def import_graph(*, type_checking: bool = False) -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known, type_checking=type_checking) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, …, a]``), or ``None``. A package importing its own submodules is no cycle."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if node.startswith(f"{nxt}.") or nxt.startswith(f"{node}."):
                continue  # package <-> its own submodule: Python's normal package structure
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_graph_sees_lazy_imports_and_tells_type_checking_ones_apart() -> None:
    # Given the graphs of run-time and of TYPE_CHECKING-only imports
    graph, typing_only = import_graph(), import_graph(type_checking=True)
    # Then a function-level import is a run-time edge (the CLI imports the supervisor lazily), and hookspecs'
    # imports of spec types are type-checking edges only
    assert "bananas.worker.supervisor" in graph["bananas.cli"]
    assert "bananas.broker" in typing_only["bananas.hookspecs"]
    assert "bananas.broker" not in graph["bananas.hookspecs"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_bananas_has_no_import_cycle() -> None:
    # Given the import graph of bananas/
    graph = import_graph()
    # When looking for a cycle
    cycle = _cycle(graph)
    # Then there is none
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_worker_never_imports_the_app_and_needs_no_type_checking_imports() -> None:
    graph, typing_only = import_graph(), import_graph(type_checking=True)
    worker = sorted(name for name in graph if name.startswith("bananas.worker."))
    assert [name for name in worker if "bananas.app" in graph[name]] == []
    assert {name: typing_only[name] for name in worker if typing_only[name]} == {}


def test_no_module_is_above_the_line_budget() -> None:
    # Given every module of bananas/ but the test kit
    sizes = {
        name: len(path.read_text(encoding="utf-8").splitlines())
        for name, path in _modules().items()
        if not name.startswith(SKIPPED)
    }
    # Then none is above MAX_LINES, except those allowed for now (with a reason)
    over = {name: n for name, n in sizes.items() if n > MAX_LINES and name not in ALLOWED_OVER}
    assert not over, f"modules above {MAX_LINES} lines: {over}"
    stale = [name for name in ALLOWED_OVER if sizes.get(name, 0) <= MAX_LINES]
    assert not stale, f"remove from ALLOWED_OVER (now within {MAX_LINES} lines): {stale}"
