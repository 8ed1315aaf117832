"""Periodic-job figures (printed, never asserted): the tick calculation per schedule, and one leader check of many
schedules on the memory broker (claim + enqueue + state write per due tick).

    .venv/bin/python benchmarks/bench_periodic.py
"""

from __future__ import annotations

import asyncio
import time
import timeit
import uuid

from loguru import logger

from bananas import Bananas
from bananas.periodic.plan import ScheduleState, decide
from bananas.periodic.schedule import Schedule
from bananas.periodic.ticker import Ticker
from bananas.testing.conformance import FakeClock


def tick_math() -> None:
    now = 1_800_000_000.5
    for fields in ({"every": "30s"}, {"cron": "*/5 * * * *"}, {"cron": "0 9 * * 1", "timezone": "Europe/Berlin"}):
        schedule = Schedule.parse({"name": "s", **fields})
        state = ScheduleState(schedule.spec, schedule.next_after(now - 3600))
        n = 2000
        per = timeit.timeit(lambda s=schedule, st=state: decide(s, st, now, 10.0), number=n) / n
        print(f"decide() after an hour down, {schedule.trigger:<12}: {per * 1e6:8.1f} µs")


async def leader_check(schedules: int = 200) -> None:
    app = Bananas(broker=f"memory://bench-{uuid.uuid4().hex[:6]}", entrypoints=False, env={})
    app.job("beat")(lambda: None)
    for i in range(schedules):
        app.periodic(f"s{i}", every="1m", job="beat")
    clock = FakeClock(now=1_800_000_000.0)
    broker = app.new_broker(clock=clock)
    store = app.capabilities(broker).schedules
    assert store is not None
    token = await store.acquire_leader("bench", 1e9)
    ticker = Ticker(app, list(app.schedules), lambda: token, grace=10.0)
    await ticker.check(broker)  # first sight: states only
    clock.advance(60)
    t0 = time.perf_counter()
    await ticker.check(broker)  # every schedule has one due tick
    due = time.perf_counter() - t0
    t0 = time.perf_counter()
    await ticker.check(broker)  # nothing due
    idle = time.perf_counter() - t0
    print(f"leader check, {schedules} schedules, one due tick each: {due * 1e3:7.2f} ms "
          f"({due / schedules * 1e6:.1f} µs per enqueued tick)")
    print(f"leader check, {schedules} schedules, nothing due      : {idle * 1e3:7.2f} ms")


if __name__ == "__main__":
    logger.remove()
    tick_math()
    asyncio.run(leader_check())
