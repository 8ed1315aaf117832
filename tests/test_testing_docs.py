"""docs/TESTING.md and docs/INTEGRATION.md: their examples are the files of small projects, run here with pytest.

Each ``python`` / ``toml`` block starts with a comment naming its file (``# tasks.py``, ``# bananas.toml``); the
blocks of one document are written into a directory and pytest runs there in a subprocess, as the reader would run
it: the ``bananas`` pytest plugin comes from its entry point, nothing from this repository's conftest applies.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"```(python|toml)\n# ([\w./-]+\.(?:py|toml))\n(.*?)\n```", re.S)
PASSED = re.compile(r"(\d+) passed")

FRAMEWORKS = {"fastapi": ("fastapi", "httpx"), "flask": ("flask",), "django": ("django",)}
"""Integration recipe files by prefix → the packages they need (test dependencies in requirements-dev.txt)."""


def _files(doc: str) -> dict[str, str]:
    text = (DOCS / doc).read_text(encoding="utf-8")
    files: dict[str, str] = {}
    for _, name, body in BLOCK.findall(text):
        assert name not in files, f"{doc}: two blocks are named {name}"
        files[name] = f"# {name}\n{body}\n"
    return files


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in modules)


def _without_redis(files: dict[str, str]) -> dict[str, str]:
    """The files as they are when the redis:// scheme is installed; else with a memory:// URL in its place (the
    tests never use the configured broker, but ``Bananas()`` at import needs its scheme to exist)."""
    if _installed("bananas_redis"):
        return files
    return {name: body.replace("redis://127.0.0.1:6379/0", "memory://production") for name, body in files.items()}


def _run_pytest(directory: Path, files: dict[str, str]) -> subprocess.CompletedProcess[str]:
    for name, body in files.items():
        (directory / name).write_text(body, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANANAS_", "REDIS_", "WORKER_", "ENABLE_"))}
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(directory), str(directory)],
        cwd=directory, env=env, capture_output=True, text=True, timeout=240, check=False,
    )


def _expected_tests(files: dict[str, str]) -> int:
    return sum(len(re.findall(r"^\s*(?:async )?def test_", body, re.M))
               for name, body in files.items() if name.startswith("test_"))


def test_the_examples_of_testing_md_pass_as_a_project(tmp_path):
    # Given the project of docs/TESTING.md (its bananas.toml names Redis; without the Redis plugin installed, a
    # memory:// URL stands in for it: the point is that the tests never use the configured broker)
    files = _files("TESTING.md")
    assert {"bananas.toml", "tasks.py", "conftest.py", "test_tasks.py", "test_eager.py"} <= set(files)
    files = _without_redis(files)

    # When pytest runs it
    result = _run_pytest(tmp_path, files)

    # Then every test of the document passed
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    passed = PASSED.search(result.stdout)
    assert passed is not None and int(passed.group(1)) == _expected_tests(files), output[-3000:]


def test_the_recipes_of_integration_md_pass_as_a_project(tmp_path):
    # Given the recipes of docs/INTEGRATION.md whose framework is installed (all of them with requirements-dev.txt)
    files = _files("INTEGRATION.md")
    assert {"tasks.py", "conftest.py", "fastapi_app.py", "django_app.py", "flask_app.py"} <= set(files)
    files = _without_redis(files)
    skipped = [prefix for prefix, modules in FRAMEWORKS.items() if not _installed(*modules)]
    chosen = {name: body for name, body in files.items()
              if not any(name.startswith((prefix, f"test_{prefix}")) for prefix in skipped)}
    if len(skipped) == len(FRAMEWORKS):
        pytest.skip("none of fastapi+httpx, flask, django is installed (pip install -r requirements-dev.txt)")

    # When pytest runs them
    result = _run_pytest(tmp_path, chosen)

    # Then every recipe's tests passed
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    passed = PASSED.search(result.stdout)
    assert passed is not None and int(passed.group(1)) == _expected_tests(chosen), output[-3000:]
    if skipped:
        pytest.skip(f"recipes not run (framework not installed): {', '.join(skipped)}")
