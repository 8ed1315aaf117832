"""thin_plus end to end on a real redis-server, with the job-type router (see :mod:`bananas_redis.e2e`)."""

from __future__ import annotations

import pytest
from bananas_redis.e2e import (
    ROUTED_TOML,
    check_guide_plan,
    check_unknown_mode,
    enqueue_mix,
    once_each,
)


def test_thin_plus_runs_routed_scheduled_work_in_its_own_pool(fleet, producer):
    # Given the plan's thin_plus variables, and nightly_report routed to the scheduled pool's queue
    (fleet.root / "bananas.toml").write_text(ROUTED_TOML)
    fleet.start(
        "thin-plus",
        {
            "WORKER_MODE": "thin_plus",
            "WORKER_PRIORITY_CONCURRENCY": "10",
            "WORKER_PRIORITY_QUEUES": "high,normal,low",
            "WORKER_SCHEDULED_CONCURRENCY": "5",
            "WORKER_SCHEDULED_QUEUES": "scheduled",
        },
    )
    fleet.wait_started("thin-plus")
    app = producer()

    # When priority work, nightly reports (some delayed) and a delayed priority job are enqueued
    jobs = enqueue_mix(app, types=("send_email", "cleanup"))
    nightly = enqueue_mix(app, types=("nightly_report",))
    later = {
        h.id
        for h in app.enqueue_many(
            [
                {"name": "nightly_report", "payload": {}, "delay": 0.5},
                {"name": "send_email", "payload": {}, "delay": 0.5},
            ]
        )
    }
    runs = fleet.wait_ran(set(jobs) | set(nightly) | later)

    # Then the scheduled pool ran exactly the nightly reports, the priority pool the rest, and the built-in
    # scheduler released the delayed ones
    by_id = once_each(runs, set(jobs) | set(nightly) | later)
    pools = {run["name"]: set() for run in by_id.values()}
    for run in by_id.values():
        pools[run["name"]].add(run["pool"])
    assert pools == {"nightly_report": {"scheduled-1"}, "send_email": {"priority-1"}, "cleanup": {"priority-1"}}
    assert {job["queue"] for job in nightly.values()} == {"scheduled.high", "scheduled.normal", "scheduled.low"}


GUIDE_PLANS = [
    (
        {
            "WORKER_MODE": "thin_plus",
            "WORKER_PRIORITY_CONCURRENCY": "10",
            "WORKER_PRIORITY_QUEUES": "high,normal,low",
            "WORKER_SCHEDULED_CONCURRENCY": "5",
            "WORKER_SCHEDULED_QUEUES": "scheduled",
        },
        True,
        [("priority-1", 10, ["high", "normal", "low"]), ("scheduled-1", 5, ["scheduled"])],
    )
]


@pytest.mark.parametrize(("env", "scheduler", "pools"), GUIDE_PLANS, ids=[e["WORKER_MODE"] for e, _, _ in GUIDE_PLANS])
def test_dry_run_prints_the_plan_of_the_guides_configuration(app_dir, env, scheduler, pools):
    check_guide_plan(app_dir, env, scheduler, pools)


def test_unknown_mode_lists_this_plugins_mode_with_the_built_in_ones(app_dir):
    check_unknown_mode(app_dir, "bananas-mode-thin-plus", "thin_plus")
