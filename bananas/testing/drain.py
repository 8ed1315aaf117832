"""Run an app's worker in-process until nothing is left to do: :func:`run_until_idle` and its engine
:class:`InProcessWorker` (which :func:`bananas.testing.eager` keeps running for a whole block).

The worker is the real one (``app.worker()``: execution, retries with backoff, dead letters, stored results,
observers), on its own thread and event loop, like a worker process would run it. *Idle* means: no ready and no
running job in the queues the worker reads, no job of the worker still settling, and no scheduled job that is due.
With ``fast_forward`` the brokers' clock (a :class:`~bananas.testing.apps.FastForwardClock`) jumps to the next
scheduled job whenever only scheduled jobs are left, so delayed jobs and retries run at once; without it, jobs
scheduled for later are left where they are (:attr:`IdleSummary.scheduled` counts them).

A job whose type has no handler in the app is dead-lettered at once (``worker.unknown_job_types = "dead-letter"``),
as the test is about this app alone; a production worker leaves it waiting for a worker that has the handler.

The periodic scheduler does not run here (periodic jobs would never let the app be idle); enqueue a periodic job's
handler yourself to test it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs

from bananas.errors import UsageError
from bananas.hookspecs import hookimpl
from bananas.job import Job
from bananas.testing.apps import FastForwardClock, resolve_app

if TYPE_CHECKING:
    from bananas.app import Bananas
    from bananas.worker import Worker

__all__ = ["IdleSummary", "InProcessWorker", "run_until_idle", "run_until_idle_async"]

POLL = 0.005
"""Seconds between two idle checks (the check itself is a few in-process broker calls)."""

FETCH_WAIT = 0.05
"""The in-process worker's blocking fetch: a stop request waits at most this long for an idle pool."""

SHUTDOWN_TIMEOUT = 5.0
"""Seconds a stopping in-process worker gives running jobs (after a ``TimeoutError``, a hung handler), at most."""


@attrs.frozen
class IdleSummary:
    """What happened while the worker ran, as the observers saw it.

    Attributes:
        succeeded: Jobs whose handler returned.
        failed: Handler runs that raised or timed out (each retry counts).
        retried: Failed runs that were scheduled again.
        dead: Jobs that went to the dead letters (retries used up, or no handler for them).
        results: Job id → the handler's return value, for every job that succeeded.
        errors: Job id → the exception of its last failed run (jobs that failed at least once).
        dead_reasons: Job id → why it went to the dead letters.
        jobs: Job id → the job as the worker last reported it (status, attempts, ``last_error``).
        scheduled: Jobs left scheduled for later (only without ``fast_forward``).
    """

    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    dead: int = 0
    results: dict[str, Any] = attrs.field(factory=dict)
    errors: dict[str, BaseException] = attrs.field(factory=dict)
    dead_reasons: dict[str, str] = attrs.field(factory=dict)
    jobs: dict[str, Job] = attrs.field(factory=dict)
    scheduled: int = 0

    def results_of(self, name: str) -> list[Any]:
        """The return values of the jobs named ``name`` that succeeded, in the order the worker first reported
        each job (its first attempt)."""
        return [self.results[job_id] for job_id, job in self.jobs.items()
                if job.name == name and job_id in self.results]


