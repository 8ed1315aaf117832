"""Guards that keep the docs and the repository layout honest (datasette's ``tests/test_docs.py`` style)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bananas._manager import load_plugins

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PLUGINS = ROOT / "plugins"

EDITABLE_PLUGIN = re.compile(r"^-e\s+(?:\./)?plugins/([\w.-]+)/?(?:\[[\w,\s-]*\])?\s*(?:#.*)?$", re.MULTILINE)
"""``-e plugins/<dir>`` in requirements-dev.txt, optionally with ``./``, ``[extras]`` and a comment."""
PRIVATE_KERNEL_IMPORT = re.compile(r"^\s*(from\s+bananas\._\w*|import\s+bananas\._\w*)", re.MULTILINE)
"""``from bananas._x`` / ``import bananas._x``: plugins must use only the public modules."""
PLUGIN_PACKAGE_IMPORT = re.compile(r"^\s*(from|import)\s+bananas_\w+", re.MULTILINE)
"""``import bananas_redis`` / ``from bananas_mode_scaled``: the kernel must never depend on a plugin package."""


def _hooks() -> list[tuple[str, tuple[str, ...]]]:
    pm = load_plugins(entrypoints=False, env={}).pm
    return [
        (name, tuple(getattr(pm.hook, name).spec.argnames)) for name in dir(pm.hook) if name.startswith("bananas_")
    ]


def _plugin_dirs() -> list[str]:
    return sorted(path.parent.name for path in PLUGINS.glob("*/pyproject.toml"))


def _python_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*.py") if "__pycache__" not in path.parts)


def test_every_hook_is_found():
    # Given / When the kernel's hook specs
    hooks = _hooks()

    # Then the parametrized tests below have something to check
    assert len(hooks) >= 15
    assert ("bananas_job_failed", ("job", "error", "will_retry")) in hooks


@pytest.mark.parametrize(("name", "argnames"), _hooks(), ids=[name for name, _ in _hooks()])
def test_hook_is_documented_with_its_arguments(name, argnames):
    # Given the plugin docs
    text = (DOCS / "PLUGINS.md").read_text(encoding="utf-8")

    # When the hook's signature is written as in the spec
    signature = f"{name}({', '.join(argnames)})"

    # Then it appears verbatim
    assert signature in text, f"docs/PLUGINS.md must document {signature}"


@pytest.mark.parametrize("doc", ["ARCHITECTURE.md", "PLUGINS.md", "CONFIGURATION.md"])
def test_doc_exists(doc):
    # Given / When / Then
    assert (DOCS / doc).is_file(), f"docs/{doc} is missing"


@pytest.mark.parametrize("plugin_dir", _plugin_dirs())
def test_plugin_is_installed_by_requirements_dev(plugin_dir):
    # Given the editable installs of the one-command dev setup ("-e plugins/<dir>", optionally "./" and "[extras]")
    text = (ROOT / "requirements-dev.txt").read_text(encoding="utf-8")
    editable = set(EDITABLE_PLUGIN.findall(text))

    # When / Then every plugin package is one of them
    assert plugin_dir in editable, f"requirements-dev.txt needs a line: -e plugins/{plugin_dir}"


def test_plugins_import_no_private_kernel_module():
    # Given every Python file of the plugin packages
    offenders = [
        f"{path.relative_to(ROOT)}: {match.group(0).strip()}"
        for path in _python_files(PLUGINS)
        for match in PRIVATE_KERNEL_IMPORT.finditer(path.read_text(encoding="utf-8"))
    ]

    # Then none reaches into bananas._*
    assert offenders == []


def test_kernel_imports_no_plugin_package():
    # Given every Python file of the kernel
    offenders = [
        f"{path.relative_to(ROOT)}: {match.group(0).strip()}"
        for path in _python_files(ROOT / "bananas")
        for match in PLUGIN_PACKAGE_IMPORT.finditer(path.read_text(encoding="utf-8"))
    ]

    # Then none imports a bananas_<name> plugin package
    assert offenders == []


def test_import_guards_catch_what_they_should():
    # Given / When / Then the patterns match the forbidden forms and nothing else
    assert PRIVATE_KERNEL_IMPORT.search("from bananas._manager import load_plugins")
    assert PRIVATE_KERNEL_IMPORT.search("    import bananas._manager")
    assert not PRIVATE_KERNEL_IMPORT.search("from bananas.broker import Broker")
    assert PLUGIN_PACKAGE_IMPORT.search("import bananas_redis")
    assert PLUGIN_PACKAGE_IMPORT.search("    from bananas_mode_scaled import ScaledMode")
    assert not PLUGIN_PACKAGE_IMPORT.search("def bananas_register_brokers(register):")
    assert not PLUGIN_PACKAGE_IMPORT.search("from bananas.hookspecs import hookimpl")
    editable = "-e .[testing]\n-e plugins/bananas-a\n-e ./plugins/bananas-b[testing]  # b\n# -e plugins/bananas-c\n"
    assert EDITABLE_PLUGIN.findall(editable) == ["bananas-a", "bananas-b"]


def test_kernel_tests_import_no_plugin_package():
    # Given every kernel test but the chaos drills (which run the Redis deployment and skip without it)
    packaged = {path.name for path in PLUGINS.glob("*/src/bananas_*") if path.is_dir()}
    assert "bananas_redis" in packaged
    offenders = [
        f"{path.relative_to(ROOT)}: {match.group(0).strip()}"
        for path in _python_files(ROOT / "tests")
        if "chaos" not in path.relative_to(ROOT / "tests").parts
        for match in PLUGIN_PACKAGE_IMPORT.finditer(path.read_text(encoding="utf-8"))
        if match.group(0).split()[1].split(".")[0] in packaged  # not a throwaway package a test builds itself
    ]

    # Then none imports a plugin package: `tox -e kernel` installs the kernel alone
    assert offenders == []
