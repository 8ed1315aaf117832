"""Log sinks: the tiers loguru writes to (console, file, Elasticsearch, …).

A sink plugin registers a :class:`LogSinkSpec`; the kernel enables it when ``[logging.<name>] enabled = true``
(or its environment variable) and passes the rest of that table to ``factory``. Several tiers run at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

__all__ = ["LogSinkSpec", "SinkConfig"]


@attrs.frozen
class SinkConfig:
    """What ``factory`` returns: arguments for ``loguru.logger.add``.

    Attributes:
        sink: A path, a file-like object or a callable taking a loguru message.
        level: Minimum level name.
        options: Extra keyword arguments for ``logger.add`` (``rotation``, ``serialize`` …).
        close: Called at shutdown to flush and release resources.
    """

    sink: Any
    level: str = "INFO"
    options: Mapping[str, Any] = attrs.field(factory=dict)
    close: Callable[[], None] | None = attrs.field(default=None, eq=False)


@attrs.frozen
class LogSinkSpec:
    """A named log tier. ``factory(options)`` gets the tier's config table and returns a :class:`SinkConfig`."""

    name: str
    factory: Callable[[Mapping[str, Any]], SinkConfig] = attrs.field(eq=False)
    summary: str = ""
    default_enabled: bool = False
