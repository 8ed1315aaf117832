"""The kernel's worker modes (thin, default) end to end with the kernel alone: real ``bananas worker`` processes on
``memory://`` with no entry-point plugin (``BANANAS_LOAD_PLUGINS=''``), started with the environment variables of
docs/WORKER_MODES.md, and their ``--dry-run`` plans.

A memory broker lives in one process, so the app under test (``memapp.py``, written to the test's directory)
enqueues its own jobs when the worker imports it: one per job type × priority, a delayed one and one that fails
once. An observer appends one JSON line per job start (id, name, priority, queue, pool, attempt, times) to
``$E2E_RUNS``. Every process is stopped by pid (SIGTERM, then SIGKILL) when the test ends.

The same modes on Redis, several processes sharing one broker, and every packaged mode's e2e tests are in
plugins/bananas-redis/tests/test_redis_worker_modes_e2e.py and plugins/bananas-mode-*/tests/test_*_e2e.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import pytest

APP = '''
"""The kernel e2e app: handlers for the guide's job types, its own jobs, and a recorder of every job start."""
import asyncio
import json
import os
import threading
import time

from bananas import Bananas, hookimpl

RUNS = os.environ.get("E2E_RUNS", os.devnull)
_lock = threading.Lock()
_failed: set[str] = set()


class Recorder:
    @hookimpl
    def bananas_job_started(self, job, pool_id):
        row = {"id": job.id, "name": job.name, "priority": job.priority.value, "queue": job.queue,
               "pool": pool_id, "pid": os.getpid(), "at": time.time(), "enqueued_at": job.enqueued_at,
               "attempt": job.attempts}
        with _lock, open(RUNS, "a") as out:
            out.write(json.dumps(row) + "\\n")


app = Bananas(plugins=[Recorder()])


def _first_attempt_fails(tag, fail_first):
    if fail_first and tag not in _failed:
        _failed.add(tag)
        raise RuntimeError("the first attempt fails")


def _sync(name):
    def handler(sleep=0.0, tag="", fail_first=False):
        _first_attempt_fails(tag, fail_first)
        time.sleep(sleep)
        return name
    return handler


def _async(name):
    async def handler(sleep=0.0, tag="", fail_first=False):
        _first_attempt_fails(tag, fail_first)
        await asyncio.sleep(sleep)
        return name
    return handler


for _name in ("generate_report", "process_analytics"):
    app.job(_name)(_sync(_name))
for _name in ("send_email", "fetch_data", "upload_files", "cleanup"):
    app.job(_name)(_async(_name))

if os.environ.get("E2E_ENQUEUE"):
    _types = ("send_email", "generate_report", "process_analytics", "fetch_data", "upload_files", "cleanup")
    app.enqueue_many([{"name": n, "payload": {"tag": f"{n}-{p}"}, "priority": p, "job_id": f"{n}-{p}"}
                      for n in _types for p in ("high", "normal", "low")])
    app.enqueue("cleanup", {"tag": "delayed"}, delay="1s", job_id="delayed")
    app.enqueue("send_email", {"tag": "flaky", "fail_first": True}, priority="high", job_id="flaky")
