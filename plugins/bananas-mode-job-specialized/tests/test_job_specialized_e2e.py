"""job-specialized end to end on a real redis-server, in the guide's mixed deployment with the job-type router, a
specialized high worker and the default catch-all (see :mod:`bananas_redis.e2e`)."""

from __future__ import annotations

import time

import pytest
from bananas_redis.e2e import (
    CPU,
    IO,
    PRIORITIES,
    ROUTED_TOML,
    check_unknown_mode,
    deliveries,
    depths,
    dry_run,
    enqueue_mix,
    no_dead_letters,
    once_each,
    plan_pools,
)


# -- job-specialized + catch-all (+ specialized high): the guide's mixed deployment -------------------------------
@pytest.mark.slow
def test_job_specialized_and_catch_all_workers_run_each_job_once_on_an_allowed_worker(fleet, producer):
    # Given the job-type router with [routes] for the CPU and I/O types, and only the job-type workers running
    (fleet.root / "bananas.toml").write_text(ROUTED_TOML)
    fleet.start(
        "cpu",
        {
            "WORKER_MODE": "job-specialized",
            "WORKER_JOB_TYPES": "generate_report,process_analytics",
            "WORKER_CONCURRENCY": "10",
        },
    )
    fleet.start(
        "io",
        {"WORKER_MODE": "job-specialized", "WORKER_JOB_TYPES": "fetch_data,upload_files", "WORKER_CONCURRENCY": "50"},
    )
    fleet.start("io-queues", {"WORKER_MODE": "default", "WORKER_CONCURRENCY": "5", "WORKER_QUEUES": "io"})
    fleet.wait_started("cpu", "io", "io-queues")
    app = producer()

    # When every type is enqueued at every priority
    jobs = enqueue_mix(app, per=3)
    routed = {job_id for job_id, job in jobs.items() if job["name"] in CPU + IO}
    unrouted = set(jobs) - routed
    runs = fleet.wait_ran(routed)
    time.sleep(0.5)

    # Then the routed jobs ran, in their <queue>.<priority> queue, and nobody touched the others: they are still
    # ready in the default queues and were never fetched (no pop-and-requeue)
    for job_id in routed:
        job = jobs[job_id]
        assert job["queue"] == f"{'cpu' if job['name'] in CPU else 'io'}.{job['priority']}"
    assert not unrouted & {run["id"] for run in fleet.runs()}
    assert {queue: depths(app)[queue].ready for queue in PRIORITIES} == {queue: 6 for queue in PRIORITIES}
    assert {deliveries(app, job_id) for job_id in unrouted} == {0}

    # When a specialized high worker and the default catch-all worker join
    fleet.start("high", {"WORKER_MODE": "specialized", "WORKER_PRIORITIES": "high", "WORKER_CONCURRENCY": "50"})
    fleet.start("general", {"WORKER_MODE": "default", "WORKER_CONCURRENCY": "20"})
    fleet.wait_started("high", "general")
    more = enqueue_mix(app, per=2)
    jobs.update(more)
    runs = fleet.wait_ran(set(jobs))

    # Then every job ran exactly once, each on a worker allowed to take it
    allowed = {
        "cpu": lambda job: job["name"] in CPU,
        "io": lambda job: job["name"] in IO,
        "io-queues": lambda job: job["queue"].startswith("io."),
        "high": lambda job: job["priority"] == "high",
        "general": lambda job: True,
    }
    by_id = once_each(runs, set(jobs))
    wrong = [(by_id[i]["worker"], job) for i, job in jobs.items() if not allowed[by_id[i]["worker"]](job)]
    assert wrong == []
    assert {run["pool"] for run in by_id.values() if run["worker"] in ("cpu", "io")} == {"job-types-1"}
    assert {by_id[i]["worker"] for i in unrouted} <= {"high", "general"}
    no_dead_letters(app)


ROUTED_PLANS = [
    (
        {
            "WORKER_MODE": "job-specialized",
            "WORKER_JOB_TYPES": "generate_report,process_analytics",
            "WORKER_CONCURRENCY": "10",
        },
        [],
        [("job-types-1", 10, ["cpu.high", "cpu.normal", "cpu.low"])],
    ),
    (
        {"WORKER_MODE": "default", "WORKER_CONCURRENCY": "20"},
        [],
        [
            (
                "default-1",
                20,
                [
                    "high",
                    "cpu.high",
                    "io.high",
                    "scheduled.high",
                    "normal",
                    "cpu.normal",
                    "io.normal",
                    "scheduled.normal",
                    "low",
                    "cpu.low",
                    "io.low",
                    "scheduled.low",
                ],
            )
        ],
    ),
    ({"WORKER_MODE": "default"}, ["--queues", "cpu"], [("default-1", 10, ["cpu.high", "cpu.normal", "cpu.low"])]),
]


