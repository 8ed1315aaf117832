"""scheduler-only end to end on a real redis-server, next to the kernel's default workers (see
:mod:`bananas_redis.e2e`)."""

from __future__ import annotations

import time

import pytest
from bananas_redis.e2e import (
    check_guide_plan,
    check_unknown_mode,
    enqueue_mix,
    no_dead_letters,
    once_each,
)


# -- default + scheduler-only -------------------------------------------------------------------------------------
def test_default_workers_scale_out_and_a_dedicated_scheduler_moves_due_jobs(fleet, producer):
    # Given two default workers as in the guide (scheduler off) and no scheduler yet
    worker_env = {"WORKER_MODE": "default", "WORKER_CONCURRENCY": "20", "ENABLE_SCHEDULER": "false"}
    fleet.start("worker-1", worker_env)
    fleet.start("worker-2", worker_env)
    fleet.wait_started("worker-1", "worker-2")
    app = producer()

    # When ready and delayed jobs are enqueued
    jobs = enqueue_mix(app, per=3)
    delayed = {h.id for h in app.enqueue_many([{"name": "cleanup", "payload": {}, "delay": 0.3}] * 3)}
    runs = fleet.wait_ran(set(jobs))

    # Then the ready jobs ran once each on a default pool, and the delayed ones wait: no process moves them
    assert {run["pool"] for run in runs} == {"default-1"}
    assert {run["worker"] for run in runs} <= {"worker-1", "worker-2"}
    once_each(runs, set(jobs))
    time.sleep(1.5)
    assert not delayed & {run["id"] for run in fleet.runs()}

    # When the dedicated scheduler starts (the guide's scheduler-only service)
    fleet.start("scheduler", {"WORKER_MODE": "scheduler-only", "SCHEDULER_INTERVAL": "1s"})
    runs = fleet.wait_ran(delayed, timeout=15)

    # Then the delayed jobs reach their queue and the default workers run them; the scheduler runs no job
    assert {run["worker"] for run in runs if run["id"] in delayed} <= {"worker-1", "worker-2"}
    assert "scheduler" not in {run["worker"] for run in runs}
    once_each(runs, set(jobs) | delayed)
    no_dead_letters(app)


GUIDE_PLANS = [({"WORKER_MODE": "scheduler-only", "SCHEDULER_INTERVAL": "1s"}, True, [])]


@pytest.mark.parametrize(("env", "scheduler", "pools"), GUIDE_PLANS, ids=[e["WORKER_MODE"] for e, _, _ in GUIDE_PLANS])
def test_dry_run_prints_the_plan_of_the_guides_configuration(app_dir, env, scheduler, pools):
    check_guide_plan(app_dir, env, scheduler, pools)


def test_unknown_mode_lists_this_plugins_mode_with_the_built_in_ones(app_dir):
    check_unknown_mode(app_dir, "bananas-mode-scheduler-only", "scheduler-only")
