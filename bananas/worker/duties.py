"""Duties: named periodic tasks of a worker process, each in its own task.

The kernel's own duties need the broker's ``maintenance`` capability:

- **reap** (every worker, every ``reaper_interval`` and once at start): recovers jobs whose lease expired. The
  reap at start matters: recovery must not wait for a worker that lives ``reaper_interval`` (in a crash loop none
  might), and a worker starting after a crash recovers the dead one's expired leases at once.
- **move-due** (``needs_leader``, every ``scheduler_interval``): moves due delayed jobs and retries to their
  queues, in batches of 1000, repeating while full batches come back. Each tick is logged (component
  ``scheduler``): INFO when jobs moved, DEBUG when none did.
- **queue-depths** (``needs_leader``, every 10 s): logs the depth of every known queue
  (:mod:`bananas.worker.depth_log`).

Plugins add duties with the ``bananas_worker_duties`` hook (:class:`~bananas.worker.context.Duty` specs); the app
adds its periodic jobs' ticker (``WorkerContext.periodic``). A duty that ``needs_leader`` runs only where the plan
runs the scheduler (``WorkerPlan.scheduler``), and there only while this process is the elected leader
(:mod:`bananas.worker.leader`, with the broker's ``schedules`` capability; without it every such process runs it).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Sequence
from typing import Any

from loguru import logger

from bananas.broker import Broker, SupportsMaintenance
from bananas.log_context import levels
from bananas.worker.context import Duty
from bananas.worker.depth_log import depth_duty
from bananas.worker.leader import Leadership
from bananas.worker.state import WorkerState, error_text

__all__ = ["Duty", "kernel_duties", "move_due_duty", "reap_duty", "start_duties"]

MOVE_DUE_BATCH = 1000

log = logger.bind(component="worker", log_source="bananas_internal")
scheduler_log = logger.bind(component="scheduler", log_source="bananas_internal")


def move_due_duty(maintenance: SupportsMaintenance, interval: float, tick_log: Any = None) -> Duty:
    """The move-due duty: due delayed jobs and retries go to their queues. Ticks are logged through ``tick_log``
    (a loguru logger; the worker's, with ``component=scheduler``, by default one without worker fields)."""
    ticks = scheduler_log if tick_log is None else tick_log

    async def move_due(_: Broker) -> None:
        started = time.perf_counter()
        moved = batches = 0
        while True:
            batch = await maintenance.move_due(MOVE_DUE_BATCH)
            moved, batches = moved + batch, batches + 1
            if batch < MOVE_DUE_BATCH:
                break
        if moved or levels.debug:  # a tick that moved nothing is DEBUG: one a second per scheduler otherwise
            ms = round((time.perf_counter() - started) * 1000, 3)
            ticks.bind(event="move_due", moved=moved, batches=batches, batch_size=MOVE_DUE_BATCH,
                       duration_ms=ms).log("INFO" if moved else "DEBUG",
                                           "scheduler moved {} due job(s) to their queues in {} ms", moved, ms)

    return Duty("move-due", interval, move_due, needs_leader=True)


def reap_duty(maintenance: SupportsMaintenance, interval: float, logs: Any = None) -> Duty:
    """The reap duty: jobs whose worker stopped renewing its lease are recovered (``logs``: the worker's logger)."""
    reaps = logs if logs is not None else log

    async def reap(_: Broker) -> None:
        recovered = await maintenance.reap()
        if recovered:
            reaps.bind(event="reaped").warning("recovered {recovered} job(s) whose worker stopped renewing its lease",
                                             recovered=recovered)

    return Duty("reap", interval, reap)


def kernel_duties(state: WorkerState) -> list[Duty]:
    """The kernel's duties for this worker's broker (none without its ``maintenance`` capability)."""
    maintenance = state._caps.maintenance
    assert state._broker is not None
    if maintenance is None:  # no reap/move_due (said at start): only the depths, which every broker reports
        return [depth_duty(state)]
    return [
        move_due_duty(maintenance, state.plan.scheduler_interval, state.log.bind(component="scheduler")),
        reap_duty(maintenance, state._broker.options.reaper_interval, state.log),
        depth_duty(state),
    ]


def start_duties(state: WorkerState, extra: Sequence[Duty] = ()) -> list[asyncio.Task[None]]:
    """One task per duty this process runs (the kernel's, the app's periodic ticker, then ``extra``); they end when
    the worker stops. A scheduler process with the broker's ``schedules`` capability also runs the election."""
    schedules = state._caps.schedules
    leader = None
    if state.plan.scheduler and schedules is not None:
        leader = Leadership(schedules, f"{state.id}-{secrets.token_hex(3)}", state.context.scheduler_lease, state.id)
    duties = [*kernel_duties(state), *state.context.periodic(leader.fence if leader else _no_fence), *extra]
    chosen = [duty for duty in duties if state.plan.scheduler or not duty.needs_leader]
    # The election's task first: its first round starts before the leader duties' first (at start) runs.
    tasks = [asyncio.create_task(_elect(state, leader), name="duty-leader-election")] if leader is not None else []
    tasks += [asyncio.create_task(_run(state, duty, leader), name=f"duty-{duty.name}") for duty in chosen]
    return tasks


def _no_fence() -> int | None:
    return None


async def _elect(state: WorkerState, leader: Leadership) -> None:
    """The election duty; a stopping worker gives the lease up at once."""
    try:
        await _run(state, leader.duty(), None)
    finally:
        await leader.resign()


async def _run(state: WorkerState, duty: Duty, leader: Leadership | None) -> None:
    assert state._broker is not None and state._stop is not None
    broker, stop = state._broker, state._stop
    if not duty.at_start and await state._sleep(duty.interval):
        return
    while not stop.is_set():
        try:
            if leader is None or not duty.needs_leader or leader.holds():
                await duty.run(broker)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - keep the duty alive through broker outages
            state.log.error("duty {duty} failed: {error}", duty=duty.name, error=error_text(exc))
        if await state._sleep(duty.interval):
            return
