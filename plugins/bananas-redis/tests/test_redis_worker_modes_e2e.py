"""The kernel's worker modes (thin, default) end to end on a real redis-server: real ``bananas worker`` processes
started with the environment variables of docs/WORKER_MODES.md, ``--processes 2`` under the supervisor, and a
third-party mode package (see :mod:`bananas_redis.e2e`). Each packaged mode's e2e test lives in its plugin's tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from bananas_redis.e2e import (
    Fleet,
    dry_run,
    e2e_fleet,
    e2e_producer,
    e2e_server,
    enqueue_mix,
    no_dead_letters,
    once_each,
    wait_until,
    write_app,
)
from bananas_redis.testing import RedisServer

from bananas import Bananas


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


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    write_app(tmp_path)
    return tmp_path


# -- thin ---------------------------------------------------------------------------------------------------------
def test_thin_runs_every_priority_and_type_in_one_pool_with_its_own_scheduler(fleet, producer):
    # Given the guide's thin worker
    fleet.start("thin", {"WORKER_MODE": "thin", "WORKER_CONCURRENCY": "5"})
    fleet.wait_started("thin")
    app = producer()

    # When a mix of priorities and job types, a delayed job and a job that fails once are enqueued
    jobs = enqueue_mix(app)
    delayed = app.enqueue("cleanup", {"tag": "delayed"}, delay="1s")
    flaky = app.enqueue("send_email", {"tag": "flaky", "fail_first": True}, priority="high")
    fleet.wait_ran({*jobs, delayed.id, flaky.id})
    wait_until(lambda: any(r["id"] == flaky.id and r["attempt"] == 2 for r in fleet.runs()), 15,
               "the retry of the flaky job", fleet.logs)
    runs = fleet.runs()

    # Then one pool ran everything, the scheduler moved the delayed job and the retry, nothing died
    assert {(run["worker"], run["pool"]) for run in runs} == {("thin", "thin-1")}
    once_each(runs, set(jobs))
    (late,) = [run for run in runs if run["id"] == delayed.id]
    assert late["at"] >= late["enqueued_at"] + 1.0
    assert sorted(run["attempt"] for run in runs if run["id"] == flaky.id) == [1, 2]
    no_dead_letters(app)


# -- --processes N: the supervisor --------------------------------------------------------------------------------
def _supervised(processes: int) -> tuple[list[str], dict[str, str]]:
    """``WORKER_PROCESSES=N bananas worker`` once the CLI runs the supervisor; until then the module directly."""
    help_text = subprocess.run([sys.executable, "-m", "bananas.cli", "worker", "--help"], capture_output=True,
                               text=True, timeout=60).stdout
    worker = [sys.executable, "-m", "bananas.cli", "worker", "--app", "e2eapp"]
    if "--processes" in help_text:
        return worker, {"WORKER_PROCESSES": str(processes)}
    script = (
        "import sys; from bananas.worker.supervisor import Supervisor; "
        f"sys.exit(Supervisor({worker!r}, {processes}).run())"
    )
    return [sys.executable, "-c", script], {}


@pytest.mark.slow
def test_processes_2_survives_a_killed_child_and_the_supervisor_restarts_it(fleet, producer):
    # Given a supervisor with two default worker processes
    command, env = _supervised(2)
    fleet.start("sup", {"WORKER_MODE": "default", "WORKER_CONCURRENCY": "5", **env}, command=command)
    fleet.wait_started("sup", count=2)
    first, second = (row["pid"] for row in fleet.started())
    assert {row["child"] for row in fleet.started()} == {"1", "2"}
    app = producer()

    # When one child is killed outright
    os.kill(first, signal.SIGKILL)
    jobs = enqueue_mix(app, per=2)
    runs = fleet.wait_ran(set(jobs))

    # Then the other child kept working
    assert second in {run["pid"] for run in runs}
    once_each(runs, set(jobs))

    # And the supervisor started a replacement, which works too
    fleet.wait_started("sup", count=3, timeout=20)
    replacement = fleet.started()[-1]["pid"]
    assert replacement not in (first, second)
    more = {h.id for h in app.enqueue_many([{"name": "fetch_data", "payload": {"sleep": 0.2}}] * 30)}
    runs = fleet.wait_ran(more)
    assert replacement in {run["pid"] for run in runs if run["id"] in more}  # 5 slots each: both get work

    # When the supervisor gets SIGTERM, it forwards it and both children stop gracefully
    supervisor = fleet.procs["sup"].pid
    assert fleet.stop("sup") == {"sup": 0}
    for pid in (second, replacement, supervisor):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


SPLIT_MODE = '''
"""WORKER_MODE=split: docs/PLUGINS.md's example mode, packaged by a third party."""
import bananas
from bananas.worker_mode import PoolPlan, WorkerModeSpec, WorkerPlan

HIGH, NORMAL, LOW = bananas.Priority


class SplitMode:
    def plan(self, settings, router):
        slots = settings["worker.concurrency"]
        high = PoolPlan("high", slots // 2, router.queues(priorities=[HIGH]), worker_id="high-1")
        rest = PoolPlan("rest", slots - slots // 2, router.queues(priorities=[NORMAL, LOW]), worker_id="rest-1")
        return WorkerPlan(mode="split", pools=(high, rest), scheduler=settings["worker.enable_scheduler"],
                          scheduler_interval=settings["worker.scheduler_interval"])


@bananas.hookimpl
def bananas_register_worker_modes(register):
    register(WorkerModeSpec(name="split", factory=SplitMode, summary="high alone, normal+low together"))
'''


@pytest.mark.slow
def test_a_third_party_mode_package_runs_like_the_built_in_ones(fleet, producer, tmp_path_factory):
    # Given a mode package built and pip-installed the way a third party ships one
    pkg = tmp_path_factory.mktemp("split") / "bananas-mode-split"
    (pkg / "bananas_mode_split").mkdir(parents=True)
    (pkg / "bananas_mode_split" / "__init__.py").write_text(textwrap.dedent(SPLIT_MODE))
    (pkg / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"

        [project]
        name = "bananas-mode-split"
        version = "0.3.0"
        dependencies = ["bananas"]

        [project.entry-points.bananas]
        mode-split = "bananas_mode_split"

        [tool.hatch.build.targets.wheel]
        packages = ["bananas_mode_split"]
    """))
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "install", "--no-build-isolation", "--no-deps", str(pkg)], check=True, timeout=300,
                   capture_output=True)
    try:
        # When a worker is started with WORKER_MODE=split
        fleet.start("split", {"WORKER_MODE": "split", "WORKER_CONCURRENCY": "4"})
        fleet.wait_started("split")
        app = producer()
        jobs = enqueue_mix(app, types=("send_email",), per=2)
        runs = fleet.wait_ran(set(jobs))

        # Then its plan runs: high jobs on its high pool, the rest on the other, and it is listed as a mode
        by_id = once_each(runs, set(jobs))
        assert {(jobs[i]["priority"], run["pool"]) for i, run in by_id.items()} == {
            ("high", "high-1"), ("normal", "rest-1"), ("low", "rest-1")}
        result = dry_run(fleet.root, {"WORKER_MODE": "nope"})
        installed = ", ".join(sorted({*Bananas(broker="memory://", env={}).plugins.worker_modes, "split"}))
        assert result.stderr.strip() == f"Error: no worker mode named 'nope'; installed: {installed}"
    finally:
        fleet.stop()
        subprocess.run([*pip, "uninstall", "-y", "bananas-mode-split"], check=True, timeout=300, capture_output=True)
        sys.modules.pop("bananas_mode_split", None)
