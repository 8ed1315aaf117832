"""Periodic schedules as pure logic: validation (one line naming schedule and field), cron and ``every=`` tick times,
DST in Europe/Berlin with a fixed clock, and the catch-up decision (``bananas.periodic``)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bananas import Bananas
from bananas.errors import ConfigError, UsageError
from bananas.periodic.plan import ScheduleState, decide
from bananas.periodic.schedule import MAX_CATCH_UP, Schedule

BERLIN = ZoneInfo("Europe/Berlin")


def berlin(*parts: int, fold: int = 0) -> float:
    return datetime(*parts, tzinfo=BERLIN, fold=fold).timestamp()


def local(ts: float) -> str:
    return datetime.fromtimestamp(ts, BERLIN).isoformat()


def ticks(schedule: Schedule, start: float, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = schedule.next_after(start)
        out.append(start)
    return out


def cron(expr: str, tz: str | None = "Europe/Berlin", **extra: object) -> Schedule:
    return Schedule.parse({"name": "s", "cron": expr, "timezone": tz, **extra})


# -- validation ------------------------------------------------------------------------------------------------------
BAD = [
    ({"cron": "61 * * * *"}, "cron", "a cron expression"),
    ({"cron": "every day"}, "cron", "a cron expression"),
    ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone", "an IANA time zone"),
    ({"cron": "* * * * *", "every": "1s"}, "cron", "exactly one of cron= or every="),
    ({}, "cron", "exactly one of cron= or every="),
    ({"every": "500ms"}, "every", "at least 1s"),
    ({"every": "soon"}, "every", "a duration"),
    ({"every": "1m", "timezone": "Europe/Berlin"}, "timezone", "only cron schedules"),
    ({"every": "1m", "catch_up": "some"}, "catch_up", "none, latest, all"),
    ({"every": "1m", "priority": "urgent"}, "priority", "high, normal or low"),
    ({"every": "1m", "max_retries": -1}, "max_retries", "non-negative"),
    ({"every": "1m", "timeout": "0s"}, "timeout", "positive"),
    ({"every": "1m", "jitter": "x"}, "jitter", "a duration"),
    ({"every": "1m", "payload": [1]}, "payload", "a table"),
    ({"every": "1m", "cronn": "x"}, "cronn", "unknown field"),
]


@pytest.mark.parametrize(("fields", "field", "why"), BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_a_bad_field_in_code_is_one_line_naming_schedule_and_field(fields, field, why):
    # Given an app
    app = Bananas(broker="memory://", env={}, entrypoints=False)

    # When a schedule with one bad field is declared
    with pytest.raises(ConfigError) as caught:
        app.periodic("nightly", **fields)

    # Then the error is one line naming the schedule, the field and what is allowed
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(f"invalid periodic 'nightly' {field} = ")
    assert why in text and "(from app.periodic)" in text


def test_a_bad_config_table_fails_when_the_app_is_built_naming_its_source(tmp_path, monkeypatch):
    # Given a [[periodic]] table with a bad time zone in bananas.toml
    (tmp_path / "bananas.toml").write_text('[[periodic]]\nname = "report"\ncron = "0 9 * * 1"\ntimezone = "Berlin"\n')

    # When the app is built in that directory
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        Bananas(broker="memory://", env={}, entrypoints=False)

    # Then the error names schedule, field, value and file
    assert str(caught.value) == (
        "invalid periodic 'report' timezone = 'Berlin' (from file bananas.toml): an IANA time zone name such as "
        "Europe/Berlin or UTC"
    )


def test_an_unknown_job_is_a_config_error_when_a_scheduler_starts(make_app):
    # Given a schedule whose job has no handler
    app = make_app(overrides={"periodic": [{"name": "report", "cron": "0 9 * * 1", "job": "generate_report"}]})

    @app.job()
    def cleanup() -> None: ...

    # When a worker that runs the scheduler is made, or one that does not
    with pytest.raises(ConfigError) as caught:
        app.worker()
    no_scheduler = app.worker(app.plan().__class__(mode="thin", pools=(), scheduler=False))

    # Then only the scheduler refuses, naming schedule, field and the registered jobs
    assert str(caught.value).startswith("invalid periodic 'report' job = 'generate_report' (from argument): ")
    assert "registered: cleanup" in str(caught.value)
    assert no_scheduler is not None


def test_a_config_table_wins_over_the_same_name_in_code_and_code_names_are_unique(make_app):
    # Given a configured schedule
    app = make_app(overrides={"periodic": [{"name": "cleanup", "cron": "0 3 * * *"}]})

    # When code declares the same name, and another name twice
    kept = app.periodic("cleanup", every="1m")
    app.periodic("beat", every="30s")
    with pytest.raises(UsageError, match="already declared"):
        app.periodic("beat", every="1m")

    # Then the configured one stays, and job defaults to the schedule name
    assert kept.cron == "0 3 * * *" and app.schedules.get("cleanup") == kept
    assert app.schedules.get("beat").job == "beat"
    assert app.schedules.names() == ["cleanup", "beat"]


# -- tick times --------------------------------------------------------------------------------------------------------
def test_five_six_field_and_alias_forms():
    # Given a fixed clock: Monday 2026-01-05 10:17:30 UTC
    start = datetime(2026, 1, 5, 10, 17, 30, tzinfo=ZoneInfo("UTC")).timestamp()

    # When / Then each form gives its next tick
    utc = ZoneInfo("UTC")
    assert datetime.fromtimestamp(cron("0 * * * *", None).next_after(start), utc).strftime("%H:%M:%S") == "11:00:00"
    assert datetime.fromtimestamp(cron("@hourly", None).next_after(start), utc).strftime("%H:%M:%S") == "11:00:00"
    assert datetime.fromtimestamp(cron("@daily", None).next_after(start), utc).strftime("%d %H:%M") == "06 00:00"
    six = cron("17 10 * * * 45", None)  # seconds last: 10:17:45
    assert datetime.fromtimestamp(six.next_after(start), utc).strftime("%H:%M:%S") == "10:17:45"
    assert datetime.fromtimestamp(cron("0 9 * * 1", None).next_after(start), utc).strftime("%d") == "12"


def test_every_ticks_at_multiples_of_the_interval_since_the_epoch():
    # Given every 30s and every 7m
    half = Schedule.parse({"name": "s", "every": "30s"})
    seven = Schedule.parse({"name": "s", "every": "7m"})

    # When / Then ticks are the multiples (the same in every process, whenever it started)
    assert half.next_after(1000.0) == 1020.0 and half.next_after(1020.0) == 1050.0
    assert half.latest_at(1049.9) == 1020.0 and half.latest_at(1050.0) == 1050.0
    assert seven.next_after(0.5) == 420.0
    assert half.job_id(1020.0) == "periodic-s-1020"


def test_berlin_spring_forward_a_skipped_time_fires_once_after_the_gap():
    # Given the night of 2026-03-29 in Berlin: 02:00 CET jumps to 03:00 CEST
    daily = cron("30 2 * * *")
    hourly = cron("0 * * * *")

    # When the ticks around the gap are computed with a fixed clock
    daily_ticks = [local(t) for t in ticks(daily, berlin(2026, 3, 28, 12), 3)]
    hourly_ticks = [local(t) for t in ticks(hourly, berlin(2026, 3, 29, 0, 30), 3)]

    # Then 02:30 (which does not exist) runs once, at 03:00 CEST; the hourly job has no 02:00 that night
    assert daily_ticks == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]
    assert hourly_ticks == ["2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"]


def test_berlin_fall_back_a_repeated_time_runs_once():
    # Given the night of 2026-10-25 in Berlin: 03:00 CEST goes back to 02:00 CET (02:00-03:00 happens twice)
    daily = cron("30 2 * * *")
    half_hourly = cron("*/30 * * * *")

    # When the ticks around the change are computed, forwards and backwards
    daily_ticks = [local(t) for t in ticks(daily, berlin(2026, 10, 24, 12), 3)]
    forward = ticks(half_hourly, berlin(2026, 10, 25, 1, 50), 4)
    backward = [half_hourly.latest_at(berlin(2026, 10, 25, 3, 10))]
    while len(backward) < 4:
        backward.append(half_hourly.latest_at(backward[-1] - 1))

    # Then 02:30 runs once (its first occurrence, CEST), and the repeated half hours are not run again
    assert daily_ticks == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00", "2026-10-27T02:30:00+01:00"]
    assert [local(t) for t in forward] == [
        "2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-25T03:00:00+01:00",
        "2026-10-25T03:30:00+01:00",
    ]
    assert [local(t) for t in backward] == [
        "2026-10-25T03:00:00+01:00", "2026-10-25T02:30:00+02:00", "2026-10-25T02:00:00+02:00",
        "2026-10-25T01:30:00+02:00",
    ]
    assert half_hourly.next_after(berlin(2026, 10, 25, 2, 10, fold=1)) == berlin(2026, 10, 25, 3, 0)


EXPRESSIONS = ["*/30 * * * *", "0 * * * *", "30 2 * * *", "15 1-3 * * *", "@hourly", "0 0 * * 0", "*/20 2 * * * 30"]


@settings(max_examples=150, deadline=None)
@given(
    expr=st.sampled_from(EXPRESSIONS),
    tz=st.sampled_from(["Europe/Berlin", "America/New_York", "UTC", "Australia/Lord_Howe"]),
    start=st.floats(min_value=1.7e9, max_value=1.9e9),
)
def test_cron_ticks_increase_never_repeat_a_wall_time_and_walk_back_the_same_way(expr, tz, start):
    # Given any expression, zone and fixed start time
    schedule = cron(expr, tz)
    zone = ZoneInfo(tz)

    # When 6 ticks are computed forwards
    forward = ticks(schedule, start, 6)

    # Then they strictly increase, no wall-clock time fires twice, and each is its own latest tick
    assert forward == sorted(set(forward)) and forward[0] > start
    walls = [datetime.fromtimestamp(t, zone).replace(tzinfo=None) for t in forward]
    assert len(set(walls)) == len(walls)
    assert all(schedule.latest_at(t) == t for t in forward)
    assert all(schedule.latest_at(b - 0.5) == a for a, b in zip(forward, forward[1:], strict=False))


# -- the catch-up decision -----------------------------------------------------------------------------------------
def every(seconds: str = "1m", catch_up: str = "latest") -> Schedule:
    return Schedule.parse({"name": "s", "every": seconds, "catch_up": catch_up})


def test_a_new_schedule_starts_at_its_next_tick():
    # Given a schedule never seen before, at 12:00:30 (every minute)
    decision = decide(every(), None, 43230.0, grace=10.0)

    # Then nothing runs now and the next run is 12:01:00
    assert (decision.ticks, decision.next_run, decision.fresh) == ((), 43260.0, True)


def test_a_due_tick_runs_once_and_a_changed_schedule_restarts():
    # Given a state waiting for 43260
    state = ScheduleState(every().spec, 43260.0)

    # When the clock passes it a little, and when the interval changed meanwhile
    on_time = decide(every(), state, 43261.0, grace=10.0)
    changed = decide(every("2m"), state, 43261.0, grace=10.0)

    # Then the tick runs; a changed schedule runs nothing old and waits for its own next tick
    assert (on_time.ticks, on_time.missed, on_time.next_run) == ((43260.0,), 0, 43320.0)
    assert (changed.ticks, changed.fresh, changed.next_run) == ((), True, 43320.0)


@pytest.mark.parametrize(
    ("policy", "expected", "missed"),
    [("none", (), 60), ("latest", (46800.0,), 59), ("all", tuple(43260.0 + 60 * i for i in range(60)), 0)],
)
def test_each_catch_up_policy_after_an_hour_of_downtime(policy, expected, missed):
    # Given every scheduler down from 12:00:30 to 13:00:30 (60 ticks missed, the last 30 s ago)
    state = ScheduleState(every(catch_up=policy).spec, 43260.0)

    # When the first scheduler back checks with a grace of 10 s
    decision = decide(every(catch_up=policy), state, 46830.0, grace=10.0)

    # Then none runs nothing, latest the newest tick, all every one of them, oldest first
    assert decision.ticks == expected
    assert decision.missed == missed
    assert decision.next_run == 46860.0


def test_all_is_bounded_and_on_time_ticks_run_whatever_the_policy():
    # Given a day of downtime for an every-minute schedule, and a check 5 s after a tick
    day = decide(every(catch_up="all"), ScheduleState(every(catch_up="all").spec, 60.0), 86400.0 + 5, grace=10.0)
    late = decide(every(catch_up="none"), ScheduleState(every(catch_up="none").spec, 86400.0), 86405.0, grace=10.0)

    # Then all enqueues only the newest MAX_CATCH_UP ticks, and none still runs a tick that is only 5 s late
    assert len(day.ticks) == MAX_CATCH_UP and day.ticks[-1] == 86400.0 and day.missed > 0
    assert late.ticks == (86400.0,)


@settings(max_examples=200, deadline=None)
@given(
    policy=st.sampled_from(["none", "latest", "all"]),
    interval=st.integers(min_value=1, max_value=3600),
    waited=st.integers(min_value=0, max_value=10**6),
    grace=st.floats(min_value=0, max_value=120),
)
def test_the_decision_keeps_its_promises(policy, interval, waited, grace):
    # Given a state that waits for tick 10**9 (a multiple of every interval) and a check ``waited`` s later
    schedule = every(f"{interval}s", policy)
    first = (10**9 // interval) * interval
    now = first + waited
    decision = decide(schedule, ScheduleState(schedule.spec, float(first)), float(now), grace)

    # Then the ticks are due ticks, ascending, within the bound; every on-time tick runs; the next run is ahead
    due = [float(t) for t in range(first, now + 1, interval)]
    assert list(decision.ticks) == sorted(decision.ticks) and set(decision.ticks) <= set(due)
    assert len(decision.ticks) <= MAX_CATCH_UP
    assert {t for t in due if t >= now - grace} <= set(decision.ticks) or len(due) > MAX_CATCH_UP
    assert decision.next_run > now
    if policy == "latest" and due:
        assert decision.ticks[-1] == due[-1]
    if policy == "all" and len(due) <= MAX_CATCH_UP:
        assert list(decision.ticks) == due
