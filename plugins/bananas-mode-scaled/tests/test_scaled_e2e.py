"""scaled end to end on a real redis-server (see :mod:`bananas_redis.e2e`)."""

from __future__ import annotations

import pytest
from bananas_redis.e2e import (
    PRIORITIES,
    check_guide_plan,
    check_unknown_mode,
    once_each,
)


def test_scaled_spreads_each_priority_over_its_own_pools(fleet, producer):
    # Given the plan's scaled variables
    fleet.start(
        "scaled",
        {
            "WORKER_MODE": "scaled",
            "WORKER_HIGH_COUNT": "3",
            "WORKER_HIGH_CONCURRENCY": "10",
            "WORKER_NORMAL_COUNT": "2",
            "WORKER_NORMAL_CONCURRENCY": "10",
            "WORKER_LOW_COUNT": "1",
            "WORKER_LOW_CONCURRENCY": "5",
            "WORKER_SCHEDULED_COUNT": "1",
            "WORKER_SCHEDULED_CONCURRENCY": "5",
        },
    )
    fleet.wait_started("scaled")
    app = producer()

    # When more jobs of each priority arrive than one pool has slots
    specs = [
        {"name": "fetch_data", "payload": {"sleep": 0.3}, "priority": p}
        for p, n in (("high", 30), ("normal", 20), ("low", 10))
        for _ in range(n)
    ]
    jobs = {h.id: h.job.priority.value for h in app.enqueue_many(specs)}
    runs = fleet.wait_ran(set(jobs))

    # Then each job ran once, on a pool of its own priority, and the high and normal jobs used several pools
    by_id = once_each(runs, set(jobs))
    used: dict[str, set[str]] = {p: set() for p in PRIORITIES}
    for job_id, priority in jobs.items():
        used[priority].add(by_id[job_id]["pool"])
    assert used["high"] <= {"high-1", "high-2", "high-3"} and len(used["high"]) >= 2
    assert used["normal"] <= {"normal-1", "normal-2"} and len(used["normal"]) >= 1
    assert used["low"] == {"low-1"}


GUIDE_PLANS = [
    (
        {
            "WORKER_MODE": "scaled",
            "WORKER_HIGH_COUNT": "2",
            "WORKER_HIGH_CONCURRENCY": "10",
            "WORKER_NORMAL_COUNT": "1",
            "WORKER_NORMAL_CONCURRENCY": "10",
            "WORKER_LOW_COUNT": "1",
            "WORKER_LOW_CONCURRENCY": "5",
            "WORKER_SCHEDULED_COUNT": "0",
        },
        True,
        [("high-1", 10, ["high"]), ("high-2", 10, ["high"]), ("normal-1", 10, ["normal"]), ("low-1", 5, ["low"])],
    )
]


@pytest.mark.parametrize(("env", "scheduler", "pools"), GUIDE_PLANS, ids=[e["WORKER_MODE"] for e, _, _ in GUIDE_PLANS])
def test_dry_run_prints_the_plan_of_the_guides_configuration(app_dir, env, scheduler, pools):
    check_guide_plan(app_dir, env, scheduler, pools)


def test_unknown_mode_lists_this_plugins_mode_with_the_built_in_ones(app_dir):
    check_unknown_mode(app_dir, "bananas-mode-scaled", "scaled")
