"""Which ticks of a schedule to enqueue now: the pure part of the scheduler (no I/O, the clock is an argument).

The broker keeps one :class:`ScheduleState` per schedule. Each check of the leader asks :func:`decide` with the
stored state and the current time:

* A schedule seen for the first time (or whose cron / interval / time zone changed: its :attr:`Schedule.spec`)
  starts at its next tick; nothing before it is caught up.
* Ticks from the stored ``next_run`` up to now are *due*. A due tick at most ``grace`` seconds old is *on time* and
  always enqueued (a check that came a little late, a leader hand-over). Older ones were *missed* (every scheduler
  was down) and follow ``catch_up``: ``none`` drops them, ``latest`` enqueues the newest due tick (several missed
  runs collapse into one, unless an on-time tick already covers them), ``all`` enqueues each of them, oldest first,
  at most :data:`~bananas.periodic.schedule.MAX_CATCH_UP` (the newest ones).
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from bananas.periodic.schedule import MAX_CATCH_UP, Schedule

__all__ = ["Decision", "ScheduleState", "decide"]


@attrs.frozen
class ScheduleState:
    """What the broker keeps of one schedule (as a JSON string).

    Attributes:
        spec: The schedule's :attr:`Schedule.spec` when this was written.
        next_run: The first tick not handled yet (Unix time).
        last_tick: The last tick enqueued (``None``: none yet).
        last_run: When that tick's job was enqueued (Unix time).
        last_status: ``enqueued``, ``missed N`` (ticks dropped by ``catch_up``), ``failed: …`` or ``new``.
        last_job_id: The id of the last job enqueued.
    """

    spec: str
    next_run: float
    last_tick: float | None = None
    last_run: float | None = None
    last_status: str = "new"
    last_job_id: str | None = None

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes | None) -> ScheduleState | None:
        """The state, or ``None`` for nothing or something unreadable (the schedule then starts afresh)."""
        if not text:
            return None
        try:
            data: dict[str, Any] = json.loads(text)
            return cls(**{f.name: data[f.name] for f in attrs.fields(cls) if f.name in data})
        except (ValueError, TypeError):
            return None


@attrs.frozen
class Decision:
    """The outcome of one check of one schedule.

    Attributes:
        ticks: Ticks to enqueue now, oldest first.
        missed: Due ticks dropped by the ``catch_up`` policy (or beyond ``MAX_CATCH_UP``).
        next_run: The first tick after now: what the state records next.
        fresh: The schedule starts anew (first seen, or its spec changed).
    """

    ticks: tuple[float, ...]
    missed: int
    next_run: float
    fresh: bool = False


def decide(schedule: Schedule, state: ScheduleState | None, now: float, grace: float) -> Decision:
    """The ticks of ``schedule`` to enqueue at ``now`` given its stored ``state`` (see the module docstring)."""
    if state is None or state.spec != schedule.spec:
        return Decision((), 0, schedule.next_after(now), fresh=True)
    if state.next_run > now:  # the common case of each check: nothing due, no cron arithmetic
        return Decision((), 0, state.next_run)
    due, more = schedule.ticks_between(state.next_run, now, MAX_CATCH_UP)
    on_time = tuple(t for t in due if t >= now - grace)
    if schedule.catch_up == "all":
        chosen = tuple(due)
    elif schedule.catch_up == "latest":
        chosen = on_time or tuple(due[-1:])
    else:
        chosen = on_time
    dropped = len(due) - len(chosen) + (1 if more else 0)
    return Decision(chosen, dropped, schedule.next_after(now))
