"""The ticker: the leader's duty that enqueues the due ticks of every periodic job, exactly once each.

Each check (every ``worker.scheduler_interval``, at most every second) reads the stored states, asks
:func:`~bananas.periodic.plan.decide` which ticks are due, and for each tick: claims it in the broker
(``claim_tick``, fenced by the leader lease's token; only one claim per tick ever succeeds), enqueues the job with
the tick's deterministic id, and records the schedule's new state (``save_schedule_state``, fenced too). A failed
enqueue gives the claim back, so the tick is tried again at the next check.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs
from loguru import logger

from bananas.broker import Broker, Envelope
from bananas.broker_schedules import SupportsSchedules
from bananas.job import Job
from bananas.periodic.plan import ScheduleState, decide
from bananas.periodic.schedule import Schedule
from bananas.worker.context import Duty

if TYPE_CHECKING:
    from bananas.app import Bananas

__all__ = ["PERIODIC_HEADER", "Ticker", "build_tick", "periodic_duties"]

PERIODIC_HEADER = "periodic"
"""Header naming the schedule that enqueued a job (``periodic-tick`` holds the tick's Unix time)."""

log = logger.bind(component="scheduler", log_source="bananas_internal")


def build_tick(app: Bananas, schedule: Schedule, tick: float | None) -> tuple[Job, Envelope]:
    """The job of one tick (``tick=None``: a manual run, with a fresh id), with the schedule's options."""
    job, env = app.build(
        schedule.job, schedule.payload, priority=schedule.priority, max_retries=schedule.max_retries,
        timeout=schedule.timeout, job_id=schedule.job_id(tick) if tick is not None else None,
        at=tick + random.uniform(0, schedule.jitter) if schedule.jitter and tick is not None else None,
        headers={PERIODIC_HEADER: schedule.name, **({"periodic-tick": repr(tick)} if tick is not None else {})},
    )
    if schedule.queue is not None and schedule.queue != job.queue:
        job = attrs.evolve(job, queue=schedule.queue)
        env = Envelope(job.id, schedule.queue, app.codec.encode(job), env.eta, job.name)
    return job, env


class Ticker:
    """Enqueues the due ticks of ``schedules`` while ``fence()`` gives a token (this process leads)."""

    def __init__(
        self,
        app: Bananas,
        schedules: Sequence[Schedule],
        fence: Callable[[], int | None],
        grace: float,
    ) -> None:
        self.app = app
        self.schedules = list(schedules)
        self.fence = fence
        self.grace = grace
        self._warned = False

    async def check(self, broker: Broker) -> None:
        """One check of every schedule (the duty's body)."""
        store = self.app.capabilities(broker).schedules
        if store is None:
            if not self._warned:
                self._warned = True
                log.error("broker {broker} has no 'schedules' capability: periodic jobs do not run "
                          "(see docs/PERIODIC.md)", broker=type(broker).__name__)
            return
        token = self.fence()
        if token is None:
            return
        raw = await store.schedule_states([s.name for s in self.schedules])
        for schedule in self.schedules:
            if self.fence() != token:  # lost the lease during this check: the next leader carries on
                return
            await self._one(broker, store, schedule, ScheduleState.from_json(raw.get(schedule.name)), token)

    async def _one(
        self, broker: Broker, store: SupportsSchedules, schedule: Schedule, state: ScheduleState | None, token: int
    ) -> None:
        now = broker.options.clock()
        decision = decide(schedule, state, now, self.grace)
        new = state if state is not None and not decision.fresh else ScheduleState(schedule.spec, decision.next_run)
        enqueued = 0
        for tick in decision.ticks:
            if not await store.claim_tick(schedule.name, tick, token):
                continue  # claimed before (a leader that died before writing the state) or the lease is gone
            job, env = build_tick(self.app, schedule, tick)
            try:
                await broker.enqueue([env])
            except Exception as exc:  # noqa: BLE001 - give the tick back; retried at the next check
                await store.unclaim_tick(schedule.name, tick, new.last_tick, token)
                log.bind(event="periodic_enqueue_failed", schedule=schedule.name, tick=tick, error=str(exc)).error(
                    "periodic {}: enqueue of tick {} failed: {}", schedule.name, tick, exc)
                new = attrs.evolve(new, next_run=tick, last_status=f"failed: {type(exc).__name__}: {exc}")
                await store.save_schedule_state(schedule.name, new.to_json(), token)
                return
            self.app._enqueued([job])
            enqueued += 1
            new = attrs.evolve(new, last_tick=tick, last_run=now, last_job_id=job.id, last_status="enqueued")
        if decision.missed:
            log.bind(event="periodic_ticks_dropped", schedule=schedule.name, missed=decision.missed,
                     catch_up=schedule.catch_up).warning("periodic {}: {} missed tick(s) dropped (catch_up = {})",
                                                         schedule.name, decision.missed, schedule.catch_up)
            status = f"missed {decision.missed}"
            new = attrs.evolve(new, last_status=f"enqueued; {status}" if enqueued else status)
        new = attrs.evolve(new, next_run=decision.next_run)
        if new != state:
            await store.save_schedule_state(schedule.name, new.to_json(), token)


def periodic_duties(app: Bananas, fence: Callable[[], int | None]) -> list[Duty]:
    """The app's ticker duty (none without schedules), for ``WorkerContext.periodic``."""
    schedules = list(app.schedules)
    if not schedules:
        return []
    s = app.settings
    ticker = Ticker(app, schedules, fence, s["worker.periodic_grace"])
    return [Duty("periodic", min(s["worker.scheduler_interval"], 1.0), ticker.check, needs_leader=True)]
