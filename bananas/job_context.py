"""``current_job()``: the running job, seen from inside its handler.

The worker sets :data:`bananas.log_context.CURRENT_JOB` around every handler call (in the job's task for async
handlers, in its thread for sync ones) to a :class:`JobContext`, which is the :class:`~bananas.log_context.JobScope`
its log records read plus what a handler may ask: id, name, attempt, max retries, times, headers, a bound logger and
:meth:`JobContext.report_progress`. One context variable, so logging and ``current_job()`` can never disagree.

Why a function and no ``ctx`` parameter: a handler's signature stays its payload (the worker checks payloads
against it, ``send_email(to, subject)`` keeps running directly as a plain function), and code deep inside the
handler reaches the job without threading a parameter through.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from loguru import logger

from bananas.errors import UsageError
from bananas.log_context import CURRENT_JOB, JobLogger, JobScope, job_logger

if TYPE_CHECKING:
    from bananas.job import Job

__all__ = ["PROGRESS_WAIT", "JobContext", "current_job"]

PROGRESS_WAIT = 5.0
"""Seconds a sync handler's ``report_progress`` waits for the broker to store it (then it goes on without)."""

ProgressWriter = Callable[[str, float, "str | None"], Awaitable[None]]

_log = logger.bind(component="worker", log_source="bananas_internal")


class JobContext(JobScope):
    """The running job as its handler sees it (``bananas.current_job()``); read-only but for progress.

    ``attempt`` counts from 1 (this run included); ``max_retries`` is how many retries follow a failure at most.
    """

    __slots__ = ("_cancelled", "_inflight", "_latest", "_loop", "_writer")

    def __init__(self, job: Job, pool_id: str | None = None, worker_id: str | None = None,
                 worker_type: str | None = None, *, writer: ProgressWriter | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(job, pool_id, worker_id, worker_type)
        self._writer = writer
        self._loop = loop
        self._latest: tuple[float, str | None] | None = None
        self._inflight: asyncio.Future[None] | None = None
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        """``True`` once ``client.cancel(job_id)`` reached this run (the worker checks about once a second). An
        async handler is then cancelled (``asyncio.CancelledError`` at its next ``await``); a sync handler is
        interrupted like a timeout; either may look at this flag between steps to stop cleanly first."""
        return self._cancelled

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def name(self) -> str:
        return self.job.name

    @property
    def attempt(self) -> int:
        return self.job.attempts

    @property
    def max_retries(self) -> int:
        return self.job.max_retries

    @property
    def enqueued_at(self) -> float | None:
        return self.job.enqueued_at

    @property
    def started_at(self) -> float | None:
        return self.job.started_at

    @property
    def headers(self) -> Mapping[str, str]:
        return MappingProxyType(self.job.headers)

    @property
    def logger(self) -> JobLogger:
        """``bananas.job_logger``: records carry this job's fields."""
        return job_logger

    def report_progress(self, value: float, message: str | None = None) -> None:
        """Store ``value`` (your scale: 0–1, percent, items done) and ``message`` as this job's progress.

        Works from sync and async handlers and never raises for the broker: from the worker's loop (async
        handlers) it is written in the background, the latest value always last; from a sync handler's thread it
        waits up to :data:`PROGRESS_WAIT` seconds for the write. A broker without the ``progress`` capability
        keeps nothing (logged once per job at DEBUG)."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"report_progress: value must be a number, got {value!r}")
        if message is not None and not isinstance(message, str):
            raise TypeError(f"report_progress: message must be a string or None, got {message!r}")
        if self._writer is None or self._loop is None:
            return
        self._latest = (float(value), message)
        loop = self._loop
        if asyncio._get_running_loop() is loop:  # an async handler, on the worker's loop
            self._kick()
            return
        done = threading.Event()
        loop.call_soon_threadsafe(self._kick, done)
        done.wait(PROGRESS_WAIT)

    def _kick(self, done: threading.Event | None = None) -> None:
        """On the loop: start a write of the latest value unless one is in flight (it writes the latest after)."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._write(done))
        elif done is not None:
            self._inflight.add_done_callback(lambda _f: done.set())

    async def _write(self, done: threading.Event | None) -> None:
        assert self._writer is not None
        try:
            while self._latest is not None:
                (value, message), self._latest = self._latest, None
                await self._writer(self.job.id, value, message)
        except Exception as exc:  # noqa: BLE001 - progress is best effort; the job goes on
            _log.warning("progress of job {job_id} not stored: {error}", job_id=self.job.id, error=exc)
        finally:
            if done is not None:
                done.set()

    async def flush(self) -> None:
        """Wait for the progress write in flight (the worker calls it before settling the job)."""
        if self._inflight is not None and not self._inflight.done():
            await asyncio.gather(self._inflight, return_exceptions=True)

    def __repr__(self) -> str:
        return f"<JobContext {self.name} {self.id} attempt {self.attempt}>"


def current_job() -> JobContext:
    """The job whose handler is running here (its task or thread); :class:`UsageError` outside a job."""
    scope = CURRENT_JOB.get()
    if not isinstance(scope, JobContext):
        raise UsageError("current_job() is only available inside a job handler run by a Bananas worker "
                         "(calling the task function directly runs it outside any job)")
    return scope


