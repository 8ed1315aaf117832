"""Wire the configured log tiers into loguru: the console always, plus every ``[logging.<tier>]`` enabled.

It also records the lowest level any tier writes (:func:`bananas.log_context.set_min_level`: the worker's per-job
events check it before building anything) and routes the standard library's ``logging`` into the same tiers
(:class:`bananas.log_context.InterceptHandler` on the root logger, whose level follows the tiers' lowest).

When every tier can take a record dict directly (``SinkConfig.record_sink``: the JSON console, the file and
Elasticsearch tiers), it installs :mod:`bananas.log_route` over them: ``job_logger`` and standard-library records then
reach the same tiers without loguru building each record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from loguru import logger

from bananas import log_route
from bananas._manager import Plugins
from bananas.config import Settings
from bananas.config_options import plugin_options
from bananas.log_context import InterceptHandler, set_min_level
from bananas.logsink import SinkConfig

__all__ = ["configure_logging", "level_name"]

_LEVELS = {"warn": "WARNING"}


def level_name(value: object) -> str:
    """A setting's level (``info``, ``warn``, ``DEBUG`` …) as a loguru level name."""
    text = str(value or "info").lower()
    return _LEVELS.get(text, text.upper())


def _install_intercept(level: int) -> Callable[[], None]:
    """Route ``logging`` records into loguru; return a function that restores the root logger."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, InterceptHandler)]:
        root.removeHandler(handler)
    previous = root.level
    handler = InterceptHandler()
    root.addHandler(handler)
    root.setLevel(level)

    def remove() -> None:
        root.removeHandler(handler)
        root.setLevel(previous)

    return remove


def configure_logging(settings: Settings, plugins: Plugins) -> Callable[[], None]:
    """Replace loguru's handlers with the configured tiers; return a function that flushes and closes them."""
    log_route.clear()
    logger.remove()
    logger.configure(extra={"component": "worker", "log_source": "bananas_internal"})
    closers: list[Callable[[], None]] = []
    routes: list[tuple[int, log_route.RecordSink] | None] = []

    def add(sink: SinkConfig) -> int:
        logger.add(sink.sink, level=sink.level, **dict(sink.options))
        no = logger.level(str(sink.level).upper()).no
        direct = sink.record_sink is not None and "filter" not in sink.options
        routes.append((no, sink.record_sink) if direct else None)  # type: ignore[arg-type]
        if sink.close is not None:
            closers.append(sink.close)
        return no

    console = plugins.log_sinks.get("console").factory(
        {
            "level": level_name(settings["logging.level"]),
            "format": settings["logging.format"],
            "color": settings["logging.color"],
        }
    )
    lowest = add(console)
    for tier in settings.logging_tiers():
        table = settings.table(f"logging.{tier}")
        if tier == "console" or not table.get("enabled"):
            continue
        spec = plugins.log_sinks.get(tier)
        options = plugin_options(settings, f"log sink:{tier}", spec)
        if isinstance(options, dict):
            options["level"] = level_name(options.get("level") or settings["logging.level"])
        lowest = min(lowest, add(spec.factory(options)))
    set_min_level(lowest)
    closers.append(_install_intercept(lowest))
    direct = log_route.install([r for r in routes if r is not None]) if None not in routes else None

    def close() -> None:
        if direct is not None:
            log_route.clear(direct)
        logger.complete()
        for closer in reversed(closers):
            closer()

    return close
