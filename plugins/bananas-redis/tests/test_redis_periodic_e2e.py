"""Periodic jobs end to end on a real redis-server with real ``bananas worker`` processes: the leader killed with
SIGKILL hands over within its lease, each catch-up policy after a downtime, and a ``thin`` worker that runs its
periodic jobs alone (see :mod:`bananas_redis.e2e_periodic`). Three schedulers at once are tested in the
scheduler-only plugin's tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from bananas_redis.e2e import Fleet, clean_env, e2e_fleet, e2e_producer, e2e_server, wait_until
from bananas_redis.e2e_periodic import cron_worker, enqueued, periodic_env, runs, ticks_of, write_cron_app
from bananas_redis.testing import RedisServer

from bananas.periodic import scheduler_status

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with e2e_server() as server:
        yield server


@pytest.fixture
def fleet(redis_server: RedisServer, tmp_path: Path) -> Iterator[Fleet]:
    with e2e_fleet(redis_server, tmp_path) as made:
        yield made


@pytest.fixture
def producer(fleet: Fleet) -> Iterator:
    with e2e_producer(fleet) as make:
        yield make


def _consecutive(ticks: list[float], step: float = 1.0) -> bool:
    return ticks == [ticks[0] + step * i for i in range(len(ticks))]


def test_a_thin_worker_runs_its_periodic_jobs_with_no_separate_scheduler(fleet):
    # Given one thin worker (its own scheduler) with an every-second schedule, and nothing else
    write_cron_app(fleet.root)
    fleet.start("thin", periodic_env({"name": "beat", "every": "1s"}, WORKER_MODE="thin"), command=cron_worker())
    fleet.wait_started("thin")
    thin_pid = fleet.procs["thin"].pid

    # When it runs for a few seconds, and `bananas periodic list --json` looks meanwhile
    wait_until(lambda: len(runs(fleet)) >= 4, 20, "four periodic runs", fleet.logs)
    listed = subprocess.run(
        [sys.executable, "-m", "bananas.cli", "periodic", "--app", "cronapp", "list", "--json"], cwd=fleet.root,
        env={**clean_env(), "REDIS_URL": fleet.url, **periodic_env({"name": "beat", "every": "1s"})},
        capture_output=True, text=True, timeout=60,
    )
    fleet.stop("thin")

    # Then the listing shows the thin worker leading and the schedule's state
    assert listed.returncode == 0, listed.stderr
    status = json.loads(listed.stdout)
    assert status["leader"]["holder"].rsplit("-", 2)[1] == str(thin_pid)
    (row,) = status["schedules"]
    assert (row["name"], row["trigger"], row["last_status"]) == ("beat", "every 1s", "enqueued")
    assert row["next_run"] > row["last_tick"] and row["last_job_id"] == f"periodic-beat-{int(row['last_tick'])}"

    # And it enqueued each tick once, consecutive seconds, and ran every one of those jobs itself
    rows = enqueued(fleet)
    ticks = ticks_of(rows, "beat")
    assert _consecutive(ticks), ticks
    ran = Counter(run["id"] for run in runs(fleet))
    assert set(ran) <= {row["id"] for row in rows} and set(ran.values()) == {1}
    assert {row["worker"] for row in rows} == {"thin"}


def test_sigkill_of_the_leader_hands_over_within_the_lease_and_no_tick_is_lost_or_doubled(fleet, producer):
    # Given two default workers with the scheduler on (candidates), a 2 s lease and an every-second schedule
    write_cron_app(fleet.root)
    env = periodic_env({"name": "beat", "every": "1s"}, WORKER_MODE="default", WORKER_CONCURRENCY="2",
                       ENABLE_SCHEDULER="true", SCHEDULER_LEASE="2s", SCHEDULER_INTERVAL="200ms")
    fleet.start("w1", env, command=cron_worker())
    fleet.start("w2", env, command=cron_worker())
    fleet.wait_started("w1", "w2")
    app = producer()
    first = wait_until(lambda: scheduler_status(app)["leader"], 15, "a leader", fleet.logs)
    wait_until(lambda: len(enqueued(fleet)) >= 3, 15, "three ticks", fleet.logs)

    # When the leader is killed with SIGKILL
    pids = {name: proc.pid for name, proc in fleet.procs.items()}
    victim = next(name for name, pid in pids.items() if first["holder"].rsplit("-", 2)[1] == str(pid))
    survivor = next(name for name in pids if name != victim)
    os.kill(pids[victim], signal.SIGKILL)
    fleet.procs.pop(victim).wait(10)
    killed_at = time.time()

    def new_leader() -> dict | None:
        lease = scheduler_status(app)["leader"]
        return lease if lease and lease["token"] != first["token"] else None

    second = wait_until(new_leader, 15, "a new leader", fleet.logs)
    took = time.time() - killed_at
    wait_until(lambda: any(r["worker"] == survivor for r in enqueued(fleet)[-2:]), 15, "ticks of the new leader")
    time.sleep(2)
    fleet.stop()

    # Then the survivor leads within the lease plus one renewal, with a greater token, and each tick was enqueued
    # exactly once across the hand-over (the missed seconds were within the grace, so they were caught up)
    assert second["holder"].rsplit("-", 2)[1] == str(pids[survivor])
    assert second["token"] > first["token"]
    assert took < 2.0 + 2.0 / 3 + 1.5, took
    ticks = ticks_of(enqueued(fleet), "beat")
    assert len(ticks) == len(set(ticks)), Counter(ticks).most_common(3)
    assert _consecutive(ticks), ticks


def test_each_catch_up_policy_after_every_scheduler_was_down(fleet):
    # Given a thin worker with three every-5-seconds schedules, one per catch-up policy, and a grace of 0.5 s
    write_cron_app(fleet.root)
    env = periodic_env(
        *({"name": policy, "every": "5s", "catch_up": policy} for policy in ("none", "latest", "all")),
        WORKER_MODE="thin", PERIODIC_GRACE="500ms", SCHEDULER_INTERVAL="200ms",
    )
    fleet.start("a", env, command=cron_worker())
    fleet.wait_started("a")
    policies = ("none", "latest", "all")
    wait_until(lambda: all(ticks_of(enqueued(fleet), p) for p in policies), 20, "a tick of each", fleet.logs)

    # When it stops, two ticks pass with no scheduler, and a new one starts 0.6 s after the second missed tick
    fleet.stop("a")
    last = max(row["tick"] for row in enqueued(fleet))
    missed = (last + 5, last + 10)
    time.sleep(max(0.0, missed[1] + 0.6 - time.time()))
    fleet.start("b", env, command=cron_worker())
    fleet.wait_started("b")

    def caught_up() -> bool:
        return all(any(t > missed[1] for t in ticks_of(enqueued(fleet), p)) for p in policies)

    wait_until(caught_up, 20, "the first tick after the restart", fleet.logs)
    fleet.stop("b")

    # Then none ran neither missed tick, latest ran the newest one only, all ran both; later ticks run for each
    rows = enqueued(fleet)
    after = {p: [t for t in ticks_of(rows, p) if t > last] for p in policies}
    assert after["none"][:1] == [missed[1] + 5], after
    assert after["latest"][:2] == [missed[1], missed[1] + 5], after
    assert after["all"][:3] == [missed[0], missed[1], missed[1] + 5], after
    assert all(len(ticks_of(rows, p)) == len(set(ticks_of(rows, p))) for p in policies)