@pytest.mark.parametrize(("env", "args", "pools"), ROUTED_PLANS, ids=["job-specialized", "catch-all", "queues-cpu"])
def test_dry_run_with_the_job_type_router(app_dir, env, args, pools):
    (app_dir / "bananas.toml").write_text(ROUTED_TOML)
    result = dry_run(app_dir, env, *args)
    assert result.returncode == 0, result.stderr
    assert plan_pools(result.stdout) == pools


def test_job_specialized_without_routes_reads_the_priority_queues_by_type(app_dir):
    result = dry_run(app_dir, {"WORKER_MODE": "job-specialized", "WORKER_JOB_TYPES": "generate_report"})
    assert result.returncode == 0, result.stderr
    assert plan_pools(result.stdout) == [("job-types-1", 10, ["high", "normal", "low"])]


def test_a_job_type_without_a_handler_is_a_one_line_error(app_dir):
    env = {"WORKER_MODE": "job-specialized", "WORKER_JOB_TYPES": "generate_report,render_video"}
    result = dry_run(app_dir, env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(
        "Error: invalid worker.job_types = 'generate_report,render_video' (from env WORKER_JOB_TYPES): "
        "no handler for render_video in this app"
    )
    assert len(result.stderr.strip().splitlines()) == 1


# -- the guide as written: environment variables only, no [routes] (issue 15) -------------------------------------
@pytest.mark.slow
def test_the_guides_mixed_deployment_from_environment_variables_alone_runs_each_job_once(fleet, producer):
    # Given the guide's job-specialized CPU and I/O workers, configured by environment variables alone (no
    # bananas.toml, the default router), and no catch-all yet
    fleet.start("cpu", {"WORKER_MODE": "job-specialized", "WORKER_JOB_TYPES": "generate_report,process_analytics",
                        "WORKER_CONCURRENCY": "10"})
    fleet.start("io", {"WORKER_MODE": "job-specialized", "WORKER_JOB_TYPES": "fetch_data,upload_files",
                       "WORKER_CONCURRENCY": "50"})
    fleet.wait_started("cpu", "io")
    app = producer()

    # When every type is enqueued at every priority
    jobs = enqueue_mix(app, per=3)
    theirs = {job_id for job_id, job in jobs.items() if job["name"] in CPU + IO}
    others = set(jobs) - theirs
    fleet.wait_ran(theirs)
    time.sleep(0.5)

    # Then their types ran, from the shared priority queues, and the other types were never fetched: still ready,
    # in order, zero deliveries (no pop-and-skip)
    assert all(jobs[job_id]["queue"] == jobs[job_id]["priority"] for job_id in jobs)
    assert not others & {run["id"] for run in fleet.runs()}
    assert {queue: depths(app)[queue].ready for queue in PRIORITIES} == {queue: 6 for queue in PRIORITIES}
    assert {deliveries(app, job_id) for job_id in others} == {0}

    # When the FAQ's specialized high worker and the default catch-all join
    fleet.start("high", {"WORKER_MODE": "specialized", "WORKER_PRIORITIES": "high"})
    fleet.start("general", {"WORKER_MODE": "default"})
    fleet.wait_started("high", "general")
    jobs.update(enqueue_mix(app, per=2))
    runs = fleet.wait_ran(set(jobs))

    # Then every job ran exactly once, on its first delivery, each on a worker allowed to take it
    allowed = {
        "cpu": lambda job: job["name"] in CPU,
        "io": lambda job: job["name"] in IO,
        "high": lambda job: job["priority"] == "high",
        "general": lambda job: True,
    }
    by_id = once_each(runs, set(jobs))
    assert [(by_id[i]["worker"], job) for i, job in jobs.items() if not allowed[by_id[i]["worker"]](job)] == []
    assert {by_id[i]["worker"] for i in others} <= {"high", "general"}
    assert {by_id[i]["attempt"] for i in jobs} == {1}
    assert {deliveries(app, job_id) for job_id in jobs} == {1}
    no_dead_letters(app)


def test_unknown_mode_lists_this_plugins_mode_with_the_built_in_ones(app_dir):
    check_unknown_mode(app_dir, "bananas-mode-job-specialized", "job-specialized")
