"""Parsing of durations (``100ms``, ``1s``, ``5m``, ``2h``) and booleans used by config and the job API."""

from __future__ import annotations

import re

__all__ = ["format_duration", "parse_bool", "parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
DURATION_HELP = "a duration such as 100ms, 1s, 5m, 2h or a number of seconds"


def parse_duration(value: str | float | int) -> float:
    """Return seconds for ``value``; numbers are seconds. Raise ``ValueError`` on anything else."""
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_HELP}, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"expected a non-negative duration, got {value!r}")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"expected {DURATION_HELP}, got {value!r}")
    return float(match.group(1)) * _FACTORS[match.group(2)]


def format_duration(seconds: float) -> str:
    """Render seconds back in the shortest unit that is exact (``0.1`` → ``100ms``)."""
    for unit in ("h", "m", "s"):
        factor = _FACTORS[unit]
        if seconds >= factor and (seconds / factor).is_integer():
            return f"{int(seconds / factor)}{unit}"
    ms = seconds * 1000
    return f"{int(ms)}ms" if ms.is_integer() else f"{seconds}s"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(value: str | bool | int) -> bool:
    """``true/false/1/0/yes/no/on/off`` (any case) → bool; anything else raises ``ValueError``."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {value!r}")
