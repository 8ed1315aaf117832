"""What a log record knows about its surroundings: the running job, and whether a level is on at all.

- :data:`levels`: which of ``DEBUG``/``INFO``/``WARNING`` some configured tier writes, set once per
  :func:`bananas.logs.configure_logging` (:func:`set_min_level`). The worker's per-job events check a flag here
  before they build anything, so a disabled level costs one attribute read per event — no formatting, no dict, no
  ``logger.bind``. Code that adds its own loguru sinks later (a test capturing ``DEBUG``) calls
  :func:`set_min_level` too.
- :data:`job_logger`: a loguru logger bound to the running job. Records carry ``log_source=bananas_job`` and the
  job's fields (``job_id``, ``job_name``, ``priority``, ``queue``, ``attempt``, ``pool_id``, ``worker_id``,
  ``worker_type``), read from a context variable the worker sets around each handler call (for async handlers in
  their task, for sync handlers in their thread). Outside a job it logs without job fields.
- :class:`InterceptHandler`: routes standard-library ``logging`` records into loguru; inside a job they carry the
  job's fields and ``log_source=bananas_job`` too, elsewhere ``bananas_internal``. The stdlib logger's name goes to
  the ``logger`` field.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

    from bananas.job import Job

__all__ = ["CURRENT_JOB", "InterceptHandler", "JobScope", "flush_logs", "job_logger", "levels", "on_flush"]
__all__ += ["set_min_level"]

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

    __slots__ = ("job", "pool_id", "worker_id", "worker_type")

    def __init__(self, job: Job, pool_id: str | None = None, worker_id: str | None = None,
                 worker_type: str | None = None) -> None:
        self.job, self.pool_id, self.worker_id, self.worker_type = job, pool_id, worker_id, worker_type

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


CURRENT_JOB: ContextVar[JobScope | None] = ContextVar("bananas_current_job", default=None)
"""The job whose handler runs in this task or thread (``None`` elsewhere)."""


def _with_job(record: Record) -> None:
    scope = CURRENT_JOB.get()
    if scope is not None:
        extra = record["extra"]
        for name, value in scope.fields().items():
            extra.setdefault(name, value)


job_logger = logger.bind(component="worker", log_source=JOB_SOURCE).patch(_with_job)
"""A loguru logger for handlers: ``job_logger.info("sent {n} mails", n=3)`` carries the running job's fields."""


class InterceptHandler(logging.Handler):
    """A ``logging`` handler that hands every record to loguru (installed on the root logger by
    :func:`bananas.logs.configure_logging`)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        scope = CURRENT_JOB.get()
        if scope is not None:
            bound = logger.bind(**scope.fields(), log_source=JOB_SOURCE, logger=record.name)
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
