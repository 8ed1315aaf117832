"""One worker process: pools of job slots, heartbeat, scheduler and reaper, graceful shutdown.

Per delivery the hot path is: decode → run (async task, or a thread for sync handlers) → settle. Acks are
batched: while one ``ack`` call is in flight the next ones queue up and go in the following call. With a broker that
has the optional ``ack_and_fetch`` (see :mod:`bananas.broker`), the acks of jobs that finish while their pool is
about to fetch ride along with that fetch instead: one round trip for both. A pool blocked in an idle fetch (or a
stopping worker) still acks at once.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import attrs
from loguru import logger

from bananas.app import DEFAULTED_RETRIES_HEADER
from bananas.broker import Broker, Delivery
from bananas.errors import SerializationError
from bananas.job import Job, Status
from bananas.result_backend import encode_failure, encode_success, ttl_from_headers
from bananas.serializer import SignatureError
from bananas.worker.interrupt import JobInterrupt, JobTimeout, interrupt_thread
from bananas.worker_mode import PoolPlan, WorkerPlan

if TYPE_CHECKING:
    from bananas.app import Bananas, HandlerSpec

__all__ = ["Worker"]

FETCH_WAIT = 2.0
"""Seconds one blocking fetch waits; also the longest a stop request waits for an idle pool."""

log = logger.bind(component="worker", log_source="bananas_internal")


@attrs.define(eq=False)
class _Slot:
    delivery: Delivery
    job: Job | None = None
    thread_id: int | None = None
    done: bool = False


_set = object.__setattr__
"""Write a field of a validated ``Job`` without running its attrs validators (only with values of the right type)."""


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Worker:
    """Runs the pools of a plan against the app's broker until asked to stop.

    Use :meth:`run` inside an event loop, :meth:`run_forever` from a CLI (installs signal handlers), or
    :meth:`start_in_thread` for tests and the demo.
    """

    def __init__(self, app: Bananas, plan: WorkerPlan) -> None:
        self.app = app
        self.plan = plan
        self.id = f"{socket.gethostname()}-{os.getpid()}"
        s = app.settings
        self.default_timeout: float = s["jobs.timeout"]
        self.shutdown_timeout: float = s["worker.shutdown_timeout"]
        self.backoff = (s["jobs.retry_backoff_base"], s["jobs.retry_backoff_factor"], s["jobs.retry_backoff_max"])
        self.slots: dict[str, _Slot] = {}
        self.processed = 0
        self.failed = 0
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._acks: list[tuple[Delivery, Job, Any, float]] = []
        self._ack_task: asyncio.Task[None] | None = None
        self._combined = False  # the broker has ack_and_fetch: pools take pending acks along with their fetches
        self._blocked: set[str] = set()  # pools whose loop is inside a (possibly blocking) fetch
        self._broker: Broker | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._observers = app.plugins.observers
        self._started = threading.Event()
        self.fetch_wait = FETCH_WAIT

    # -- control -----------------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the worker to stop (thread-safe): no new jobs, running ones get ``shutdown_timeout`` to finish."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)

    def run_forever(self) -> None:
        """Run until SIGTERM/SIGINT; a second signal exits at once (the broker's lease recovers the jobs).

        Sync handlers still running after the grace period were interrupted and their jobs given back; one stuck
        in C code (a blocking call that ignores the interrupt) must not hold the process, so after a short wait
        the process exits without joining it.
        """
        asyncio.run(self.run(install_signals=True))
        deadline = time.monotonic() + 2.0
        stuck = [t for t in threading.enumerate() if t.name.startswith("bananas-job") and t.is_alive()]
        for thread in stuck:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in stuck):
            log.warning("handler threads still running after shutdown; exiting without waiting for them")
            logger.complete()
            os._exit(0)

    def start_in_thread(self) -> threading.Thread:
        """Run in a daemon thread; returns once the pools have started."""
        thread = threading.Thread(target=lambda: asyncio.run(self.run()), name=f"bananas-{self.plan.mode}", daemon=True)
        thread.start()
        self._started.wait(10)
        return thread

    # -- main ----------------------------------------------------------------------------------------------------
    async def run(self, *, install_signals: bool = False) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if install_signals:
            self._install_signals()
        self._broker = await self.app.broker()
        self._combined = getattr(self._broker, "ack_and_fetch", None) is not None
        total = sum(pool.concurrency for pool in self.plan.pools)
        self._executor = ThreadPoolExecutor(max_workers=total + 4, thread_name_prefix="bananas-job") if total else None
        heartbeat = _Heartbeat(self)
        heartbeat.start()
        tasks = [asyncio.create_task(self._pool(pool), name=f"pool-{pool.name}") for pool in self.plan.pools]
        tasks.append(asyncio.create_task(self._maintenance(), name="maintenance"))
        log.info(
            "worker {id} started: mode {mode}, pools {pools}, scheduler {sched}",
            id=self.id,
            mode=self.plan.mode,
            pools=", ".join(f"{p.worker_id or p.name}×{p.concurrency} {list(p.queues)}" for p in self.plan.pools)
            or "none",
            sched="on" if self.plan.scheduler else "off",
        )
        self._observers.notify("bananas_worker_started", worker=self)
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            log.info("worker {id} stopping; {n} job(s) running", id=self.id, n=len(self.slots))
            await self._shutdown(tasks)
            heartbeat.stop()
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
            await self.app.aclose()
            self._observers.notify("bananas_worker_stopped", worker=self)
            log.info("worker {id} stopped after {n} job(s)", id=self.id, n=self.processed)

    def _install_signals(self) -> None:
        assert self._loop is not None and self._stop is not None
        stop = self._stop

        def on_signal(signum: int) -> None:
            if stop.is_set():
                log.warning("second signal {s}: exiting now; the broker's lease recovers running jobs", s=signum)
                os._exit(1)
            log.info("signal {s}: finishing running jobs (up to {t}s), taking no new ones", s=signum,
                     t=self.shutdown_timeout)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, on_signal, sig)

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        assert self._broker is not None
        await asyncio.gather(*tasks, return_exceptions=True)  # pools return within FETCH_WAIT of the stop
        running = [t for t in asyncio.all_tasks() if t.get_name().startswith("job-")]
        if running:
            _, pending = await asyncio.wait(running, timeout=self.shutdown_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for slot in self.slots.values():  # sync handlers past the grace period: stop their threads too
            if not slot.done and slot.thread_id is not None:
                interrupt_thread(slot.thread_id)
        if self._ack_task is not None and not self._ack_task.done():
            await asyncio.gather(self._ack_task, return_exceptions=True)  # a finished job is acked, not released
        await self._flush_acks()
        unfinished = [slot.delivery for slot in self.slots.values() if not slot.done]
        if unfinished:
            await self._broker.release(unfinished)
            log.warning("gave {n} unfinished job(s) back to the broker", n=len(unfinished))
        self.slots.clear()

    # -- pools ---------------------------------------------------------------------------------------------------
    async def _pool(self, pool: PoolPlan) -> None:
        assert self._broker is not None and self._stop is not None
        broker, stop = self._broker, self._stop
        combined = getattr(broker, "ack_and_fetch", None)
        free = asyncio.Semaphore(pool.concurrency)
        in_use = 0

        def release(_: object) -> None:
            nonlocal in_use
            in_use -= 1
            free.release()

        while not stop.is_set():
            await free.acquire()
            free.release()
            if in_use:
                # Jobs finishing in the same loop iteration free their slots together: one more turn lets them, so
                # a busy pool fetches (and later acks) in batches instead of one job per round trip. An idle pool
                # (in_use == 0) fetches at once, so this costs no latency.
                await asyncio.sleep(0)
            limit = pool.concurrency - in_use
            acks: list[tuple[Delivery, Job, Any, float]] = []
            try:
                if combined is not None and self._acks:
                    # The acks of finished jobs ride along with the next take: one round trip for both.
                    acks, self._acks = self._acks, []
                    owned, deliveries = await combined([item[0] for item in acks], pool.queues, limit)
                    self._settle(acks, owned)
                    acks = []
                else:
                    deliveries = []
                if not deliveries:
                    self._blocked.add(pool.name)  # a job finishing now flushes its ack itself (see _process)
                    if self._acks and (self._ack_task is None or self._ack_task.done()):
                        self._ack_task = asyncio.create_task(self._flush_acks())  # finished meanwhile
                    try:
                        deliveries = await broker.fetch(pool.queues, limit, self.fetch_wait)
                    finally:
                        self._blocked.discard(pool.name)
            except Exception as exc:  # noqa: BLE001 - a broker outage must not end the pool
                if acks:
                    log.error("ack of {n} job(s) failed: {e}; their leases will expire and they run again",
                              n=len(acks), e=_error_text(exc))
                    self._settle(acks, [False] * len(acks))
                log.error("fetch from {q} failed: {e}; retrying in 1s", q=list(pool.queues), e=_error_text(exc))
                await asyncio.sleep(1.0)
                continue
            if stop.is_set() and deliveries:  # stopping: start nothing new, give them straight back
                await broker.release(deliveries)
                break
            for delivery in deliveries:
                await free.acquire()
                in_use += 1
                self.slots[delivery.id] = slot = _Slot(delivery)
                task = asyncio.create_task(self._process(slot, pool), name=f"job-{delivery.id}")
                task.add_done_callback(release)

    async def _maintenance(self) -> None:
        assert self._broker is not None and self._stop is not None
        broker = self._broker
        reap_every = broker.options.reaper_interval
        tick = min(self.plan.scheduler_interval, reap_every) if self.plan.scheduler else reap_every
        next_reap = time.monotonic() + reap_every
        while not self._stop.is_set():
            try:
                if self.plan.scheduler:
                    while await broker.move_due(1000) >= 1000:
                        pass
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + reap_every
                    recovered = await broker.reap()
                    if recovered:
                        log.warning("recovered {n} job(s) whose worker stopped renewing its lease", n=recovered)
            except Exception as exc:  # noqa: BLE001 - keep the loop alive through broker outages
                log.error("scheduler/reaper tick failed: {e}", e=_error_text(exc))
            try:
                await asyncio.wait_for(self._stop.wait(), tick)
            except TimeoutError:
                pass

    # -- one job -------------------------------------------------------------------------------------------------
    async def _process(self, slot: _Slot, pool: PoolPlan) -> None:
        assert self._broker is not None
        broker, delivery = self._broker, slot.delivery
        try:
            job = self.app.codec.decode(delivery.body)
        except SerializationError as exc:
            slot.done = True
            reason = exc.reason if isinstance(exc, SignatureError) else f"malformed job: {exc.reason}"
            await broker.dead_letter(delivery, body=delivery.body, reason=reason)
            log.error("job {id} is malformed and went to the dead letters: {r}", id=delivery.id, r=exc.reason)
            self.slots.pop(delivery.id, None)
            return
        slot.job = job
        handler = self.app.handlers.get(job.name)
        if handler is None or (pool.job_types is not None and job.name not in pool.job_types):
            slot.done = True
            reason = f"no handler for job {job.name!r} in this worker"
            await self._bury(delivery, job, reason)
            self.slots.pop(delivery.id, None)
            return
        if handler.max_retries is not None and job.headers and DEFAULTED_RETRIES_HEADER in job.headers:
            _set(job, "max_retries", handler.max_retries)  # sent by a producer without the handler
        # The job was validated when decoded; plain attribute writes skip attrs' per-field validators on the hot path.
        _set(job, "attempts", job.attempts + 1)
        _set(job, "status", Status.RUNNING)
        _set(job, "started_at", time.time())
        self._observers.notify("bananas_job_started", job=job, worker_id=pool.worker_id)
        started = time.perf_counter()
        ok, value = await self._call(handler, job, slot)
        duration = time.perf_counter() - started
        _set(job, "finished_at", time.time())
        if ok and self.app.result_backend_url:
            ok, value = await self._store_result(job, value)
        if ok:
            _set(job, "status", Status.COMPLETED)
            self._acks.append((delivery, job, value, duration))
            # Its pool's loop fetches again as soon as this slot is free and takes the ack along (ack_and_fetch),
            # unless that loop is blocked in a fetch already, is stopping, or the broker cannot combine: then ack now.
            piggyback = self._combined and pool.name not in self._blocked and not self._stop_requested()
            if not piggyback and (self._ack_task is None or self._ack_task.done()):
                self._ack_task = asyncio.create_task(self._flush_acks())
        else:
            slot.done = True
            await self._fail(delivery, job, value)
            self.slots.pop(delivery.id, None)

    def _stop_requested(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    async def _call(self, handler: HandlerSpec, job: Job, slot: _Slot) -> tuple[bool, Any]:
        timeout = job.timeout or handler.timeout or self.default_timeout
        if handler.is_async:
            try:
                async with asyncio.timeout(timeout):
                    return await _guarded(handler.func, job.payload)
            except TimeoutError:
                return False, JobTimeout(f"job {job.name} timed out after {timeout:g}s")
        assert self._loop is not None
        future = self._loop.run_in_executor(self._executor, _run_sync, handler.func, job.payload, slot)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            if slot.thread_id is not None:
                interrupt_thread(slot.thread_id)
            return False, JobTimeout(f"job {job.name} timed out after {timeout:g}s")

    async def _store_result(self, job: Job, value: Any) -> tuple[bool, Any]:
        backend = await self.app.results() if self.app.result_backend_url else None
        if backend is None:
            return True, value
        ttl = ttl_from_headers(job.headers) if job.headers else None
        if ttl == 0:  # result_ttl=0: the producer wants no stored result
            return True, value
        try:
            body = encode_success(self.app.codec, value)
        except SerializationError as exc:
            return False, TypeError(f"result of job {job.name} cannot be stored: {exc}")
        await backend.store(job.id, body, ttl)
        return True, value

    async def _flush_acks(self) -> None:
        assert self._broker is not None
        while self._acks:
            batch, self._acks = self._acks, []
            try:
                owned = await self._broker.ack([item[0] for item in batch])
            except Exception as exc:  # noqa: BLE001 - unacked jobs are redelivered after their lease
                log.error("ack of {n} job(s) failed: {e}; their leases will expire and they run again",
                          n=len(batch), e=_error_text(exc))
                owned = [False] * len(batch)
            self._settle(batch, owned)

    def _settle(self, batch: list[tuple[Delivery, Job, Any, float]], owned: list[bool]) -> None:
        for (delivery, job, value, duration), mine in zip(batch, owned, strict=True):
            slot = self.slots.pop(delivery.id, None)
            if slot is not None:
                slot.done = True
            self.processed += 1
            if not mine:
                log.warning("job {id} finished but its lease was lost; it may run again", id=delivery.id)
                continue
            self._observers.notify("bananas_job_succeeded", job=job, result=value, duration=duration)

    async def _fail(self, delivery: Delivery, job: Job, error: BaseException) -> None:
        assert self._broker is not None
        self.processed += 1
        self.failed += 1
        job.last_error = _error_text(error)
        job.traceback = "".join(traceback.format_exception(error)) if error.__traceback__ else job.last_error
        will_retry = job.attempts <= job.max_retries
        self._observers.notify("bananas_job_failed", job=job, error=error, will_retry=will_retry)
        if not will_retry:
            await self._bury(delivery, job, f"failed after {job.attempts} attempt(s): {job.last_error}")
            return
        base, factor, cap = self.backoff
        delay = min(cap, base * factor ** (job.attempts - 1)) * random.uniform(0.5, 1.0)
        job.status = Status.RETRYING
        job.scheduled_at = time.time() + delay
        if await self._broker.retry(delivery, body=self.app.codec.encode(job), at=job.scheduled_at):
            log.info("job {id} ({name}) failed ({err}); retry {n}/{max} in {d:.2f}s", id=job.id, name=job.name,
                     err=job.last_error, n=job.attempts, max=job.max_retries, d=delay)
            self._observers.notify("bananas_job_retried", job=job, delay=delay)
        else:
            log.warning("job {id} failed but its lease was lost; not retried by this worker", id=job.id)

    async def _bury(self, delivery: Delivery, job: Job, reason: str) -> None:
        assert self._broker is not None
        job.status = Status.DEAD
        job.finished_at = time.time()
        if await self._broker.dead_letter(delivery, body=self.app.codec.encode(job), reason=reason):
            log.error("job {id} ({name}) is dead: {r}", id=job.id, name=job.name, r=reason)
            backend = await self.app.results() if self.app.result_backend_url else None
            if backend is not None:
                if job.last_error:
                    error_type, _, message = job.last_error.partition(": ")
                else:  # dead without a handler error (no handler, malformed): the reason is the message
                    error_type, message = "DeadLetter", reason
                body = encode_failure(self.app.codec, error_type, message or reason, job.traceback)
                await backend.store(job.id, body, ttl_from_headers(job.headers) if job.headers else None)
            self._observers.notify("bananas_job_dead", job=job, reason=reason)


async def _guarded(func: Callable[..., Any], payload: dict[str, Any]) -> tuple[bool, Any]:
    """Await the handler; every exception, ``SystemExit`` and ``KeyboardInterrupt`` included, becomes a result."""
    try:
        return True, await func(**payload)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001 - a handler must never take the worker down
        return False, exc


def _run_sync(func: Callable[..., Any], payload: dict[str, Any], slot: _Slot) -> tuple[bool, Any]:
    slot.thread_id = threading.get_ident()
    try:
        return True, func(**payload)
    except JobInterrupt:
        return False, JobTimeout("interrupted")
    except BaseException as exc:  # noqa: BLE001 - SystemExit/KeyboardInterrupt from a handler fail only the job
        return False, exc
    finally:
        slot.thread_id = None


class _Heartbeat:
    """Renews the leases of running jobs from its own thread and event loop (a blocked worker loop cannot stop
    it), with its own broker connection."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.interval = max(worker.app.broker_options.lease / 3, 0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bananas-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        broker = self.worker.app.new_broker()
        try:
            loop.run_until_complete(broker.connect())
            while not self._stop.wait(self.interval):
                held = [slot.delivery for slot in list(self.worker.slots.values()) if not slot.done]
                if not held:
                    continue
                try:
                    owned = loop.run_until_complete(broker.renew(held))
                except Exception as exc:  # noqa: BLE001 - try again next beat
                    log.error("lease renewal failed: {e}", e=_error_text(exc))
                    continue
                for delivery, mine in zip(held, owned, strict=True):
                    if not mine:
                        log.warning("lease of job {id} was lost; another worker may run it", id=delivery.id)
        finally:
            loop.run_until_complete(broker.close())
            loop.close()
