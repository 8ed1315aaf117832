"""Finding and reading the config file.

The file is, in order:

1. the path given by ``--config PATH`` (or ``Bananas(config=...)``), else by ``BANANAS_CONFIG``; a missing file is
   an error;
2. else the first directory, from the working directory upwards to the file-system root, that holds a
   ``bananas.toml`` (which wins in its directory) or a ``pyproject.toml`` with a ``[tool.bananas]`` table (a
   ``pyproject.toml`` without one is passed over and the search goes on upwards);
3. else no file: defaults and the environment only.

Like ruff and pytest, a worker started from a sub-directory of a project finds the project's configuration.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from bananas.errors import UsageError

__all__ = ["FoundFile", "find_file", "read_file", "search_note"]

NAMES = ("bananas.toml", "pyproject.toml")
"""The files looked for in each directory, in order."""


@attrs.frozen
class FoundFile:
    """A config file: its path, the path as shown in sources (relative to the working directory when it is
    there, else absolute) and whether it was found by the search (not given)."""

    path: Path
    shown: str
    discovered: bool


def _shown(path: Path, cwd: Path) -> str:
    try:
        return os.fspath(path.relative_to(cwd))
    except ValueError:
        return os.fspath(path)


def find_file(config_path: str | os.PathLike[str] | None, env: Mapping[str, str], cwd: Path) -> FoundFile | None:
    """The config file to read (see the module docstring), or ``None``."""
    given = config_path if config_path is not None else env.get("BANANAS_CONFIG", "").strip() or None
    if given is not None:
        return FoundFile(cwd / Path(given).expanduser(), os.fspath(given), discovered=False)
    for directory in (cwd, *cwd.parents):
        for name in NAMES:
            candidate = directory / name
            if not candidate.is_file():
                continue
            if name == "pyproject.toml" and read_file(FoundFile(candidate, name, True)) is None:
                continue  # a project without [tool.bananas]: look further up
            return FoundFile(candidate, _shown(candidate, cwd), discovered=True)
    return None


def search_note(cwd: Path) -> str:
    """What was searched when no file was found, for ``bananas config`` and the worker's start line."""
    return f"none (no bananas.toml or [tool.bananas] in {cwd} or above; set BANANAS_CONFIG or --config)"


def read_file(found: FoundFile) -> dict[str, Any] | None:
    """The Bananas table of a file; ``None`` for a discovered ``pyproject.toml`` without ``[tool.bananas]``."""
    path, shown = found.path, found.shown
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise UsageError(f"config file {shown} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read config file {shown}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {shown} is not valid TOML: {exc}") from None
    if path.name == "pyproject.toml":
        tool = data.get("tool")
        table = tool.get("bananas") if isinstance(tool, dict) else None
        if table is None and not found.discovered:
            raise UsageError(f"config file {shown} has no [tool.bananas] table")
        if table is not None and not isinstance(table, dict):
            raise UsageError(f"config file {shown}: tool.bananas must be a table")
        return table
    wrapped = data.get("bananas")
    if isinstance(wrapped, dict):
        if len(data) > 1:
            raise UsageError(f"config file {shown} mixes a [bananas] table with top-level keys; use one or the other")
        return wrapped
    return data
