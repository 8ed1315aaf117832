"""One worker process: runs a plan's pools, its duties and the lease heartbeat; waits for the broker at start-up
and stops within bounds.

The seams, each its own module: :mod:`~bananas.worker.execution` (decode, bind, call with a time limit → an
outcome), :mod:`~bananas.worker.settlement` (acks, retries, dead letters, results, counters, observers),
:mod:`~bananas.worker.pools` (fetch loops, crash isolation), :mod:`~bananas.worker.duties` (reap, move-due and the
plugins' periodic tasks), :mod:`~bananas.worker.heartbeat` (lease renewal) and :mod:`~bananas.worker.metrics` (the
metrics duties, the worker registry, the health endpoint). The worker gets a
:class:`~bananas.worker.context.WorkerContext` from the app, never the app itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

from loguru import logger

from bananas.broker import Broker
from bananas.errors import BrokerMisconfigured, BrokerUnavailable, UsageError
from bananas.log_context import flush_logs
from bananas.worker.context import WorkerContext
from bananas.worker.duties import start_duties
from bananas.worker.execution import Execution
from bananas.worker.heartbeat import _Heartbeat
from bananas.worker.interrupt import interrupt_thread
from bananas.worker.loop import run as run_loop
from bananas.worker.metrics import WorkerMetrics
from bananas.worker.pools import Pools
from bananas.worker.settlement import Settlement
from bananas.worker.state import FETCH_WAIT, WorkerState, _Slot, error_text
from bananas.worker_mode import WorkerPlan

__all__ = ["FETCH_WAIT", "Worker", "_Heartbeat", "_Slot"]

SETTLE_GRACE = 3.0
"""Seconds a stopping worker spends on its last acks and releases; a broker that does not answer by then (an
outage) leaves those jobs to their leases, so the stop never waits out the broker's retry loops."""

CONNECT_BACKOFF = (0.5, 10.0)
"""First and longest delay between two attempts to reach the broker at start-up."""



