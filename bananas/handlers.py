"""``HandlerSpec``: a registered job handler and its defaults (what ``@app.job`` records, what the worker runs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from bananas.job import Priority

__all__ = ["HandlerSpec"]


@attrs.frozen
class HandlerSpec:
    """A registered job handler and its defaults."""

    name: str
    func: Callable[..., Any] = attrs.field(eq=False)
    is_async: bool
    priority: Priority | None = None
    max_retries: int | None = None
    timeout: float | None = None
