"""Find the ``Bananas`` app of ``--app pkg.mod:app`` (shared by :mod:`bananas.cli` and :mod:`bananas.cli_admin`)."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from bananas.errors import UsageError

__all__ = ["load_app"]


def load_app(spec: str, **kwargs: Any) -> Any:
    """``pkg.mod:app`` or ``pkg.mod`` (the module's one ``Bananas`` instance)."""
    from bananas.app import Bananas

    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--app {spec}: cannot import {module_name!r}: {exc}") from None
    if attr:
        app = getattr(module, attr, None)
        if not isinstance(app, Bananas):
            raise UsageError(f"--app {spec}: {module_name}.{attr} is not a Bananas app")
        return app
    apps = [value for value in vars(module).values() if isinstance(value, Bananas)]
    if len(apps) != 1:
        found = "none" if not apps else f"{len(apps)}"
        raise UsageError(f"--app {spec}: expected one Bananas app in {module_name}, found {found}; use {spec}:NAME")
    return apps[0]
