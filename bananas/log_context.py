"""What a log record knows about its surroundings: the running job, and whether a level is on at all.

- :data:`levels`: which of ``DEBUG``/``INFO``/``WARNING`` some configured tier writes, set once per
  :func:`bananas.logs.configure_logging` (:func:`set_min_level`). The worker's per-job events check a flag here
  before they build anything, so a disabled level costs one attribute read per event — no formatting, no dict, no
  ``logger.bind``. Code that adds its own loguru sinks later (a test capturing ``DEBUG``) calls
  :func:`set_min_level` too.
- :data:`job_logger`: a logger bound to the running job (loguru's API: ``info``, ``bind``, ``opt`` …). Records
  carry ``log_source=bananas_job`` and the job's fields (``job_id``, ``job_name``, ``priority``, ``queue``,
  ``attempt``, ``pool_id``, ``worker_id``, ``worker_type``), read from a context variable the worker sets around
  each handler call (for async handlers in their task, for sync handlers in their thread) and built once per job.
  Outside a job it logs without job fields.
- :class:`InterceptHandler`: routes standard-library ``logging`` records into the tiers; inside a job they carry
  the job's fields and ``log_source=bananas_job`` too, elsewhere ``bananas_internal``. The stdlib logger's name goes
  to the ``logger`` field.

Both write through :mod:`bananas.log_route` when it is installed (every tier takes records directly), else through
loguru; the JSON lines are the same either way. A level no tier writes returns before anything is formatted, bound
or read.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from loguru import logger

from bananas import log_route
from bananas.log_record import field, fragment, json_string
from bananas.log_route import LEVELS, Level, RecordException

if TYPE_CHECKING:
    from loguru import Logger, Record

    from bananas.job import Job

__all__ = ["CURRENT_JOB", "InterceptHandler", "JobLogger", "JobScope", "flush_logs", "job_logger", "levels"]
__all__ += ["on_flush", "set_min_level"]

JOB_SOURCE = "bananas_job"
INTERNAL_SOURCE = "bananas_internal"


class _Levels:
    """Flags of the levels some tier writes (``True`` until configured: loguru's default handler takes DEBUG)."""

    __slots__ = ("debug", "info", "warning")

    def __init__(self) -> None:
        self.debug = True
        self.info = True
        self.warning = True


levels = _Levels()
"""``levels.debug`` / ``.info`` / ``.warning``: is that level written by any tier. Checked before building a
record."""


def set_min_level(level: int | str) -> None:
    """Record the lowest level any sink writes (a number, or a level name such as ``"INFO"``)."""
    number = level if isinstance(level, int) else logger.level(str(level).upper()).no
    levels.debug = number <= logging.DEBUG
    levels.info = number <= logging.INFO
    levels.warning = number <= logging.WARNING


class JobScope:
    """The running job as its log records see it: the job, its pool and its worker process."""

    __slots__ = ("_log_fields", "_log_fragment", "job", "pool_id", "worker_id", "worker_type")

    def __init__(self, job: Job, pool_id: str | None = None, worker_id: str | None = None,
                 worker_type: str | None = None) -> None:
        self.job, self.pool_id, self.worker_id, self.worker_type = job, pool_id, worker_id, worker_type
        self._log_fields: dict[str, Any] | None = None
        self._log_fragment: str | None = None

    def log_fields(self) -> dict[str, Any]:
        """:meth:`fields`, built at the job's first record and kept for the others (read-only: callers copy)."""
        fields = self._log_fields
        if fields is None:
            fields = self._log_fields = self.fields()
        return fields

    def log_fragment(self) -> str:
        """:meth:`log_fields` as JSON text to splice into a line (:func:`bananas.log_record.fragment`), kept too.

        Built for most jobs (a handler logging one line per job builds one per line) from the process's part
        (``worker_id``, ``pool_id``, ``worker_type``: kept per pool) and the job's five strings and number."""
        text = self._log_fragment
        if text is None:
            job = self.job
            priority, queue = job.priority.value, job.queue
            if type(job.id) is str and type(job.name) is str and type(queue) is str and type(priority) is str \
                    and type(job.attempts) is int:
                ids = (self.worker_id, self.pool_id, self.worker_type)
                head = _PROCESS_PARTS.get(ids)
                if head is None:
                    if len(_PROCESS_PARTS) > 64:  # pools of one process are few; scopes made by hand may be many
                        _PROCESS_PARTS.clear()
                    head = _PROCESS_PARTS[ids] = fragment(dict(zip(("worker_id", "pool_id", "worker_type"), ids,
                                                                   strict=True)))
                text = (f'{head},"job_id":{json_string(job.id)},"job_name":{json_string(job.name)},'
                        f'"priority":{json_string(priority)},"queue":{json_string(queue)},"attempt":{job.attempts}')
            else:
                text = fragment(self.log_fields())
            self._log_fragment = text
        return text

    def fields(self) -> dict[str, Any]:
        """The job's log fields (built only when a record is written)."""
        job = self.job
        out: dict[str, Any] = {
            "job_id": job.id,
            "job_name": job.name,
            "priority": job.priority.value,
            "queue": job.queue,
            "attempt": job.attempts,
        }
        if self.pool_id is not None:
            out["pool_id"] = self.pool_id
        if self.worker_id is not None:
            out["worker_id"] = self.worker_id
        if self.worker_type is not None:
            out["worker_type"] = self.worker_type
        return out


_PROCESS_PARTS: dict[tuple[str | None, str | None, str | None], str] = {}
"""``(worker_id, pool_id, worker_type)`` → their JSON fragment (see :meth:`JobScope.log_fragment`)."""

CURRENT_JOB: ContextVar[JobScope | None] = ContextVar("bananas_current_job", default=None)
"""The job whose handler runs in this task or thread (``None`` elsewhere)."""


def _with_job(record: Record) -> None:
    scope = CURRENT_JOB.get()
    if scope is not None:
        extra = record["extra"]
        for name, value in scope.log_fields().items():
            extra.setdefault(name, value)


def _method(name: str) -> Any:
    level = LEVELS[name]
    no, method = level.no, name.lower()

    def log(self: JobLogger, message: Any, /, *args: Any, **kwargs: Any) -> None:
        route = log_route.current()
        if route is None:  # loguru as configured (a text console, a sink of the application's own)
            getattr(self.loguru.opt(depth=1), method)(message, *args, **kwargs)
        elif no >= route.min_no:
            self._write(route, level, message, args, kwargs)

    log.__name__ = log.__qualname__ = method
    log.__doc__ = f"Log ``message.format(*args, **kwargs)`` at ``{name}`` (keyword arguments also become fields)."
    return log


class JobLogger:
    """``bananas.job_logger``: loguru's logging API, bound to the running job.

    ``trace`` … ``critical``, ``exception``, ``log`` and ``bind`` are its own: with the kernel's route installed
    (:mod:`bananas.log_route`) a record is built once, with the job's fields kept per job, and handed to the tiers;
    otherwise it goes through loguru, as every other method does (``opt``, ``patch``, ``contextualize`` …: they
    return or act on the loguru logger :attr:`loguru`, bound the same way).
    """

    __slots__ = ("_extra", "_head", "_loguru")

    def __init__(self, extra: dict[str, Any] | None = None) -> None:
        self._extra: dict[str, Any] = {"component": "worker", "log_source": JOB_SOURCE, **(extra or {})}
        self._loguru: Logger | None = None
        # bound to no more than component and log_source (strings): a record's line is spliced from this head and
        # the job's fragment (kept per job); with more context it is built from the flat dict
        component, source = self._extra["component"] or "worker", self._extra["log_source"] or INTERNAL_SOURCE
        plain = len(self._extra) == 2 and type(component) is str and type(source) is str
        self._head = field("component", component) + field("log_source", source) if plain else None

    @property
    def loguru(self) -> Logger:
        """The same logger as a loguru ``Logger`` (bound to the same fields, adding the job's per record)."""
        bound = self._loguru
        if bound is None:
            bound = self._loguru = logger.bind(**self._extra).patch(_with_job)
        return bound

    def bind(self, **kwargs: Any) -> JobLogger:
        """A job logger whose records also carry ``kwargs`` (as loguru's ``bind``)."""
        return JobLogger({**self._extra, **kwargs})

    trace = _method("TRACE")
    debug = _method("DEBUG")
    info = _method("INFO")
    success = _method("SUCCESS")
    warning = _method("WARNING")
    error = _method("ERROR")
    critical = _method("CRITICAL")

    def exception(self, message: Any, /, *args: Any, **kwargs: Any) -> None:
        """``error`` with the exception being handled (its ``error`` and ``traceback`` fields)."""
        route = log_route.current()
        if route is None:
            self.loguru.opt(depth=1).exception(message, *args, **kwargs)
        elif LEVELS["ERROR"].no >= route.min_no:
            self._write(route, LEVELS["ERROR"], message, args, kwargs, RecordException(*sys.exc_info()))

    def log(self, level: str | int, message: Any, /, *args: Any, **kwargs: Any) -> None:
        """Log at ``level``, a level name or number (loguru's levels; a custom one goes through loguru)."""
        route = log_route.current()
        known = LEVELS.get(level) if isinstance(level, str) else None
        if route is None or known is None:
            self.loguru.opt(depth=1).log(level, message, *args, **kwargs)
        elif known.no >= route.min_no:
            self._write(route, known, message, args, kwargs)

    def _write(self, route: log_route.Route, level: Level, message: Any, args: tuple[Any, ...],
               kwargs: dict[str, Any], exception: RecordException | None = None) -> None:
        # as loguru: str() of the message, formatted with the arguments if any; keyword arguments become fields
        text = message.format(*args, **kwargs) if args or kwargs else str(message)
        scope = CURRENT_JOB.get()
        rest = None
        if self._head is not None and not kwargs and exception is None:
            rest = self._head if scope is None else self._head + scope.log_fragment()
        route.write(level, text, {**self._extra, **kwargs} if kwargs else self._extra,
                    None if scope is None else scope.log_fields(), exception, rest=rest)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loguru, name)

    def __repr__(self) -> str:
        return f"<bananas job logger {self._extra!r}>"