class _Recorder:
    """An observer plugin collecting the job events of the in-process worker (and any other worker of the app)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, Job, Any]] = []

    def _add(self, kind: str, job: Job, detail: Any) -> None:
        with self.lock:
            self.events.append((kind, job, detail))

    @hookimpl
    def bananas_job_succeeded(self, job: Job, result: Any, duration: float) -> None:
        self._add("succeeded", job, result)

    @hookimpl
    def bananas_job_failed(self, job: Job, error: BaseException, will_retry: bool) -> None:
        self._add("failed", job, error)

    @hookimpl
    def bananas_job_retried(self, job: Job, delay: float) -> None:
        self._add("retried", job, delay)

    @hookimpl
    def bananas_job_dead(self, job: Job, reason: str) -> None:
        self._add("dead", job, reason)

    def mark(self) -> int:
        with self.lock:
            return len(self.events)

    def summary(self, since: int = 0, scheduled: int = 0) -> IdleSummary:
        with self.lock:
            events = self.events[since:]
        counts = {"succeeded": 0, "failed": 0, "retried": 0, "dead": 0}
        results: dict[str, Any] = {}
        errors: dict[str, BaseException] = {}
        reasons: dict[str, str] = {}
        jobs: dict[str, Job] = {}
        for kind, job, detail in events:
            counts[kind] += 1
            jobs[job.id] = job
            if kind == "succeeded":
                results[job.id] = detail
            elif kind == "failed":
                errors[job.id] = detail
            elif kind == "dead":
                reasons[job.id] = detail
        return IdleSummary(**counts, results=results, errors=errors, dead_reasons=reasons, jobs=jobs,
                           scheduled=scheduled)


class InProcessWorker:
    """The app's worker on a thread of its own, and a way to wait until it is idle (see the module docstring).

    ``start()`` / ``stop()`` (or ``with``); :meth:`wait_idle` blocks the calling thread, :meth:`wait_idle_async`
    awaits. ``mode`` picks the worker mode (default: the app's ``[worker] mode``).
    """

    def __init__(self, app: Bananas | ModuleType, *, fast_forward: bool = False, mode: str | None = None) -> None:
        self.app = resolve_app(app)
        self.fast_forward = fast_forward
        self.mode = mode
        self.recorder = _Recorder()
        self.clock: FastForwardClock | None = None
        self.worker: Worker | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._queues: tuple[str, ...] = ()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None
        self._restore_options: Any = None

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> InProcessWorker:
        app = self.app
        if self.fast_forward:
            if urlsplit(app.broker_url).scheme != "memory":
                raise UsageError(f"fast_forward needs the memory:// broker (this app's is {app.broker_url!r}); "
                                 "use bananas.testing.use_memory(app) or the bananas_memory_app fixture")
            clock = app.broker_options.clock
            if not isinstance(clock, FastForwardClock):  # a plain memory app: skip time for this run only
                self._restore_options = app.broker_options
                clock = FastForwardClock()
                app.broker_options = attrs.evolve(app.broker_options, clock=clock)
            self.clock = clock
        plan = app.plan(self.mode)
        self._queues = tuple(dict.fromkeys(queue for pool in plan.pools for queue in pool.queues))
        self.worker = app.worker(attrs.evolve(plan, scheduler=False))
        self.worker.fetch_wait = FETCH_WAIT
        # A job without a handler here fails the run instead of waiting for a worker that has one: it is a test.
        self.worker.unknown_job_types = "dead-letter"
        self.worker.shutdown_timeout = min(self.worker.shutdown_timeout, SHUTDOWN_TIMEOUT)  # tests stay bounded
        app.plugins.pm.register(self.recorder, name=f"bananas-testing-{id(self.recorder):x}")
        app.plugins.observers.refresh()
        self._thread = threading.Thread(target=self._main, name="bananas-testing-worker", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._failure is not None:
            self._cleanup()
            raise self._failure
        return self

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits
            self._failure = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        assert self.worker is not None
        self.loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self.worker.run(), name="bananas-testing-worker")
        self._ready.set()
        stop = asyncio.create_task(self._stopping.wait())
        await asyncio.wait([self._task, stop], return_when=asyncio.FIRST_COMPLETED)
        self.worker.request_stop()
        stop.cancel()
        await self._task

    def stop(self) -> None:
        """Stop the worker (running jobs finish first) and undo what :meth:`start` changed on the app."""
        thread, loop, stopping = self._thread, self.loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:  # the loop closed meanwhile: the worker has stopped already
                pass
        thread.join(30)
        self._thread = None
        self._cleanup()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def _cleanup(self) -> None:
        pm = self.app.plugins.pm
        if pm.is_registered(self.recorder):
            pm.unregister(self.recorder)
            self.app.plugins.observers.refresh()
        if self._restore_options is not None:
            self.app.broker_options, self._restore_options = self._restore_options, None

    def __enter__(self) -> InProcessWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- waiting -------------------------------------------------------------------------------------------------
    def mark(self) -> int:
        """A position in the event log: :meth:`wait_idle` with ``since=`` reports only what happened after it."""
        return self.recorder.mark()

    def wait_idle(self, timeout: float = 10.0, *, since: int = 0) -> IdleSummary:
        """Block until the app is idle (see the module docstring); the summary covers the events after ``since``.
        Raises ``TimeoutError`` naming what is left when it is not idle within ``timeout`` seconds."""
        if self.loop is None or self._thread is None:
            raise UsageError("the in-process worker is not running; call start() first")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            raise UsageError("wait_idle() was called from inside a job of the worker it waits for")
        future = asyncio.run_coroutine_threadsafe(self._until_idle(timeout), self.loop)
        scheduled = future.result()
        return self.recorder.summary(since, scheduled)

    async def wait_idle_async(self, timeout: float = 10.0, *, since: int = 0) -> IdleSummary:
        """:meth:`wait_idle` for asyncio code: the calling event loop keeps running meanwhile."""
        if self.loop is None or self._thread is None:
            raise UsageError("the in-process worker is not running; call start() first")
        if asyncio.get_running_loop() is self.loop:
            raise UsageError("wait_idle_async() was called from inside a job of the worker it waits for")
        scheduled = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._until_idle(timeout), self.loop))
        return self.recorder.summary(since, scheduled)

    async def _until_idle(self, timeout: float) -> int:
        """Runs on the worker's loop; returns the number of jobs left scheduled for later."""
        assert self.worker is not None and self._task is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        broker = await self.app.broker()
        maintenance = self.app.capabilities(broker).maintenance
        worker = self.worker
        while True:
            if self._task.done():
                self._task.result()  # the worker's own error (e.g. the broker refused it)
                raise UsageError("the in-process worker stopped")
            if maintenance is not None:
                await maintenance.move_due()
            depths = await broker.depths(self._queues)
            ready = sum(depth.ready for depth in depths.values())
            running = sum(depth.running for depth in depths.values())
            scheduled = sum(depth.scheduled for depth in depths.values())
            if not (ready or running or worker.slots or worker.settlement.pending):
                if not scheduled:
                    return 0
                eta = self._next_eta(broker)
                if eta is None:
                    return scheduled
                if self.clock is not None:
                    self.clock.advance_to(eta)
                    continue
            if loop.time() >= deadline:
                raise TimeoutError(f"not idle after {timeout:g}s: {ready} ready, {running} running, {scheduled} "
                                   f"scheduled job(s) in {', '.join(self._queues)}")
            await asyncio.sleep(POLL)

    def _next_eta(self, broker: object) -> float | None:
        """The next scheduled job's due time if it is due now (or, fast-forwarding, at all); else ``None``."""
        next_eta: Callable[[], float | None] | None = getattr(broker, "next_eta", None)
        if next_eta is None:
            return None
        eta = next_eta()
        if eta is None:
            return None
        now = self.clock() if self.clock is not None else self.app.broker_options.clock()
        return eta if self.clock is not None or eta <= now else None


def run_until_idle(app: Bananas | ModuleType, timeout: float = 10.0, *, fast_forward: bool = False,
                   mode: str | None = None) -> IdleSummary:
    """Run the app's worker in-process until no ready, running or due job is left; returns what happened.

    ``fast_forward=True`` (memory broker) skips time: delayed jobs and retries run at once instead of on their
    schedule. Raises ``TimeoutError`` when the app is not idle within ``timeout`` seconds (a job that keeps
    enqueuing more, a handler that hangs). Call it from test code, not from inside a job.
    """
    with InProcessWorker(app, fast_forward=fast_forward, mode=mode) as worker:
        return worker.wait_idle(timeout)


async def run_until_idle_async(app: Bananas | ModuleType, timeout: float = 10.0, *, fast_forward: bool = False,
                               mode: str | None = None) -> IdleSummary:
    """:func:`run_until_idle` for async tests: the worker runs on its own thread, this loop keeps running."""
    worker = InProcessWorker(app, fast_forward=fast_forward, mode=mode)
    await asyncio.to_thread(worker.start)
    try:
        return await worker.wait_idle_async(timeout)
    finally:
        await asyncio.to_thread(worker.stop)
