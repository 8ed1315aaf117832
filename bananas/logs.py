"""Wire the configured log tiers into loguru: the console always, plus every ``[logging.<tier>]`` enabled.

It also records the lowest level any tier writes (:func:`bananas.log_context.set_min_level`: the worker's per-job
events check it before building anything) and routes the standard library's ``logging`` into the same tiers
(:class:`bananas.log_context.InterceptHandler` on the root logger, whose level follows the tiers' lowest).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from loguru import logger

from bananas._manager import Plugins
from bananas.config import Settings
from bananas.config_options import plugin_options
from bananas.log_context import InterceptHandler, set_min_level

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
    logger.remove()
    logger.configure(extra={"component": "worker", "log_source": "bananas_internal"})
    closers: list[Callable[[], None]] = []
    console = plugins.log_sinks.get("console").factory(
        {
            "level": level_name(settings["logging.level"]),
            "format": settings["logging.format"],
            "color": settings["logging.color"],
        }
    )
    logger.add(console.sink, level=console.level, **dict(console.options))
    if console.close is not None:
        closers.append(console.close)
    lowest = logger.level(console.level).no
    for tier in settings.logging_tiers():
        table = settings.table(f"logging.{tier}")
        if tier == "console" or not table.get("enabled"):
            continue
        spec = plugins.log_sinks.get(tier)
        options = plugin_options(settings, f"log sink:{tier}", spec)
        if isinstance(options, dict):
            options["level"] = level_name(options.get("level") or settings["logging.level"])
        sink = spec.factory(options)
        logger.add(sink.sink, level=sink.level, **dict(sink.options))
        lowest = min(lowest, logger.level(str(sink.level).upper()).no)
        if sink.close is not None:
            closers.append(sink.close)
    set_min_level(lowest)
    closers.append(_install_intercept(lowest))

    def close() -> None:
        logger.complete()
        for closer in reversed(closers):
            closer()

    return close