job_logger = JobLogger()
"""The logger for handlers: ``job_logger.info("sent {n} mails", n=3)`` carries the running job's fields."""


_JOB_HEAD = field("log_source", JOB_SOURCE)
_INTERNAL_HEAD = field("log_source", INTERNAL_SOURCE)


class InterceptHandler(logging.Handler):
    """A ``logging`` handler that hands every record to the tiers (installed on the root logger by
    :func:`bananas.logs.configure_logging`)."""

    def emit(self, record: logging.LogRecord) -> None:
        route = log_route.current()
        known = LEVELS.get(record.levelname)
        scope = CURRENT_JOB.get()
        if route is not None and known is not None:
            if known.no < route.min_no:
                return
            name = record.name
            if scope is not None:
                extra = {**scope.log_fields(), "log_source": JOB_SOURCE, "logger": name}
            else:
                extra = {"log_source": INTERNAL_SOURCE, "logger": name}
            exception = RecordException(*record.exc_info) if record.exc_info else None
            rest = None
            if exception is None and type(name) is str:  # the line spliced: component from loguru's extra
                component = log_route.configured_component()
                if component is not None:
                    rest = (field("component", component) + (_JOB_HEAD + scope.log_fragment() if scope is not None
                            else _INTERNAL_HEAD) + field("logger", name))
            route.write(known, record.getMessage(), extra, None, exception, record.created, rest)
            return
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        if scope is not None:
            bound = logger.bind(**scope.log_fields(), log_source=JOB_SOURCE, logger=record.name)
        else:
            bound = logger.bind(log_source=INTERNAL_SOURCE, logger=record.name)
        bound.opt(exception=record.exc_info or None).log(level, record.getMessage())


_flushers: list[Callable[[], None]] = []


def on_flush(flush: Callable[[], None]) -> Callable[[], None]:
    """Register ``flush`` (a tier's "write out what is queued") for :func:`flush_logs`; returns a function that
    unregisters it."""
    _flushers.append(flush)
    return lambda: _flushers.remove(flush) if flush in _flushers else None


def flush_logs() -> None:
    """Write out what the tiers queued (before ``os._exit``, which skips ``atexit`` and ``finally`` blocks)."""
    for flush in list(_flushers):
        try:
            flush()
        except Exception:  # noqa: BLE001, S110 - exiting anyway: a tier that cannot flush must not stop the others
            pass
