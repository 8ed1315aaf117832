"""``HandlerSpec``: a registered job handler and its defaults (what ``@app.job`` records, what the worker runs)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import cached_property
from typing import Any

import attrs

from bananas.control import Backoff, payload_mismatch
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

    @cached_property
    def _names(self) -> tuple[frozenset[str] | None, frozenset[str]] | None:
        """(keywords accepted or ``None`` with ``**kwargs``, keywords required), or ``None`` when only a full
        ``bind`` can tell (positional-only parameters without defaults, or no signature)."""
        signature = self.signature
        if signature is None:
            return None
        accepted: set[str] = set()
        required: set[str] = set()
        open_ended = False
        for p in signature.parameters.values():
            if p.kind is p.VAR_KEYWORD:
                open_ended = True
            elif p.kind is p.VAR_POSITIONAL:
                continue
            elif p.kind is p.POSITIONAL_ONLY:
                if p.default is p.empty:
                    return None
            else:
                accepted.add(p.name)
                if p.default is p.empty:
                    required.add(p.name)
        return (None if open_ended else frozenset(accepted)), frozenset(required)

    def mismatch(self, payload: dict[str, Any]) -> str | None:
        """Why ``payload`` cannot be the handler's keyword arguments (one line), or ``None`` when it can. Two set
        checks on the hot path; the full ``inspect`` bind only for a payload that does not fit."""
        names = self._names
        if names is not None:
            accepted, required = names
            keys = payload.keys()
            if (accepted is None or keys <= accepted) and required <= keys:
                return None
        if self.signature is None:
            return None
        return payload_mismatch(self.name, self.signature, payload)
