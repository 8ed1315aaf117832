"""specialized end to end on a real redis-server (see :mod:`bananas_redis.e2e`)."""

from __future__ import annotations

import pytest
from bananas_redis.e2e import (
    TYPES,
    check_guide_plan,
    check_unknown_mode,
    depths,
    once_each,
    wait_until,
)


@pytest.mark.slow
def test_specialized_high_worker_is_not_delayed_by_a_busy_low_worker(fleet, producer):
    # Given the guide's three specialized workers
    for priority, concurrency in (("high", "50"), ("normal", "30"), ("low", "10")):
        env = {"WORKER_MODE": "specialized", "WORKER_PRIORITIES": priority, "WORKER_CONCURRENCY": concurrency}
        fleet.start(f"worker-{priority}", env)
    fleet.wait_started("worker-high", "worker-normal", "worker-low")
    app = producer()

    # And a low worker kept busy by 1,000 queued low jobs
    low = {
        h.id
        for h in app.enqueue_many(
            [{"name": "fetch_data", "payload": {"sleep": 0.2}, "priority": "low"} for _ in range(1000)]
        )
    }
    wait_until(lambda: len(fleet.runs()) >= 20, 15, "the low worker to get busy", fleet.logs)

    # When high and normal jobs arrive
    high = {
        h.id
        for h in app.enqueue_many(
            [{"name": name, "payload": {}, "priority": "high"} for name in TYPES for _ in range(4)]
        )
    }
    normal = {h.id for h in app.enqueue_many([{"name": "send_email", "payload": {}, "priority": "normal"}] * 10)}
    runs = fleet.wait_ran(high | normal, timeout=15)

    # Then each ran on its own priority's worker, at once, while the low backlog is still there
    by_id = {run["id"]: run for run in runs}
    assert {by_id[job_id]["worker"] for job_id in high} == {"worker-high"}
    assert {by_id[job_id]["worker"] for job_id in normal} == {"worker-normal"}
    assert {run["worker"] for run in runs if run["id"] in low} == {"worker-low"}
    latency = max(by_id[job_id]["at"] - by_id[job_id]["enqueued_at"] for job_id in high)
    assert latency < 2.0, f"a high job waited {latency:.2f}s"
    assert depths(app)["low"].ready > 500
    once_each(runs, high | normal)


GUIDE_PLANS = [
    (
        {"WORKER_MODE": "specialized", "WORKER_PRIORITIES": "high", "WORKER_CONCURRENCY": "50"},
        True,
        [("high-1", 50, ["high"])],
    ),
    (
        {"WORKER_MODE": "specialized", "WORKER_PRIORITIES": "low", "WORKER_CONCURRENCY": "10"},
        True,
        [("low-1", 10, ["low"])],
    ),
]


@pytest.mark.parametrize(("env", "scheduler", "pools"), GUIDE_PLANS, ids=[e["WORKER_MODE"] for e, _, _ in GUIDE_PLANS])
def test_dry_run_prints_the_plan_of_the_guides_configuration(app_dir, env, scheduler, pools):
    check_guide_plan(app_dir, env, scheduler, pools)


def test_unknown_mode_lists_this_plugins_mode_with_the_built_in_ones(app_dir):
    check_unknown_mode(app_dir, "bananas-mode-specialized", "specialized")
