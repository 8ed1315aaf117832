"""The kernel's shape, read from its source: no import cycle between ``bananas`` modules, no module above
500 lines, and plugin packages that import only the public plugin API.

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

ALLOWED_OVER: dict[str, str] = {
    # module: reason. Remove an entry as soon as the work it names lands.
}
"""Modules allowed above ``MAX_LINES`` for now, each with the reason (none today)."""

PLUGINS = ROOT / "plugins"
PUBLIC_API = "bananas.plugin_api"
"""The one kernel module plugin packages import (see ``bananas/plugin_api.py``)."""


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
    # Given every module of bananas/, the conformance kits included
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in _modules().items()}
    # Then none is above MAX_LINES, except those allowed for now (with a reason)
    over = {name: n for name, n in sizes.items() if n > MAX_LINES and name not in ALLOWED_OVER}
    assert not over, f"modules above {MAX_LINES} lines: {over}"
    stale = [name for name in ALLOWED_OVER if sizes.get(name, 0) <= MAX_LINES]
    assert not stale, f"remove from ALLOWED_OVER (now within {MAX_LINES} lines): {stale}"


def _kernel_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import of a ``bananas`` module in ``path`` (any depth, TYPE_CHECKING included)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "bananas"]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module.split(".")[0] == "bananas":
                found.append((node.lineno, node.module))
    return found


def test_plugin_packages_import_only_the_public_plugin_api() -> None:
    # Given every source file of every package under plugins/ (tests may also use bananas.testing)
    sources = [p for p in sorted(PLUGINS.glob("*/src/**/*.py")) if not p.name.endswith("_pb2.py")]
    assert len(sources) > 10
    # Then each kernel import is bananas.plugin_api, nothing else
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in sources
        for line, module in _kernel_imports(path)
        if module != PUBLIC_API
    ]
    assert offenders == [], "plugins must import the kernel through bananas.plugin_api only:\n" + "\n".join(offenders)


def test_the_public_plugin_api_exports_exactly_its_all(tmp_path: Path) -> None:
    import bananas.plugin_api as api

    # Every name in __all__ exists, and every public name it binds is in __all__ (nothing leaks in by accident)
    assert all(hasattr(api, name) for name in api.__all__)
    public = {n for n in vars(api) if n.isidentifier() and not n.startswith("_") and n != "annotations"}
    assert public == set(api.__all__), sorted(public ^ set(api.__all__))
    # and the guard above catches an offender
    bad = tmp_path / "bad.py"
    bad.write_text("from bananas.config import Settings\nimport bananas.job\nfrom bananas.plugin_api import Job\n")
    assert _kernel_imports(bad) == [(1, "bananas.config"), (2, "bananas.job"), (3, "bananas.plugin_api")]
