"""Retry control for handlers: :class:`Retry` (try again on a chosen delay) and :class:`Reject` (dead-letter now).

Raised inside a handler, they are read by the worker's settlement (:mod:`bananas.worker.settlement`), the one place
that retries and dead-letters; see ``docs/HANDLERS.md`` ("Retry control").
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from bananas.units import parse_duration

__all__ = ["Backoff", "Reject", "Retry", "backoff_delay", "check_backoff", "payload_mismatch"]

Backoff = tuple[float, float, float] | Callable[[int], float]
"""A handler's ``retry_backoff``: ``(base, factor, max)`` seconds (exponential with jitter, as the ``jobs.*``
settings) or a callable ``attempt -> seconds`` (used as it returns, no jitter)."""


class Retry(Exception):  # noqa: N818 - the name handler authors know from Celery and Dramatiq
    """Raise in a handler to retry the job after ``delay`` (seconds or ``"30s"``; ``None``: the handler's backoff).

    It counts as an attempt: past ``max_retries`` the job goes to the dead letters like any failure.
    """

    def __init__(self, delay: str | float | None = None, message: str = "") -> None:
        try:
            self.delay: float | None = parse_duration(delay) if delay is not None else None
        except ValueError as exc:
            raise ValueError(f"Retry(delay=...): {exc}") from None
        self.message = message
        super().__init__(message or (f"retry requested in {self.delay:g}s" if self.delay is not None
                                     else "retry requested"))


class Reject(Exception):  # noqa: N818 - the name handler authors know from Dramatiq
    """Raise in a handler to send the job to the dead letters at once (no retry) with ``reason``."""

    def __init__(self, reason: str = "rejected by its handler") -> None:
        self.reason = reason
        super().__init__(reason)


def check_backoff(value: object) -> Backoff | None:
    """``retry_backoff`` as given to ``@app.job``, checked: ``None``, a callable, or three non-negative numbers."""
    if value is None or callable(value):
        return value  # type: ignore[return-value]
    if isinstance(value, tuple | list) and len(value) == 3 and all(
        isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        base, factor, cap = (float(v) for v in value)
        return base, factor, cap
    raise ValueError(f"retry_backoff: expected (base, factor, max) seconds or a callable attempt -> seconds, "
                     f"got {value!r}")


def backoff_delay(backoff: Backoff, attempt: int, jitter: float) -> float:
    """Seconds before retrying after ``attempt`` (1-based); ``jitter`` in ``[0.5, 1]`` scales the exponential form."""
    if callable(backoff):
        return max(0.0, float(backoff(attempt)))
    base, factor, cap = backoff
    return min(cap, base * factor ** (attempt - 1)) * jitter


def _signature_text(name: str, signature: inspect.Signature) -> str:
    params = []
    for p in signature.parameters.values():
        prefix = "*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else ""
        params.append(prefix + p.name)
    return f"{name}({', '.join(params)})"


def payload_mismatch(name: str, signature: inspect.Signature, payload: Mapping[str, Any]) -> str | None:
    """``None`` when ``payload`` binds to ``signature`` as keyword arguments, else why not, as one line:
    ``payload does not match send_email(to, subject): unexpected keyword 'too'``."""
    params = signature.parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        # Python's bind names a missing argument first; a misspelt keyword ("too" for "to") is the likelier story.
        unexpected = [key for key in payload if key not in params or params[key].kind is params[key].POSITIONAL_ONLY]
        if unexpected:
            words = ", ".join(repr(key) for key in unexpected)
            kind = "unexpected keyword" if len(unexpected) == 1 else "unexpected keywords"
            return f"payload does not match {_signature_text(name, signature)}: {kind} {words}"
    try:
        signature.bind(**payload)
    except TypeError as exc:
        text = str(exc)
        if "unexpected keyword argument" in text:
            text = "unexpected keyword " + text.rsplit(" ", 1)[-1]
        elif text.startswith("missing a required argument: "):
            text = "missing argument " + text.removeprefix("missing a required argument: ")
        elif "positional only" in text or "positional-only" in text:
            text = f"positional-only parameter given by keyword ({text})"
        return f"payload does not match {_signature_text(name, signature)}: {text}"
    return None
