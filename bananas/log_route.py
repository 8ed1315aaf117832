"""The kernel's direct route to the log tiers: a record written without loguru building it.

loguru builds every record in full before any sink sees it — an aware local time, the caller's frame (module,
function, file, line), the process and the thread, a copy of the record per handler, the format string rendered,
each handler's lock — which cost a worker ~40 µs of the ~60 µs a JSON record cost (profiled) and twice that between
jobs, where the code runs with cold caches. The flat event model (:func:`bananas.log_record.flat_record`) reads four of
those fields: ``time``, ``level``, ``message``, ``extra`` (and ``exception``).

So when every tier :func:`bananas.logs.configure_logging` installed can take a record dict directly
(:attr:`bananas.logsink.SinkConfig.record_sink`: the JSON console, the file and Elasticsearch tiers), it installs
this route, and ``job_logger`` and the standard-library intercept hand their records to :meth:`Route.write`: the same
record dict those sinks read from loguru (``time``, ``level``, ``message``, ``extra``, ``exception``), the same
``extra`` in the same order (loguru's ``configure(extra=…)``, ``contextualize``, the bound context, the call's
keyword arguments), so every tier writes the same JSON line field for field, built once per record
(:func:`~bananas.log_record.json_line`).

The route stands aside (:func:`current` is ``None`` and the caller goes through loguru) while loguru's set-up is
not the one it was installed over: a handler added or removed (a test capturing ``DEBUG``, an application's own
sink; it resumes when loguru has exactly the tiers' handlers again), a patcher configured, a module disabled with
``logger.disable``. The text console has no
record sink (loguru renders its format and colors), so with ``LOG_FORMAT=text`` every record goes through loguru.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from loguru import logger

from bananas.log_record import LINE_KEY, spliced_line

__all__ = ["LEVELS", "Level", "RecordException", "Route", "clear", "current", "install"]

RecordSink = Callable[[dict[str, Any]], None]


class Level(NamedTuple):
    """``record["level"]`` as loguru's ``RecordLevel`` has it (``name``, ``no``, ``icon``)."""

    name: str
    no: int
    icon: str


class RecordException(NamedTuple):
    """``record["exception"]`` as loguru's ``RecordException`` has it."""

    type: type[BaseException] | None
    value: BaseException | None
    traceback: Any


def _levels() -> dict[str, Level]:
    out = {}
    for name in ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"):
        level = logger.level(name)
        out[name] = Level(level.name, level.no, level.icon)
    return out


LEVELS: dict[str, Level] = _levels()
"""loguru's standard levels by name: the only ones the route writes (a custom level goes through loguru)."""

try:  # loguru's internals the route checks before it bypasses loguru; without them it is never installed
    from loguru._logger import context as _loguru_context

    _CORE: Any = logger._core  # type: ignore[attr-defined]
    _CORE.handlers, _CORE.extra, _CORE.patcher, _CORE.activation_list  # noqa: B018 - all present, or no route
except (ImportError, AttributeError):  # pragma: no cover - a loguru that changed its internals
    _CORE = None


class Route:
    """The tiers records are routed to: ``(minimum level number, record sink)`` each, over loguru's handlers as
    they were when it was installed."""

    __slots__ = ("handlers", "min_no", "sinks", "tiers")

    def __init__(self, handlers: dict[int, object], sinks: tuple[tuple[int, RecordSink], ...]) -> None:
        self.handlers = handlers
        self.tiers = list(handlers.values())  # loguru's handler objects of the tiers
        self.sinks = sinks
        self.min_no = min(no for no, _ in sinks)

    def write(self, level: Level, message: str, extra: Mapping[str, Any], job: Mapping[str, Any] | None = None,
              exception: RecordException | None = None, created: float | None = None,
              rest: str | None = None) -> None:
        """Hand one record to every tier that writes ``level`` (the caller checked :attr:`min_no` before formatting
        ``message``).

        ``extra`` is the record's bound context and the call's captured keyword arguments (loguru's
        ``configure(extra=…)`` and ``contextualize`` context come first, as loguru orders them); ``job`` the
        running job's fields, added where ``extra`` does not have them (as ``job_logger``'s loguru patcher does).
        ``created`` is the record's Unix time (now by default). ``rest``: the line's fields after ``msg`` as JSON
        text, when the caller knows them (:func:`bananas.log_record.spliced_line`): used when nothing configured
        in loguru adds to them (its ``extra`` holds no more than ``component`` and ``log_source``, no
        ``contextualize``); the line is then built here, in one step, instead of from the flat dict.
        """
        # loguru's order (configure's extra, contextualize, bound and captured), the job's fields where none of them
        # has one (job_logger's patcher does setdefault); the job's fields are all of the model's own, which
        # flat_record places by name, so putting them first writes the same line
        context = _loguru_context.get()
        if job is None:
            fields = {**_CORE.extra, **context, **extra}
        else:
            fields = {**job, **_CORE.extra, **context, **extra}
        moment = datetime.fromtimestamp(time.time() if created is None else created, UTC)
        record = {"time": moment, "level": level, "message": message, "extra": fields, "exception": exception}
        if rest is not None and not context and _CORE.extra.keys() <= _OWN:
            record[LINE_KEY] = spliced_line(moment, level.name, message, rest)
        no = level.no
        for minimum, sink in self.sinks:
            if no >= minimum:
                try:
                    sink(record)
                except Exception as exc:  # noqa: BLE001 - as loguru's catch=True: a failing tier must not fail the job
                    _report(exc)


_route: Route | None = None

_OWN = frozenset({"component", "log_source"})
"""What the kernel puts in loguru's ``configure(extra=…)``: fields a spliced line already carries."""


def install(sinks: list[tuple[int, RecordSink]]) -> Route | None:
    """Route records to ``sinks`` (``(minimum level number, record sink)`` of every tier loguru has now, the same
    ones) until loguru's handlers change or :func:`clear`; ``None`` when this loguru cannot be bypassed."""
    global _route
    _route = Route(_CORE.handlers, tuple(sinks)) if _CORE is not None and sinks else None
    return _route


def clear(route: Route | None = None) -> None:
    """Stop routing (every record goes through loguru); with ``route``, only if that one is installed."""
    global _route
    if route is None or _route is route:
        _route = None


def current() -> Route | None:
    """The route when it is in use: installed, and loguru's set-up unchanged since (the same handlers, no patcher,
    no module disabled: only loguru knows the caller's module); ``None``: log through loguru."""
    route = _route
    if route is None:
        return None
    core = _CORE
    handlers = core.handlers
    if handlers is not route.handlers:  # loguru copies the dict on every add/remove: a sink came, or came and went
        if list(handlers.values()) != route.tiers:
            return None
        route.handlers = handlers  # a sink added and removed since (a test's capture): the same tiers again
    if core.patcher is not None or (core.activation_list and not all(on for _, on in core.activation_list)):
        return None
    return route


def configured_component() -> str | None:
    """The ``component`` a record gets from loguru's ``configure(extra=…)`` when it binds none (``worker`` when
    unset), or ``None`` when that is not a string."""
    component = _CORE.extra.get("component") or "worker"
    return component if type(component) is str else None


def _report(exc: Exception) -> None:
    try:
        sys.stderr.write(f"bananas: a log tier failed to take a record: {type(exc).__name__}: {exc}\n")
    except (OSError, ValueError):  # pragma: no cover - no stderr left to say it on
        pass
