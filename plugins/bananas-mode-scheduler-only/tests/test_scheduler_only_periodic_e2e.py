"""Several schedulers at once on a real redis-server: two scheduler-only processes and a default worker with
``ENABLE_SCHEDULER=true`` run the same every-second schedule; each tick is enqueued exactly once (see
:mod:`bananas_redis.e2e_periodic`)."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from bananas_redis.e2e import wait_until
from bananas_redis.e2e_periodic import cron_worker, enqueued, periodic_env, runs, ticks_of, write_cron_app

pytestmark = pytest.mark.slow


def test_three_schedulers_enqueue_each_tick_exactly_once(fleet):
    # Given two scheduler-only processes and a default worker with its scheduler on, all with every="1s"
    write_cron_app(fleet.root)
    schedule = {"name": "heartbeat", "every": "1s"}
    common = {"SCHEDULER_LEASE": "2s", "SCHEDULER_INTERVAL": "200ms"}
    fleet.start("s1", periodic_env(schedule, WORKER_MODE="scheduler-only", **common), command=cron_worker())
    fleet.start("s2", periodic_env(schedule, WORKER_MODE="scheduler-only", **common), command=cron_worker())
    worker_env = periodic_env(schedule, WORKER_MODE="default", WORKER_CONCURRENCY="4", ENABLE_SCHEDULER="true",
                              **common)
    fleet.start("w", worker_env, command=cron_worker())
    fleet.wait_started("s1", "s2", "w")

    # When they run together for 10 s
    time.sleep(10)
    fleet.stop()

    # Then every tick was enqueued once (none twice), with no gap after the first, and ran once on the worker
    rows = enqueued(fleet)
    ticks = ticks_of(rows, "heartbeat")
    assert len(ticks) >= 8, ticks
    assert Counter(ticks).most_common(1)[0][1] == 1, Counter(ticks).most_common(3)
    assert ticks == [ticks[0] + i for i in range(len(ticks))], ticks
    assert {row["id"] for row in rows} == {f"periodic-heartbeat-{int(t)}" for t in ticks}
    ran = Counter(run["id"] for run in runs(fleet))
    assert set(ran.values()) <= {1}
    assert len(ran) >= len(ticks) - 2, (len(ran), len(ticks))  # the last ones may still be queued at the stop
    assert {run["worker"] for run in runs(fleet)} == {"w"}


def test_all_schedulers_racing_on_one_tick_enqueue_it_once(fleet):
    # Given three scheduler processes started at the same instant (they race for the first lease)
    write_cron_app(fleet.root)
    env = periodic_env({"name": "beat", "every": "1s"}, WORKER_MODE="scheduler-only", SCHEDULER_LEASE="1s",
                       SCHEDULER_INTERVAL="100ms")
    for name in ("a", "b", "c"):
        fleet.start(name, env, command=cron_worker())
    fleet.wait_started("a", "b", "c")

    # When they run for 4 s
    wait_until(lambda: len(enqueued(fleet)) >= 3, 15, "three ticks", fleet.logs)
    time.sleep(1)
    fleet.stop()

    # Then no tick was enqueued twice
    ticks = ticks_of(enqueued(fleet), "beat")
    assert len(ticks) == len(set(ticks)) and ticks == [ticks[0] + i for i in range(len(ticks))], ticks
