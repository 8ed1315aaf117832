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
        record_sink: Optional: the same tier taking the record dict itself (what ``sink`` reads as
            ``message.record``: ``time``, ``level``, ``message``, ``extra``, ``exception``). When every configured
            tier has one, ``job_logger`` and standard-library records skip loguru's record building and go to these
            (:mod:`bananas.log_route`), at a fraction of the cost. Called on the logging thread without a lock: it
            must be thread-safe and must not block (append to a queue; :func:`bananas.log_record.json_line` builds
            the line once for every tier).
    """

    sink: Any
    level: str = "INFO"
    options: Mapping[str, Any] = attrs.field(factory=dict)
    close: Callable[[], None] | None = attrs.field(default=None, eq=False)
    record_sink: Callable[[dict[str, Any]], None] | None = attrs.field(default=None, eq=False)


@attrs.frozen
class LogSinkSpec:
    """A named log tier. ``factory(options)`` returns a :class:`SinkConfig`.

    ``options`` is built by the kernel's one options builder (``plugin_options``): without an ``options`` class it
    is a dict of the tier's table — every key the plugin declared under ``logging.<name>.`` (with
    ``bananas_register_settings``), defaults filled in, without the prefix — whose ``level`` is already a loguru
    level name (the tier's own ``level`` when set, else the console's). With an attrs ``options`` class it is an
    instance of that class built from the same table.
    """

    name: str
    factory: Callable[[Any], SinkConfig] = attrs.field(eq=False)
    summary: str = ""
    options: type | None = None
