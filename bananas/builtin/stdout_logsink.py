"""``[logging.console]``: the always-on console tier (stderr), text or JSON per ``[logging] format``."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from bananas.hookspecs import hookimpl
from bananas.logsink import LogSinkSpec, SinkConfig
from bananas.registry import Register

__all__ = ["console_sink"]

TEXT_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <7}</level> | "
    "<cyan>{extra[component]}</cyan> | {message}"
)


def console_sink(options: Mapping[str, Any]) -> SinkConfig:
    """Options: ``level``, ``format`` (``text``/``json``), ``color``."""
    fmt = str(options.get("format", "text"))
    extra: dict[str, Any] = {"colorize": bool(options.get("color", True)) and sys.stderr.isatty()}
    if fmt == "json":
        extra = {"serialize": True}
    else:
        extra["format"] = TEXT_FORMAT
    return SinkConfig(sink=sys.stderr, level=str(options.get("level", "INFO")).upper(), options=extra)


@hookimpl
def bananas_register_log_sinks(register: Register[LogSinkSpec]) -> None:
    register(
        LogSinkSpec(
            name="console", factory=console_sink, summary="console (stderr), text or JSON"
        )
    )
