"""Execution: decode a delivery, bind its handler and call it within its time limit → an :data:`Outcome`.

Nothing here talks to the broker, the result backend or the observers: :mod:`bananas.worker.settlement` does
that with the outcome. Async handlers run under ``asyncio.timeout`` (cancelled on timeout); sync handlers run on one
of the worker's job threads (:mod:`bananas.worker.threads`) and get an asynchronous :class:`JobInterrupt` on
timeout (a thread blocked in C code sees it when that call returns).

Job control (issue 16): a job past its ``expires`` time, or whose cancel request is known before its handler
starts, ends as :class:`Dropped` without running. A cancel request that comes while the handler runs
(:meth:`bananas.worker.state._Slot.request_cancel`, from the lease heartbeat) cancels the job's task: an async
handler gets ``CancelledError``; a sync handler's thread is interrupted like on a timeout; either way the outcome is
:class:`Failed` with :class:`~bananas.errors.JobCancelled`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bananas.errors import JobCancelled, SerializationError
from bananas.handlers import HandlerSpec
from bananas.headers import DEFAULTED_RETRIES_HEADER, expires_from_headers
from bananas.job import Job, Status
from bananas.job_context import JobContext
from bananas.log_context import CURRENT_JOB
from bananas.serializer import JobCodec, SignatureError
from bananas.worker import events
from bananas.worker.interrupt import JobTimeout, interrupt_thread
from bananas.worker.state import WorkerState, _Slot
from bananas.worker.threads import SyncThreads

__all__ = ["Dropped", "Execution", "Failed", "Outcome", "Rejected", "Succeeded"]

CANCEL_GRACE = 1.0
"""Seconds a cancelled sync handler's thread gets to unwind after its interrupt before the job settles (a thread
blocked in C code sees the interrupt only when that call returns; the job does not wait longer for it)."""

_set = object.__setattr__
"""Write a field of a validated ``Job`` without running its attrs validators (only with values of the right type)."""


class Succeeded:
    """The handler returned ``value``."""

    __slots__ = ("duration", "value")

    def __init__(self, value: Any, duration: float) -> None:
        self.value, self.duration = value, duration


class Failed:
    """The handler raised ``error`` (or timed out: :class:`JobTimeout`)."""

    __slots__ = ("duration", "error")

    def __init__(self, error: BaseException, duration: float) -> None:
        self.error, self.duration = error, duration


class Rejected:
    """No handler ran: the body is malformed (``job`` is ``None``) or this worker has no handler for the job."""

    __slots__ = ("detail", "job", "reason")

    def __init__(self, reason: str, job: Job | None = None, detail: str = "") -> None:
        self.reason, self.job, self.detail = reason, job, detail


class Dropped:
    """No handler ran: the job ends in ``status`` (``cancelled`` or ``expired``) because of ``reason``."""

    __slots__ = ("job", "reason", "status")

    def __init__(self, job: Job, status: Status, reason: str) -> None:
        self.job, self.status, self.reason = job, status, reason


Outcome = Succeeded | Failed | Rejected | Dropped


class Execution:
    """Runs one delivery's handler. ``started(job)`` is called right before the handler (settlement notifies).

    With ``state`` (the worker's), the ``dequeued`` and ``started`` events are logged (DEBUG) and the handler runs
    with :data:`~bananas.log_context.CURRENT_JOB` set, so ``job_logger`` and standard-library ``logging`` records
    inside it carry the job's fields.
    """

    def __init__(
        self,
        codec: JobCodec,
        handlers: Mapping[str, HandlerSpec],
        default_timeout: float,
        started: Callable[[Job, str], None],
        state: WorkerState | None = None,
    ) -> None:
        self.state = state
        self.codec = codec
        self.handlers = handlers
        self.default_timeout = default_timeout
        self.started = started
        self.threads: SyncThreads | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def open(self, slots: int) -> None:
        """Start one thread per job slot for sync handlers, on the running loop (none for an app with no sync
        handler)."""
        self.loop = asyncio.get_running_loop()
        if slots and any(not spec.is_async for spec in self.handlers.values()):
            self.threads = SyncThreads(self.loop, slots)

    def close(self) -> None:
        if self.threads is not None:
            self.threads.close()
            self.threads = None

    async def run(self, slot: _Slot, job_types: tuple[str, ...] | None, pool_id: str) -> Outcome:
        delivery = slot.delivery
        try:
            job = self.codec.decode(delivery.body)
        except SerializationError as exc:
            reason = exc.reason if isinstance(exc, SignatureError) else f"malformed job: {exc.reason}"
            return Rejected(reason, None, exc.reason)
        slot.job = job
        state = self.state
        if state is not None:
            events.dequeued(state, job, pool_id)
        if job.headers and not job.attempts:  # expires bounds the first start; a retry has started already
            expires = expires_from_headers(job.headers)
            if expires is not None and time.time() >= expires:
                return Dropped(job, Status.EXPIRED, f"not started before it expired ({_utc(expires)})")
        if slot.cancelled or (delivery.deliveries > 1 and await self._cancel_pending(slot)):
            return Dropped(job, Status.CANCELLED, "cancelled before it started")
        handler = self.handlers.get(job.name)
        if handler is None or (job_types is not None and job.name not in job_types):
            return Rejected(f"no handler for job {job.name!r} in this worker", job)
        if handler.max_retries is not None and job.headers and DEFAULTED_RETRIES_HEADER in job.headers:
            _set(job, "max_retries", handler.max_retries)  # sent by a producer without the handler
        problem = handler.mismatch(job.payload)
        if problem is not None:
            _set(job, "last_error", f"TypeError: {problem}")  # never retried: the same payload fails the same way
            return Rejected(problem, job)
        # The job was validated when decoded; plain attribute writes skip attrs' per-field validators on the hot path.
        _set(job, "attempts", job.attempts + 1)
        _set(job, "status", Status.RUNNING)
        _set(job, "started_at", time.time())
        self.started(job, pool_id)
        scope = self._context(job, pool_id)
        slot.scope = scope
        if slot.cancelled:  # the request came while the job was being prepared
            scope._cancelled = True
        if state is not None:
            events.started(state, job, pool_id)
        started = time.perf_counter()
        ok, value = await self._call(handler, job, slot, scope)
        duration = time.perf_counter() - started
        if scope._inflight is not None:
            await scope.flush()  # the last progress is stored before the job settles
        _set(job, "finished_at", time.time())
        return Succeeded(value, duration) if ok else Failed(value, duration)

    async def _cancel_pending(self, slot: _Slot) -> bool:
        """A redelivered job may have been cancelled while its earlier hand-out ran: ask before running it again."""
        control = self.state._caps.cancellation if self.state is not None else None
        if control is None:
            return False
        try:
            return (await control.cancel_requested([slot.delivery]))[0]
        except Exception:  # noqa: BLE001 - the heartbeat asks again within a second
            return False

    def _context(self, job: Job, pool_id: str) -> JobContext:
        """What ``current_job()`` returns in the handler (and job log records read)."""
        state = self.state
        if state is None:
            return JobContext(job, pool_id)
        store = state._caps.progress
        if store is None:
            return JobContext(job, pool_id, state.id, state.plan.mode)
        queue = job.queue

        def write(job_id: str, value: float, message: str | None) -> Awaitable[None]:
            return store.set_progress(job_id, value, message, queue=queue)

        return JobContext(job, pool_id, state.id, state.plan.mode, loop=self.loop, writer=write)

    async def _call(self, handler: HandlerSpec, job: Job, slot: _Slot, scope: JobContext) -> tuple[bool, Any]:
        timeout = job.timeout or handler.timeout or self.default_timeout
        task = asyncio.current_task()
        assert task is not None
        slot.stop = task.cancel  # slot.request_cancel stops the handler by cancelling this job's task
        if handler.is_async:
            token = CURRENT_JOB.set(scope)  # this job's own task: reset before settlement logs
            try:
                async with asyncio.timeout(timeout):
                    return await _guarded(handler.func, job.payload)
            except TimeoutError:
                return False, JobTimeout(f"job {job.name} timed out after {timeout:g}s")
            except asyncio.CancelledError:
                if not _cancel_of(task, slot):
                    raise
                return False, _cancelled(job)
            finally:
                slot.stop = None
                CURRENT_JOB.reset(token)
        if self.threads is None:  # a handler registered after the worker started (tests do): start them now
            assert self.loop is not None
            self.threads = SyncThreads(self.loop, 1)
        try:
            return await self.threads.run(handler.func, job.payload, slot, scope, timeout, job.name)
        except asyncio.CancelledError:
            if not _cancel_of(task, slot):
                raise
            slot.stop = None  # the grace wait below must not be cancelled by the same request
            if slot.thread_id is not None:
                interrupt_thread(slot.thread_id)
                # a short grace for the thread to unwind (its finally blocks run) before the job counts as cancelled
                deadline = time.monotonic() + CANCEL_GRACE
                while slot.thread_id is not None and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
            return False, _cancelled(job)
        finally:
            slot.stop = None


def _cancel_of(task: asyncio.Task[Any], slot: _Slot) -> bool:
    """In ``except CancelledError``: whether the cancellation is the job's own cancel request (then it is undone:
    the task goes on to settle the job); any other one (the worker stopping) must propagate."""
    return slot.cancelled and task.uncancel() == 0


def _cancelled(job: Job) -> JobCancelled:
    return JobCancelled(job.id, f"job {job.name} {job.id} was cancelled while it ran")


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


async def _guarded(func: Callable[..., Any], payload: dict[str, Any]) -> tuple[bool, Any]:
    """Await the handler; every exception, ``SystemExit`` and ``KeyboardInterrupt`` included, becomes a result."""
    try:
        return True, await func(**payload)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001 - a handler must never take the worker down
        return False, exc