class Worker(WorkerState):
    """Runs the pools of a plan against the context's broker until asked to stop.

    Use :meth:`run` inside an event loop, :meth:`run_forever` from a CLI (installs signal handlers), or
    :meth:`start_in_thread` for tests and the demo. ``Bananas.worker(plan)`` builds one with the app's
    :class:`~bananas.worker.context.WorkerContext`.
    """

    def __init__(self, context: WorkerContext, plan: WorkerPlan) -> None:
        super().__init__(context, plan)
        self.shutdown_timeout: float = context.shutdown_timeout
        self.broker_wait: float = context.broker_wait
        self._observers = context.observers
        self.settlement = Settlement(self)
        self.execution = Execution(context.codec, context.handlers, context.default_timeout, self.settlement.started,
                                   self)
        self.pools = Pools(self, self.execution, self.settlement)
        self.metrics = WorkerMetrics(self, context.metrics)

    @property
    def processed(self) -> int:
        """Jobs settled as done or failed (malformed bodies and jobs without a handler here are not counted)."""
        return self.settlement.processed

    @property
    def failed(self) -> int:
        """Handler runs that failed (each retry counts)."""
        return self.settlement.failed

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
        run_loop(self.run(install_signals=True), self.context.event_loop)
        deadline = time.monotonic() + 2.0
        stuck = [t for t in threading.enumerate() if t.name.startswith("bananas-job") and t.is_alive()]
        for thread in stuck:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in stuck):
            self.log.warning("handler threads still running after shutdown; exiting without waiting for them")
            logger.complete()
            flush_logs()
            os._exit(0)

    def start_in_thread(self) -> threading.Thread:
        """Run in a daemon thread; returns once the pools have started."""
        thread = threading.Thread(target=lambda: asyncio.run(self.run()), name=f"bananas-{self.plan.mode}", daemon=True)
        thread.start()
        self._started.wait(10)
        return thread

    # -- main ----------------------------------------------------------------------------------------------------
    async def run(self, *, install_signals: bool = False) -> None:
        self.bind()
        assert self._stop is not None
        if install_signals:
            self._install_signals()
        broker = await self._connect()
        if broker is None:  # asked to stop while waiting for the broker
            self.log.info("worker {} stopped before the broker was reachable", self.id)
            return
        self._broker = broker
        self._caps = caps = self.context.capabilities(broker)  # resolved once, when the app built the broker
        self.settlement.combined = caps.ack_and_fetch is not None
        typed = [p.pool_id for p in self.plan.pools if p.job_types is not None]
        if typed and not caps.typed_fetch:  # it would take (and dead-letter) the other types' jobs of its queues
            raise UsageError(f"pools {', '.join(typed)} run only some job types, but broker {type(broker).__name__} "
                             "cannot fetch by job type (see bananas.broker_types)")
        if caps.maintenance is None:
            self.log.warning("broker {broker} has no 'maintenance' capability (reap, move_due){partial}: this worker "
                             "cannot recover jobs of crashed workers (their leases are never reaped) nor move delayed "
                             "jobs and retries to their queues", broker=type(broker).__name__,
                             partial=f"; partial: missing {', '.join(caps.partial['maintenance'])}"
                             if "maintenance" in caps.partial else "")
        self.execution.open(self.info.concurrency)
        self._heartbeat = heartbeat = _Heartbeat(self)
        heartbeat.start()
        await asyncio.to_thread(heartbeat.first_beat.wait, 6.0)  # pools start knowing whether leases can be renewed
        tasks = [asyncio.create_task(self.pools.run(pool), name=f"pool-{pool.pool_id}") for pool in self.plan.pools]
        tasks += start_duties(self, [*self.context.duties(self.info), *self.metrics.duties()])
        pools = ", ".join(f"{p.pool_id}×{p.concurrency} {list(p.queues)}" for p in self.plan.pools) or "none"
        self.log.bind(event="worker_started", pools=pools, concurrency=self.info.concurrency,
                      scheduler=self.plan.scheduler).info(
            "worker {} started: mode {}, pools {}, scheduler {}", self.id, self.plan.mode, pools,
            "on" if self.plan.scheduler else "off")
        self._observers.notify("bananas_worker_started", worker=self.info)
        self._started.set()
        self.metrics.start()
        try:
            await self._stop.wait()
        finally:
            self.log.bind(event="worker_stopping", running=self.running()).info(
                "worker {} stopping; {} job(s) running", self.id, self.running())
            await self._shutdown(tasks)
            await self.metrics.stop()
            heartbeat.stop()
            self.execution.close()
            await self.context.close()
            self._observers.notify("bananas_worker_stopped", worker=self.info)
            self.log.bind(event="worker_stopped", processed=self.processed, failed=self.failed).info(
                "worker {} stopped after {} job(s)", self.id, self.processed)

    async def _connect(self) -> Broker | None:
        """The app's connected broker (and result backend, if one is configured); waits for them with backoff while
        they are unreachable (``worker.broker_wait`` bounds the wait, 0 = no bound, like Celery's broker retry on
        start-up). ``None`` if asked to stop first. A broker that answered but cannot be used as configured
        (:class:`~bananas.errors.BrokerMisconfigured`: wrong password, not a Redis server, TLS mismatch) fails at
        once: waiting cannot help."""
        assert self._stop is not None
        started = time.monotonic()
        delay, cap = CONNECT_BACKOFF
        attempt = 0
        while True:
            try:
                broker = await self.context.broker()
                if self.context.has_results:
                    await self.context.results()
            except BrokerMisconfigured as exc:
                self.log.bind(component="queue", event="broker_misconfigured", error=str(exc)).error(
                    "not waiting: retrying cannot help: {}", exc)
                raise
            except BrokerUnavailable as exc:
                attempt += 1
                waited = time.monotonic() - started
                if self.broker_wait and waited >= self.broker_wait:
                    self.log.bind(component="queue", error=str(exc)).error(
                        "broker still unreachable after {:.1f}s (worker.broker_wait): {}", waited, exc)
                    raise
                pause = min(delay, self.broker_wait - waited) if self.broker_wait else delay
                self.log.bind(component="queue", event="broker_unreachable", error=str(exc)).warning(
                    "waiting for the broker (attempt {}, {:.1f}s so far; next in {:.1f}s): {}", attempt, waited, pause,
                    exc)
                if await self._sleep(pause):
                    return None
                delay = min(delay * 2, cap)
                continue
            if attempt:
                self.log.bind(component="queue", event="broker_reachable").info(
                    "broker reachable after {:.1f}s; starting", time.monotonic() - started)
            return broker

    def _install_signals(self) -> None:
        assert self._loop is not None and self._stop is not None
        stop = self._stop

        def on_signal(signum: int) -> None:
            if stop.is_set():
                self.log.warning("second signal {}: exiting now; the broker's lease recovers running jobs", signum)
                logger.complete()
                flush_logs()
                os._exit(1)
            self.log.info("signal {}: finishing running jobs (up to {}s), taking no new ones", signum,
                          self.shutdown_timeout)
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
                await self.settlement.drain()  # finished jobs: acked, not released
                unfinished = [slot.delivery for slot in self.slots.values() if not slot.done]
                if unfinished:
                    await self._broker.release(unfinished)
                    self.log.warning("gave {} unfinished job(s) back to the broker", len(unfinished))
        except (TimeoutError, BrokerUnavailable) as exc:
            left = self.settlement.pending + sum(1 for slot in self.slots.values() if not slot.done)
            self.log.error("broker did not answer while stopping ({}); {} job(s) left to their leases: they run "
                           "again once the leases expire",
                           error_text(exc) if str(exc) else f"no reply in {SETTLE_GRACE:g}s", left)
        self.slots.clear()