'''

TYPES = ("send_email", "generate_report", "process_analytics", "fetch_data", "upload_files", "cleanup")
MIX = {f"{name}-{priority}" for name in TYPES for priority in ("high", "normal", "low")}
CLEAN_ENV = ("BANANAS_", "WORKER_", "REDIS_", "LOG_", "ENABLE_SCHEDULER", "SCHEDULER_", "SHUTDOWN_", "JOB_", "MAX_")
KERNEL_ONLY = {"BANANAS_LOAD_PLUGINS": "", "BANANAS_BROKER": "memory://e2e", "LOG_COLOR": "false"}


def _clean_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith(CLEAN_ENV)}


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, logs: Callable[[], str] = str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs()}")
        time.sleep(0.05)


class MemoryWorker:
    """One ``bananas worker --app memapp`` process on memory://, kernel plugins only; stopped by pid."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.runs_file = root / "runs.jsonl"
        self.log_file = root / "worker.log"
        full_env = {**_clean_env(), **KERNEL_ONLY, "E2E_RUNS": str(self.runs_file), "E2E_ENQUEUE": "1", **env}
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "bananas.cli", "worker", "--app", "memapp"],
                                         cwd=root, env=full_env, stdout=log, stderr=log)

    def logs(self) -> str:
        return self.log_file.read_text(errors="replace")[-4000:]

    def runs(self) -> list[dict[str, Any]]:
        if self.proc.poll() is not None:
            raise AssertionError(f"the worker exited with {self.proc.returncode}\n{self.logs()}")
        if not self.runs_file.exists():
            return []
        return [json.loads(line) for line in self.runs_file.read_text().splitlines() if line.endswith("}")]

    def wait_ran(self, ids: set[str], timeout: float = 20) -> list[dict[str, Any]]:
        def done() -> list[dict[str, Any]] | None:
            runs = self.runs()
            return runs if ids <= {run["id"] for run in runs} else None

        return wait_until(done, timeout, f"{len(ids)} jobs to run", self.logs)

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "memapp.py").write_text(textwrap.dedent(APP))
    return tmp_path


@pytest.fixture
def start(app_dir: Path) -> Iterator[Callable[[dict[str, str]], MemoryWorker]]:
    started: list[MemoryWorker] = []

    def make(env: dict[str, str]) -> MemoryWorker:
        worker = MemoryWorker(app_dir, env)
        started.append(worker)
        return worker

    yield make
    for worker in started:
        worker.stop()


def once_each(runs: list[dict[str, Any]], ids: set[str]) -> dict[str, dict[str, Any]]:
    """Every id in ``ids`` ran exactly once; returns id → its run."""
    counts = Counter(run["id"] for run in runs if run["id"] in ids)
    assert {job_id: n for job_id, n in counts.items() if n != 1} == {}
    assert set(counts) == ids
    return {run["id"]: run for run in runs if run["id"] in ids}


# -- thin ---------------------------------------------------------------------------------------------------------
def test_thin_runs_every_priority_and_type_in_one_pool_with_its_own_scheduler(start):
    # Given the guide's thin worker on memory://, the kernel alone, and its app's mix of jobs, a delayed job and a
    # job that fails once
    worker = start({"WORKER_MODE": "thin", "WORKER_CONCURRENCY": "5"})

    # When it runs them
    worker.wait_ran({*MIX, "delayed", "flaky"})
    wait_until(lambda: any(r["id"] == "flaky" and r["attempt"] == 2 for r in worker.runs()), 15,
               "the retry of the flaky job", worker.logs)
    runs = worker.runs()

    # Then one pool ran everything, the built-in scheduler moved the delayed job and the retry
    assert {run["pool"] for run in runs} == {"thin-1"}
    once_each(runs, MIX)
    (late,) = [run for run in runs if run["id"] == "delayed"]
    assert late["at"] >= late["enqueued_at"] + 1.0
    assert sorted(run["attempt"] for run in runs if run["id"] == "flaky") == [1, 2]

    # And SIGTERM stops it gracefully
    assert worker.stop() == 0


# -- default ------------------------------------------------------------------------------------------------------
def test_default_runs_every_priority_and_leaves_due_jobs_to_a_scheduler_when_it_is_off(start):
    # Given the guide's default worker with the scheduler off
    worker = start({"WORKER_MODE": "default", "WORKER_CONCURRENCY": "20", "ENABLE_SCHEDULER": "false"})

    # When its app's ready jobs run
    runs = worker.wait_ran(MIX | {"flaky"})

    # Then they ran once each on the default pool, and the delayed job and the retry wait: nobody moves them
    assert {run["pool"] for run in runs} == {"default-1"}
    once_each(runs, MIX)
    time.sleep(1.5)
    runs = worker.runs()
    assert "delayed" not in {run["id"] for run in runs}
    assert [run["attempt"] for run in runs if run["id"] == "flaky"] == [1]
    assert worker.stop() == 0


def test_default_with_its_scheduler_on_runs_delayed_jobs_and_retries(start):
    # Given a default worker with ENABLE_SCHEDULER left at its default (true)
    worker = start({"WORKER_MODE": "default", "WORKER_CONCURRENCY": "4"})

    # When its app's jobs run / Then the delayed job and the retry ran too, on the default pool
    worker.wait_ran({*MIX, "delayed"})
    wait_until(lambda: any(r["id"] == "flaky" and r["attempt"] == 2 for r in worker.runs()), 15,
               "the retry of the flaky job", worker.logs)
    assert {run["pool"] for run in worker.runs()} == {"default-1"}
    assert worker.stop() == 0


# -- plans: dry-run with the guide's variables, unknown modes ----------------------------------------------------
GUIDE_PLANS = [
    ({"WORKER_MODE": "thin", "WORKER_CONCURRENCY": "5"}, True, [("thin-1", 5, ["high", "normal", "low"])]),
    ({"WORKER_MODE": "default", "WORKER_CONCURRENCY": "20", "ENABLE_SCHEDULER": "false"}, False,
     [("default-1", 20, ["high", "normal", "low"])]),
]


def _dry_run(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bananas.cli", "worker", "--app", "memapp", "--dry-run", *args],
        cwd=root, env={**_clean_env(), **KERNEL_ONLY, **env}, capture_output=True, text=True, timeout=60,
    )


def _pools(stdout: str) -> list[tuple[str, int, list[str]]]:
    return [(p["worker_id"], p["concurrency"], p["queues"]) for p in json.loads(stdout)["pools"]]


@pytest.mark.parametrize(("env", "scheduler", "pools"), GUIDE_PLANS, ids=[e["WORKER_MODE"] for e, _, _ in GUIDE_PLANS])
def test_dry_run_prints_the_plan_of_the_guides_configuration(app_dir, env, scheduler, pools):
    result = _dry_run(app_dir, env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["mode"] == env["WORKER_MODE"]
    assert json.loads(result.stdout)["scheduler"] is scheduler
    assert _pools(result.stdout) == pools


def test_unknown_mode_lists_the_built_in_modes(app_dir):
    result = _dry_run(app_dir, {"WORKER_MODE": "turbo"})
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: no worker mode named 'turbo'; installed: default, thin"


MODE_PLUGINS = ("bananas-mode-thin-plus", "bananas-mode-specialized", "bananas-mode-job-specialized",
                "bananas-mode-scaled", "bananas-mode-scheduler-only")


def _installed(dist: str) -> bool:
    try:
        distribution(dist)
    except PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not all(map(_installed, MODE_PLUGINS)), reason="needs every mode plugin of plugins/ installed")
def test_unknown_mode_lists_every_installed_mode(app_dir):
    # Given the built-in modes and every packaged one (the dev setup of requirements-dev.txt)
    env = {k: v for k, v in KERNEL_ONLY.items() if k != "BANANAS_LOAD_PLUGINS"}
    result = subprocess.run(
        [sys.executable, "-m", "bananas.cli", "worker", "--app", "memapp", "--dry-run"],
        cwd=app_dir, env={**_clean_env(), **env, "WORKER_MODE": "turbo"}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "Error: no worker mode named 'turbo'; installed: default, job-specialized, scaled, scheduler-only, "
        "specialized, thin, thin_plus"
    )
