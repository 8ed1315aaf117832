"""Header names and other constants shared by the producer (:mod:`bananas.app`) and the worker runtime.

A neutral module: it imports only :mod:`bananas.units` (which imports nothing from ``bananas``), so both sides read
the same names without importing each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta

from bananas.units import parse_duration

__all__ = ["DEFAULTED_RETRIES_HEADER", "EXPIRES_HEADER", "expires_from_headers", "expiry_time"]

DEFAULTED_RETRIES_HEADER = "bananas-defaulted-retries"
"""Set on jobs whose ``max_retries`` came from the producer's config, so the worker's handler default wins."""

EXPIRES_HEADER = "expires_at"
"""The Unix time (``repr`` of a float) after which a job that has not started is dropped as ``expired``
(``enqueue(..., expires=…)``). A header, like ``result_ttl``: every serializer carries it, no wire change."""


def expires_from_headers(headers: Mapping[str, str]) -> float | None:
    """The job's expiry (Unix time) from its headers, ``None`` when it has none (or an unreadable one)."""
    raw = headers.get(EXPIRES_HEADER)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def expiry_time(expires: object, now: float, eta: float | None) -> float:
    """The Unix time of ``expires=``: seconds or a duration (``"10m"``) or a ``timedelta`` from now, or an aware
    ``datetime``; it must come after now and after the job's ``delay`` / ``at``."""
    if isinstance(expires, datetime):
        if expires.tzinfo is None:
            raise ValueError(f"expires: {expires.isoformat()} is a naive datetime; give one with a timezone "
                             "(datetime.now(UTC) + …) or seconds from now")
        until = expires.timestamp()
    elif isinstance(expires, timedelta):
        until = now + expires.total_seconds()
    elif isinstance(expires, str | int | float) and not isinstance(expires, bool):
        try:
            until = now + parse_duration(expires)
        except ValueError as exc:
            raise ValueError(f"expires: {exc}") from None
    else:
        raise ValueError(f"expires: expected seconds, a duration ('10m'), a timedelta or a datetime, got {expires!r}")
    if until <= now:
        raise ValueError(f"expires: {expires!r} is not in the future")
    if eta is not None and until <= eta:
        raise ValueError(f"expires: {expires!r} comes before the job may start (its delay/at); it could never run")
    return until
