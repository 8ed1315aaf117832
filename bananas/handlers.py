"""``HandlerSpec``: a registered job handler and its defaults (what ``@app.job`` records, what the worker runs)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import cached_property
from typing import Any

import attrs

from bananas.control import Backoff
from bananas.job import Priority

__all__ = ["HandlerSpec"]


@attrs.frozen
class HandlerSpec:
    """A registered job handler and its defaults.

    ``retry_for`` / ``dont_retry_for`` (exception classes) and ``retry_backoff`` are read by the worker's settlement
    (see ``docs/HANDLERS.md``); the worker checks each payload against :attr:`signature` before the call.
    """

    name: str
    func: Callable[..., Any] = attrs.field(eq=False)
    is_async: bool
    priority: Priority | None = None
    max_retries: int | None = None
    timeout: float | None = None
    retry_for: tuple[type[BaseException], ...] | None = None
    dont_retry_for: tuple[type[BaseException], ...] = ()
    retry_backoff: Backoff | None = attrs.field(default=None, eq=False)

    @cached_property
    def signature(self) -> inspect.Signature | None:
        """The handler's signature (``None`` when Python cannot tell it, e.g. some builtins: no check then)."""
        try:
            return inspect.signature(self.func)
        except (TypeError, ValueError):
            return None
