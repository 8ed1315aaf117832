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
from bananas.broker import Broker, BrokerCapabilities, Delivery
from bananas.errors import BrokerUnavailable, SerializationError
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

SETTLE_GRACE = 3.0
"""Seconds a stopping worker spends on its last acks and releases; a broker that does not answer by then (an
outage) leaves those jobs to their leases, so the stop never waits out the broker's retry loops."""

CONNECT_BACKOFF = (0.5, 10.0)
"""First and longest delay between two attempts to reach the broker at start-up."""

log = logger.bind(component="worker", log_source="bananas_internal")


@attrs.define(eq=False)
class _Slot:
    delivery: Delivery
    job: Job | None = None
    thread_id: int | None = None
    done: bool = False
    settling: bool = False  # finished; its ack is queued or in flight (a lost renewal then is no news)
    solo: bool = False  # a job recovered from a dead worker, running alone in this process


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
        self.broker_wait: float = s["worker.broker_wait"]
        self.backoff = (s["jobs.retry_backoff_base"], s["jobs.retry_backoff_factor"], s["jobs.retry_backoff_max"])
        self.slots: dict[str, _Slot] = {}
        self.processed = 0
        self.failed = 0
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._acks: list[tuple[Delivery, Job, Any, float]] = []
        self._ack_task: asyncio.Task[None] | None = None
        self._caps = BrokerCapabilities()  # the broker's optional capabilities, resolved once (bananas.broker)
        self._combined = False  # the broker has ack_and_fetch: pools take pending acks along with their fetches
        self._blocked: set[str] = set()  # pools whose loop is inside a (possibly blocking) fetch
        self._broker: Broker | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._observers = app.plugins.observers
        self._started = threading.Event()
        self.fetch_wait = FETCH_WAIT
        # Crash isolation (see _screen): jobs recovered from a dead worker run one at a time in this process.
        self._inflight = 0  # job tasks running in this process, all pools
        self._idle: asyncio.Event | None = None  # set while _inflight == 0
        self._solo: asyncio.Lock | None = None  # held by the pool running (or about to run) a job alone
        self._isolating = False  # a suspect was seen: fetch one job at a time, alone, until a clean one comes
        self._heartbeat: _Heartbeat | None = None
        self._paused = False  # not taking work: leases cannot be renewed (see _Heartbeat.healthy)

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
        self._idle = asyncio.Event()
        self._idle.set()
        self._solo = asyncio.Lock()
        if install_signals:
            self._install_signals()
        broker = await self._connect()
        if broker is None:  # asked to stop while waiting for the broker
            log.info("worker {id} stopped before the broker was reachable", id=self.id)
            return
        self._broker = broker
        self._caps = caps = self.app.capabilities(broker)  # resolved once, when the app built the broker
        self._combined = caps.ack_and_fetch is not None
        if caps.maintenance is None:
            log.warning("broker {b} has no 'maintenance' capability (reap, move_due){p}: this worker cannot recover "
                        "jobs of crashed workers (their leases are never reaped) nor move delayed jobs and retries "
                        "to their queues", b=type(broker).__name__,
                        p=f"; partial: missing {', '.join(caps.partial['maintenance'])}"
                        if "maintenance" in caps.partial else "")
        total = sum(pool.concurrency for pool in self.plan.pools)
        self._executor = ThreadPoolExecutor(max_workers=total + 4, thread_name_prefix="bananas-job") if total else None
        self._heartbeat = heartbeat = _Heartbeat(self)
        heartbeat.start()
        await asyncio.to_thread(heartbeat.first_beat.wait, 6.0)  # pools start knowing whether leases can be renewed
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

    async def _connect(self) -> Broker | None:
        """The app's connected broker; waits for it with backoff while it is unreachable (``worker.broker_wait``
        bounds the wait, 0 = no bound, like Celery's broker retry on start-up). ``None`` if asked to stop first."""
        assert self._stop is not None
        started = time.monotonic()
        delay, cap = CONNECT_BACKOFF
        attempt = 0
        while True:
            try:
                broker = await self.app.broker()
            except BrokerUnavailable as exc:
                attempt += 1
                waited = time.monotonic() - started
                if self.broker_wait and waited >= self.broker_wait:
                    log.error("broker still unreachable after {w:.1f}s (worker.broker_wait): {e}", w=waited, e=exc)
                    raise
                pause = min(delay, self.broker_wait - waited) if self.broker_wait else delay
                log.warning("waiting for the broker (attempt {n}, {w:.1f}s so far; next in {d:.1f}s): {e}",
                            n=attempt, w=waited, d=pause, e=exc)
                if await self._sleep(pause):
                    return None
                delay = min(delay * 2, cap)
                continue
            if attempt:
                log.info("broker reachable after {w:.1f}s; starting", w=time.monotonic() - started)
            return broker

    async def _sleep(self, seconds: float) -> bool:
        """Sleep ``seconds`` or until a stop request; ``True`` when stopping."""
        assert self._stop is not None
        try:
            await asyncio.wait_for(self._stop.wait(), max(seconds, 0.0))
        except TimeoutError:
            pass
        return self._stop.is_set()

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
        grace_ends = time.monotonic() + self.shutdown_timeout  # running jobs get SHUTDOWN_TIMEOUT from the stop on
        # Pools return within FETCH_WAIT of the stop, unless a broker call is retrying through an outage: those
        # are cancelled (a take whose reply is lost leaves leases that simply expire).
        _, stuck = await asyncio.wait(tasks, timeout=self.fetch_wait + 1.0)
        for task in stuck:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        running = [t for t in asyncio.all_tasks() if t.get_name().startswith("job-")]
        if running:
            _, pending = await asyncio.wait(running, timeout=max(0.0, grace_ends - time.monotonic()))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for slot in self.slots.values():  # sync handlers past the grace period: stop their threads too
            if not slot.done and slot.thread_id is not None:
                interrupt_thread(slot.thread_id)
        try:
            async with asyncio.timeout(SETTLE_GRACE):
                if self._ack_task is not None and not self._ack_task.done():
                    await asyncio.gather(self._ack_task, return_exceptions=True)  # finished: acked, not released
                await self._flush_acks()
                unfinished = [slot.delivery for slot in self.slots.values() if not slot.done]
                if unfinished:
                    await self._broker.release(unfinished)
                    log.warning("gave {n} unfinished job(s) back to the broker", n=len(unfinished))
        except (TimeoutError, BrokerUnavailable) as exc:
            left = len(self._acks) + sum(1 for slot in self.slots.values() if not slot.done)
            log.error("broker did not answer while stopping ({e}); {n} job(s) left to their leases: they run again "
                      "once the leases expire", e=_error_text(exc) if str(exc) else f"no reply in {SETTLE_GRACE:g}s",
                      n=left)
        self.slots.clear()

    # -- pools ---------------------------------------------------------------------------------------------------
    async def _pool(self, pool: PoolPlan) -> None:
        assert self._broker is not None and self._stop is not None
        broker, stop = self._broker, self._stop
        combined = self._caps.ack_and_fetch
        free = asyncio.Semaphore(pool.concurrency)
        in_use = 0

        def release(_: object) -> None:
            nonlocal in_use
            in_use -= 1
            free.release()

        def start(delivery: Delivery, *, solo: bool = False) -> asyncio.Task[None]:
            nonlocal in_use
            in_use += 1
            self.slots[delivery.id] = slot = _Slot(delivery, solo=solo)
            task = asyncio.create_task(self._process(slot, pool), name=f"job-{delivery.id}")
            self._track(task)
            task.add_done_callback(release)
            return task

        while not stop.is_set():
            await free.acquire()
            free.release()
            if self._paused or (self._heartbeat is not None and not self._heartbeat.healthy()):
                await self._pause_while_unhealthy()
                continue
            if self._isolating or (self._solo is not None and self._solo.locked()):
                await self._isolated_turn(pool, start)
                continue
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
            if deliveries and self._solo is not None and self._solo.locked():
                # another pool runs (or is about to run) a job alone: these may not run beside it
                await broker.release(deliveries)
                continue
            if len(deliveries) == 1 and self._suspect(deliveries[0]) and self._inflight == 0:
                await self._run_alone(deliveries[0], start)  # nothing runs here: no need to give it back
                continue
            if deliveries:
                deliveries = await self._screen(deliveries)
            for delivery in deliveries:
                await free.acquire()
                start(delivery)

    # -- crash isolation ---------------------------------------------------------------------------------------
    # A job that kills its process (os._exit, a segfault, the OOM killer) takes the leases of every job running
    # beside it; the broker charges each a crash when it recovers them, and dead-letters a job as crash_loop after
    # max_crash_deliveries. So that only a real culprit gets there, a job on its last chance (one crash short of
    # the limit: a "suspect") never runs beside another job: it goes back to the head of its queue, this process
    # drains, then fetches one job at a time and runs each suspect alone until a clean job comes. A job can so only
    # be dead-lettered for a crash it had alone. Earlier recoveries run at full concurrency, so an ordinary crash
    # (a deploy's SIGKILL, a lost node) costs no throughput.
    def _suspect(self, delivery: Delivery) -> bool:
        assert self._broker is not None
        return delivery.crashes > 0 and delivery.crashes >= self._broker.options.max_crash_deliveries - 1

    def _track(self, task: asyncio.Task[None]) -> None:
        assert self._idle is not None
        self._inflight += 1
        self._idle.clear()

        def done(_: object) -> None:
            self._inflight -= 1
            if self._inflight == 0 and self._idle is not None:
                self._idle.set()

        task.add_done_callback(done)

    async def _screen(self, deliveries: list[Delivery]) -> list[Delivery]:
        """The deliveries to start now; suspects go back to the broker and switch this process to isolation."""
        assert self._broker is not None
        suspects = [d for d in deliveries if self._suspect(d)]
        if not suspects:
            return deliveries
        try:
            await self._broker.release(suspects)
        except Exception as exc:  # noqa: BLE001 - their leases expire; they come back as suspects again
            log.error("could not give back {n} recovered job(s): {e}", n=len(suspects), e=_error_text(exc))
        if not self._isolating:
            log.info("{n} job(s) recovered from dead workers on their last chance: running them one at a time, "
                     "alone, in this process", n=len(suspects))
        self._isolating = True
        return [d for d in deliveries if not self._suspect(d)]

    async def _isolated_turn(self, pool: PoolPlan, start: Callable[..., asyncio.Task[None]]) -> None:
        """Wait until nothing runs in this process, fetch one job; run a suspect alone to its end."""
        assert self._broker is not None and self._solo is not None and self._idle is not None
        async with self._solo:
            if not await self._until(self._idle) or not self._isolating:
                return
            try:
                got = await self._broker.fetch(pool.queues, 1, self.fetch_wait)
            except Exception as exc:  # noqa: BLE001 - a broker outage must not end the pool
                log.error("fetch from {q} failed: {e}; retrying in 1s", q=list(pool.queues), e=_error_text(exc))
                await self._sleep(1.0)
                return
            if not got:
                self._isolating = False  # nothing waits in this pool's queues (others find their own suspects)
                return
            delivery = got[0]
            if self._stop_requested():
                await self._broker.release(got)
                return
            if not self._suspect(delivery):
                self._isolating = False
                log.info("no more recovered jobs at the head of {q}: back to normal fetching", q=list(pool.queues))
                start(delivery)
                return
            await self._run_alone(delivery, start, locked=True)

    async def _run_alone(
        self, delivery: Delivery, start: Callable[..., asyncio.Task[None]], *, locked: bool = False
    ) -> None:
        """Run a suspect with nothing beside it in this process, to its end (its ack included)."""
        assert self._solo is not None and self._broker is not None
        if not locked:
            async with self._solo:  # free here (the caller checked): taken without yielding to other pools
                return await self._run_alone(delivery, start, locked=True)
        log.info("running recovered job {id} alone: {c} crash(es) so far, one more makes it crash_loop",
                 id=delivery.id, c=delivery.crashes)
        # Awaited with asyncio.wait: cancelling this pool at shutdown does not cancel the job itself.
        await asyncio.wait({start(delivery, solo=True)})

    async def _until(self, event: asyncio.Event) -> bool:
        """Wait for ``event`` or a stop request; ``True`` if the event came first."""
        assert self._stop is not None
        if event.is_set():
            return True
        waiters = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._stop.wait())}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return event.is_set() and not self._stop_requested()

    async def _pause_while_unhealthy(self) -> None:
        """Take no work while this process cannot renew leases: jobs it started would run twice."""
        assert self._heartbeat is not None
        if not self._paused:
            self._paused = True
            log.error("leases cannot be renewed ({r}): taking no new jobs until renewal works again; jobs already "
                      "running may be recovered by other workers", r=self._heartbeat.problem or "unknown")
        while not self._stop_requested() and not self._heartbeat.healthy():
            await self._sleep(0.2)
        if self._paused and self._heartbeat.healthy():
            self._paused = False
            log.info("lease renewal works again: taking jobs")

    async def _maintenance(self) -> None:
        assert self._broker is not None and self._stop is not None
        broker = self._caps.maintenance
        if broker is None:  # no reap/move_due (said at start): nothing to run
            return
        reap_every = self._broker.options.reaper_interval
        tick = min(self.plan.scheduler_interval, reap_every) if self.plan.scheduler else reap_every
        # The first reap runs at start: recovery must not wait for a worker that lives reaper_interval (in a crash
        # loop none might), and a worker starting after a crash recovers the dead one's expired leases at once.
        next_reap = time.monotonic()
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
        try:
            await self._run_job(slot, pool)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - settling failed (broker outage past retry_for): the lease decides
            log.error("job {id}: could not settle it with the broker ({e}); its lease will expire and it runs again",
                      id=slot.delivery.id, e=_error_text(exc))
            slot.done = True
            self.slots.pop(slot.delivery.id, None)

    async def _run_job(self, slot: _Slot, pool: PoolPlan) -> None:
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
            slot.settling = True
            self._acks.append((delivery, job, value, duration))
            if slot.solo:  # a recovered job's ack lands before anything else runs in this process
                await self._flush_acks()
                return
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
    it), with its own broker connection.

    It never dies of a broker error: connecting and renewing are retried every beat. While it cannot renew the
    leases of the jobs this process holds (or cannot reach the broker at all), :meth:`healthy` is false and the
    worker takes no new jobs: a job started then would lose its lease and run twice.
    """

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.lease = worker.app.broker_options.lease
        self.interval = max(self.lease / 3, 0.05)
        self.problem: str | None = "not connected yet"
        self._connected = False
        self._renewed = True  # the last renewal of held leases succeeded (or nothing was held)
        self.first_beat = threading.Event()  # the first connect attempt is over (pools start after it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bananas-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def healthy(self) -> bool:
        """Leases of this process can be renewed: the heartbeat runs, is connected and its last renewal worked."""
        return self._thread.is_alive() and self._connected and self._renewed

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            self._beat_forever(loop)
        except BaseException as exc:  # noqa: BLE001 - say so loudly: without it the worker must not take work
            self.problem = f"heartbeat thread died: {_error_text(exc)}"
            log.opt(exception=exc).critical("lease heartbeat stopped unexpectedly: {e}", e=_error_text(exc))
        finally:
            self.first_beat.set()
            loop.close()

    def _beat_forever(self, loop: asyncio.AbstractEventLoop) -> None:
        broker: Broker | None = None
        # A renewal that takes longer than this is of no use (the lease may be gone): give up, try the next beat.
        bound = max(self.interval, 0.5)
        failing_since: float | None = None
        try:
            wait = 0.0
            while not self._stop.wait(wait):
                wait = self.interval
                try:
                    if broker is None:
                        fresh = self.worker.app.new_broker()
                        try:
                            loop.run_until_complete(asyncio.wait_for(fresh.connect(), max(bound, 5.0)))
                        except BaseException:
                            loop.run_until_complete(fresh.close())
                            raise
                        broker = fresh
                        self._connected = True
                    held = [s.delivery for s in list(self.worker.slots.values()) if not s.done]
                    if not held:
                        self._renewed = True
                        ok = True
                    else:
                        owned = loop.run_until_complete(asyncio.wait_for(broker.renew(held), bound))
                        self._renewed = ok = True
                        self._report_lost(held, owned)
                except Exception as exc:  # noqa: BLE001 - try again next beat
                    ok = False
                    text = _error_text(exc) if str(exc) else f"{type(exc).__name__}: no reply within {bound:g}s"
                    self.problem = text
                    if broker is None:
                        self._connected = False
                    else:
                        self._renewed = False
                    if failing_since is None:
                        failing_since = time.monotonic()
                        log.error("lease renewal failed: {e}; retrying every {i:g}s", e=text, i=self.interval)
                if ok and failing_since is not None:
                    log.info("lease renewal works again after {s:.1f}s", s=time.monotonic() - failing_since)
                    failing_since = None
                    self.problem = None
                elif ok:
                    self.problem = None
                self.first_beat.set()
        finally:
            if broker is not None:
                try:
                    loop.run_until_complete(asyncio.wait_for(broker.close(), 2.0))
                except Exception:  # noqa: BLE001 - closing a dead connection
                    pass

    def _report_lost(self, held: list[Delivery], owned: list[bool]) -> None:
        """Warn about leases the broker says this process lost, except for jobs settled since the snapshot (their
        record is completed, retried or dead, so the renewal found no live lease: no news)."""
        slots = self.worker.slots
        for delivery, mine in zip(held, owned, strict=True):
            if mine:
                continue
            slot = slots.get(delivery.id)
            if slot is None or slot.delivery is not delivery or slot.done or slot.settling:
                continue
            log.warning("lease of job {id} was lost while it runs here; another worker may run it too",
                        id=delivery.id)
