"""Wire the configured log tiers into loguru: the console always, plus every ``[logging.<tier>]`` enabled."""

from __future__ import annotations

from collections.abc import Callable

from loguru import logger

from bananas._manager import Plugins
from bananas.config import Settings
from bananas.config_options import plugin_options

__all__ = ["configure_logging"]

_LEVELS = {"warn": "WARNING"}


def _level(value: object) -> str:
    text = str(value or "info").lower()
    return _LEVELS.get(text, text.upper())


def configure_logging(settings: Settings, plugins: Plugins) -> Callable[[], None]:
    """Replace loguru's handlers with the configured tiers; return a function that flushes and closes them."""
    logger.remove()
    logger.configure(extra={"component": "bananas", "log_source": "bananas_internal"})
    closers: list[Callable[[], None]] = []
    console = plugins.log_sinks.get("console").factory(
        {
            "level": _level(settings["logging.level"]),
            "format": settings["logging.format"],
            "color": settings["logging.color"],
        }
    )
    logger.add(console.sink, level=console.level, **dict(console.options))
    for tier in settings.logging_tiers():
        table = settings.table(f"logging.{tier}")
        if tier == "console" or not table.get("enabled"):
            continue
        spec = plugins.log_sinks.get(tier)
        options = plugin_options(settings, f"log sink:{tier}", spec)
        if isinstance(options, dict):
            options["level"] = _level(options.get("level") or settings["logging.level"])
        sink = spec.factory(options)
        logger.add(sink.sink, level=sink.level, **dict(sink.options))
        if sink.close is not None:
            closers.append(sink.close)

    def close() -> None:
        for closer in closers:
            closer()
        logger.complete()

    return close
