"""The scheduler's state as plain data: who leads, and each periodic job's trigger, next run, last run and last
status. ``bananas periodic list`` prints it; ``bananas status`` can show :func:`scheduler_status` as it is."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bananas.periodic.plan import ScheduleState

if TYPE_CHECKING:
    from bananas.app import Bananas

__all__ = ["schedule_rows", "scheduler_status", "scheduler_status_async"]


async def schedule_rows(app: Bananas) -> tuple[list[dict[str, Any]], dict[str, Any] | None, bool]:
    """``(rows, leader, capability)``: one row per schedule of ``app`` (stored state where the broker has it, else
    the next tick computed from now), the live leader lease (``None``: nobody leads), and whether the broker has the
    ``schedules`` capability at all."""
    broker = await app.broker()
    store = app.capabilities(broker).schedules
    now = broker.options.clock()
    schedules = list(app.schedules)
    raw = await store.schedule_states([s.name for s in schedules]) if store is not None else {}
    lease = await store.current_leader() if store is not None else None
    rows = []
    for schedule in schedules:
        state = ScheduleState.from_json(raw.get(schedule.name))
        if state is not None and state.spec != schedule.spec:  # changed: starts afresh at its next tick
            state = None
        rows.append({
            "name": schedule.name,
            "job": schedule.job,
            "cron": schedule.cron,
            "every": schedule.every,
            "trigger": schedule.trigger,
            "timezone": schedule.timezone if schedule.cron is not None else None,
            "catch_up": schedule.catch_up,
            "next_run": state.next_run if state is not None else schedule.next_after(now),
            "last_run": state.last_run if state is not None else None,
            "last_tick": state.last_tick if state is not None else None,
            "last_status": state.last_status if state is not None else "never ran",
            "last_job_id": state.last_job_id if state is not None else None,
            "source": app.schedules.source(schedule.name),
        })
    leader = None if lease is None else {"holder": lease.holder, "token": lease.token, "expires_at": lease.expires_at}
    return rows, leader, store is not None


async def scheduler_status_async(app: Bananas) -> dict[str, Any]:
    """The scheduler's leadership and schedules as a JSON-compatible dict::

        {"capability": True,            # the broker has the 'schedules' capability (leader election, tick guard)
         "leader": {"holder": "host-pid-abc123", "token": 7, "expires_at": 1764000000.0} or None,
         "schedules": [{"name", "job", "cron", "every", "trigger", "timezone", "catch_up", "next_run", "last_run",
                        "last_tick", "last_status", "last_job_id", "source"}, ...]}
    """
    rows, leader, capability = await schedule_rows(app)
    return {"capability": capability, "leader": leader, "schedules": rows}


def scheduler_status(app: Bananas) -> dict[str, Any]:
    """Blocking :func:`scheduler_status_async` (on the app's private loop of this thread)."""
    result: dict[str, Any] = app.run_sync(lambda: scheduler_status_async(app))
    return result
