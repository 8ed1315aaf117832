"""One periodic job (:class:`Schedule`): its trigger (``cron=`` or ``every=``), what it enqueues, and its tick times.

Ticks are Unix times. They are the same in every scheduler process (nothing depends on when a process started), so
one tick has one deterministic job id (:meth:`Schedule.job_id`) everywhere:

* ``cron=`` goes through :mod:`croniter` (5 fields, 6 fields with seconds last, ``@hourly``-style aliases) in the
  schedule's IANA ``timezone`` (:mod:`zoneinfo`, default UTC). Daylight saving time: a time that does not exist
  (the skipped spring hour) fires once, at the first instant after the gap (croniter's rule: ``30 2 * * *`` runs at
  03:00 that day); a time that exists twice (the repeated autumn hour) fires once, at its first occurrence (the
  second one is dropped here: croniter would fire both).
* ``every=`` ticks at the multiples of the interval since the Unix epoch (``every="30s"`` at ``:00`` and ``:30`` of
  each minute, ``every="1d"`` at 00:00 UTC), so it needs no time zone.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from bananas.job import Priority
from bananas.units import format_duration, parse_duration

__all__ = ["CATCH_UP", "FIELDS", "MAX_CATCH_UP", "Schedule", "ScheduleError"]

CATCH_UP = ("none", "latest", "all")
"""What to do with ticks missed while no scheduler ran (see docs/PERIODIC.md)."""

MAX_CATCH_UP = 100
"""``catch_up = "all"`` enqueues at most this many missed ticks (the newest ones) after a downtime."""

FIELDS = (
    "name", "cron", "every", "job", "timezone", "payload", "queue", "priority", "max_retries", "timeout", "jitter",
    "catch_up",
)
"""The keys a ``[[periodic]]`` table (or ``app.periodic(...)``) accepts."""

MIN_EVERY = 1.0
"""The shortest ``every=`` interval (and cron's own resolution): one second."""


def _cron(expr: str, start: datetime) -> Any:
    """A croniter iterator (imported on first use: a producer that declares no cron schedule never loads it)."""
    from croniter import croniter

    return croniter(expr, start)


def _valid_cron(expr: str) -> bool:
    from croniter import croniter

    return bool(croniter.is_valid(expr))


class ScheduleError(ValueError):
    """A bad schedule field: ``field`` is the key, the message says what is allowed."""

    def __init__(self, name: str, field: str, value: object, allowed: str) -> None:
        self.name, self.field, self.value, self.allowed = name, field, value, allowed
        super().__init__(f"periodic schedule {name!r}: invalid {field} = {value!r}: {allowed}")


def _zone(name: str, value: object) -> tzinfo:
    if value is None or value == "UTC":
        return UTC
    if not isinstance(value, str) or not value:
        raise ScheduleError(name, "timezone", value, "an IANA time zone name such as Europe/Berlin or UTC")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(name, "timezone", value, "an IANA time zone name such as Europe/Berlin or UTC") from None


def _optional_duration(name: str, field: str, value: object, *, positive: bool = False) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise ScheduleError(name, field, value, str(exc)) from None
    if positive and seconds <= 0:
        raise ScheduleError(name, field, value, "a positive duration")
    return seconds


@attrs.frozen
class Schedule:
    """A validated periodic job. Build it with :meth:`parse` (which names the schedule and field in its errors).

    Attributes:
        name: Unique schedule name (also the default job name).
        job: The job name to enqueue.
        cron: The cron expression, or ``None`` for an ``every=`` schedule.
        every: Seconds between ticks (``None`` for a cron schedule).
        timezone: The IANA zone name of a cron schedule (``"UTC"`` by default).
        payload: Keyword arguments of the job.
        queue: A queue that overrides the router's choice (``None``: the router decides).
        priority: The job's priority (``None``: the handler's or ``normal``).
        max_retries / timeout: Per-schedule job options (``None``: the handler's defaults).
        jitter: Each tick's job waits a random 0..``jitter`` seconds (spreads load on the hour).
        catch_up: ``none``, ``latest`` (default) or ``all``; see docs/PERIODIC.md.
    """

    name: str
    job: str
    cron: str | None = None
    every: float | None = None
    timezone: str = "UTC"
    payload: Mapping[str, Any] = attrs.field(factory=dict)
    queue: str | None = None
    priority: Priority | None = None
    max_retries: int | None = None
    timeout: float | None = None
    jitter: float = 0.0
    catch_up: str = "latest"
    _zone: tzinfo = attrs.field(default=UTC, eq=False, repr=False, alias="zone")

    @classmethod
    def parse(cls, fields: Mapping[str, Any]) -> Schedule:  # noqa: PLR0912 - one check per field, in order
        """Validate one ``[[periodic]]`` table / ``app.periodic`` call; :class:`ScheduleError` names the field."""
        name = fields.get("name")
        if not isinstance(name, str) or not name.strip() or any(c.isspace() for c in name):
            raise ScheduleError(str(name), "name", name, "a non-empty string without spaces")
        unknown = sorted(set(fields) - set(FIELDS))
        if unknown:
            raise ScheduleError(name, unknown[0], fields[unknown[0]], f"unknown field; known: {', '.join(FIELDS)}")
        cron, every = fields.get("cron"), fields.get("every")
        if (cron is None) == (every is None):
            raise ScheduleError(name, "cron", cron, "give exactly one of cron= or every=")
        zone = _zone(name, fields.get("timezone"))
        if cron is not None:
            if not isinstance(cron, str) or not _valid_cron(cron):
                raise ScheduleError(name, "cron", cron, "a cron expression: 5 fields (minute hour day month weekday), "
                                    "6 with seconds last, or an alias such as @hourly")
        elif fields.get("timezone") is not None:
            raise ScheduleError(name, "timezone", fields["timezone"], "only cron schedules have a time zone")
        seconds = _optional_duration(name, "every", every, positive=True)
        if seconds is not None and seconds < MIN_EVERY:
            raise ScheduleError(name, "every", every, "an interval of at least 1s")
        job = fields.get("job", name)
        if not isinstance(job, str) or not job:
            raise ScheduleError(name, "job", job, "a job name (a non-empty string)")
        payload = fields.get("payload") or {}
        if not isinstance(payload, Mapping) or not all(isinstance(k, str) for k in payload):
            raise ScheduleError(name, "payload", payload, "a table of keyword arguments")
        queue = fields.get("queue")
        if queue is not None and (not isinstance(queue, str) or not queue):
            raise ScheduleError(name, "queue", queue, "a queue name")
        try:
            priority = Priority.parse(fields["priority"]) if fields.get("priority") is not None else None
        except ValueError:
            raise ScheduleError(name, "priority", fields["priority"], "high, normal or low") from None
        retries = fields.get("max_retries")
        if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
            raise ScheduleError(name, "max_retries", retries, "a non-negative integer")
        catch_up = fields.get("catch_up", "latest")
        if catch_up not in CATCH_UP:
            raise ScheduleError(name, "catch_up", catch_up, "one of none, latest, all")
        return cls(
            name=name, job=job, cron=cron, every=seconds, timezone=getattr(zone, "key", "UTC"), payload=dict(payload),
            queue=queue, priority=priority, max_retries=retries,
            timeout=_optional_duration(name, "timeout", fields.get("timeout"), positive=True),
            jitter=_optional_duration(name, "jitter", fields.get("jitter")) or 0.0, catch_up=catch_up, zone=zone,
        )

    # -- description -----------------------------------------------------------------------------------------
    @property
    def trigger(self) -> str:
        """The cron expression, or ``every 30s`` (for listings)."""
        if self.cron is not None:
            return self.cron
        assert self.every is not None
        return f"every {format_duration(self.every)}"

    @property
    def spec(self) -> str:
        """What decides the tick times; a change of it restarts the schedule at its next tick (no catch-up)."""
        return f"cron:{self.cron}@{self.timezone}" if self.cron is not None else f"every:{self.every!r}"

    def job_id(self, tick: float) -> str:
        """The deterministic job id of one tick: the same in every scheduler."""
        stamp = f"{tick:.3f}".rstrip("0").rstrip(".")
        return f"periodic-{self.name}-{stamp}"

    # -- tick times ------------------------------------------------------------------------------------------
    def next_after(self, when: float) -> float:
        """The first tick strictly after Unix time ``when``."""
        if self.every is not None:
            return (math.floor(when / self.every) + 1) * self.every
        assert self.cron is not None
        it = _cron(self.cron, datetime.fromtimestamp(when, self._zone))
        while True:
            tick = it.get_next(datetime)
            if not _repeated(tick):
                return float(tick.timestamp())

    def latest_at(self, when: float) -> float | None:
        """The last tick at or before ``when`` (``None`` if the expression never fired before)."""
        if self.every is not None:
            return math.floor(when / self.every) * self.every
        assert self.cron is not None
        # croniter's get_prev is strict: start just after ``when`` so a tick exactly at ``when`` counts.
        it = _cron(self.cron, datetime.fromtimestamp(when + 0.0005, self._zone))
        for _ in range(4):  # at most one repeated occurrence per tick can be skipped
            try:
                tick = it.get_prev(datetime)
            except (ValueError, OverflowError):  # pragma: no cover - nothing before year 1
                return None
            if not _repeated(tick):
                return float(tick.timestamp())
        return None  # pragma: no cover

    def ticks_between(self, start: float, end: float, limit: int) -> tuple[list[float], bool]:
        """Ticks ``t`` with ``start <= t <= end``, oldest first: the newest ``limit`` of them, and whether older
        ones were left out. Counted backwards from ``end``, so a long downtime costs ``limit`` steps at most."""
        out: list[float] = []
        for tick in self._backwards(end):
            if tick < start:
                break
            if len(out) == limit:
                return out[::-1], True
            out.append(tick)
        return out[::-1], False

    def _backwards(self, end: float) -> Iterator[float]:
        """Ticks at or before ``end``, newest first (one croniter walk for a cron schedule)."""
        if self.every is not None:
            tick = math.floor(end / self.every) * self.every
            while True:
                yield tick
                tick -= self.every
        assert self.cron is not None
        it = _cron(self.cron, datetime.fromtimestamp(end + 0.0005, self._zone))
        while True:
            try:
                local = it.get_prev(datetime)
            except (ValueError, OverflowError):  # pragma: no cover - nothing before year 1
                return
            if not _repeated(local):
                yield float(local.timestamp())


def _repeated(local: datetime) -> bool:
    """``local`` is the second occurrence of a wall-clock time that repeats (autumn DST change)."""
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()
