"""The run state one worker process shares between its seams (pools, execution, settlement, duties, heartbeat).

:class:`WorkerState` holds it; :class:`bananas.worker.runtime.Worker` extends it with the control API. The seams
take the state, never the app.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Protocol

import attrs
from loguru import logger

from bananas.broker import Broker, BrokerCapabilities, Delivery
from bananas.job import Job
from bananas.metrics.stats import JobStats
from bananas.worker.context import WorkerContext, WorkerInfo
from bananas.worker_mode import WorkerPlan

__all__ = ["FETCH_WAIT", "WorkerState", "error_text"]

FETCH_WAIT = 2.0
"""Seconds one blocking fetch waits; also the longest a stop request waits for an idle pool."""


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class LeaseKeeper(Protocol):
    """What the pools ask the heartbeat (:class:`bananas.worker.heartbeat._Heartbeat`)."""

    problem: str | None

    def healthy(self) -> bool: ...


@attrs.define(eq=False)
class _Slot:
    delivery: Delivery
    job: Job | None = None
    thread_id: int | None = None
    done: bool = False
    settling: bool = False  # finished; its ack is queued or in flight (a lost renewal then is no news)
    solo: bool = False  # a job recovered from a dead worker, running alone in this process
    cancelled: bool = False  # the job has a cancel request (the heartbeat saw it; see request_cancel)
    queued: bool = False  # prefetched: leased, waiting in this process for a free slot (see bananas.worker.pools)
    lost: bool = False  # prefetched, and the broker said its lease was lost: never started here
    scope: Any = None  # the JobContext its handler sees (current_job()), once it runs
    stop: Callable[[], Any] | None = None  # stops the running handler (its task's cancel), only while it runs

    def request_cancel(self) -> None:
        """On the worker's loop: mark the job cancelled (``current_job().cancelled``) and stop its handler if it
        runs (:mod:`bananas.worker.execution` turns that into a ``cancelled`` outcome)."""
        self.cancelled = True
        if self.scope is not None:
            self.scope._cancelled = True
        if self.stop is not None:
            self.stop()


class WorkerState:
    """What the seams of one worker process share. Loop-bound parts (events, locks) are made in :meth:`bind`."""

    def __init__(self, context: WorkerContext, plan: WorkerPlan) -> None:
        self.context = context
        self.plan = plan
        self.info = WorkerInfo.of(plan)
        self.id = self.info.process_id
        # kernel records about this process carry its id and mode (the seams log through it)
        self.log = logger.bind(component="worker", log_source="bananas_internal", worker_id=self.id,
                               worker_type=plan.mode)
        self.slots: dict[str, _Slot] = {}
        self.stats = JobStats({p.pool_id: p.concurrency for p in plan.pools})  # counted by settlement and pools
        self.fetch_wait = FETCH_WAIT
        self.prefetch_multiplier = context.prefetch_multiplier  # jobs a pool holds / its slots (worker.pools)
        self.unknown_job_types = context.unknown_job_types  # "wait" or "dead-letter" (bananas.broker_types)
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Broker | None = None
        self._caps = BrokerCapabilities()  # the broker's optional capabilities, resolved once (bananas.broker)
        self._blocked: set[str] = set()  # pools (by pool id) whose loop is inside a (possibly blocking) fetch
        self._started = threading.Event()
        # Crash isolation (see bananas.worker.pools): jobs recovered from a dead worker run one at a time here.
        self._inflight = 0  # job tasks running in this process, all pools
        self._idle: asyncio.Event | None = None  # set while _inflight == 0
        self._solo: asyncio.Lock | None = None  # held by the pool running (or about to run) a job alone
        self._isolating = False  # a suspect was seen: fetch one job at a time, alone, until a clean one comes
        self._heartbeat: LeaseKeeper | None = None
        self._paused = False  # not taking work: leases cannot be renewed (see _Heartbeat.healthy)

    def bind(self) -> None:
        """Make the loop-bound parts on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._solo = asyncio.Lock()

    def running(self) -> int:
        """Jobs started in this process and not yet settled (prefetched ones waiting for a slot excluded)."""
        return sum(1 for slot in self.slots.values() if not slot.queued)

    def _stop_requested(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    async def _sleep(self, seconds: float) -> bool:
        """Sleep ``seconds`` or until a stop request; ``True`` when stopping."""
        assert self._stop is not None
        try:
            await asyncio.wait_for(self._stop.wait(), max(seconds, 0.0))
        except TimeoutError:
            pass
        return self._stop.is_set()

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
