"""Shared machinery of the chaos drills: real redis-servers, real ``bananas worker`` processes, the ledger.

Every process is started here, remembered, and stopped by its pid in :meth:`Drill.close` (SIGCONT, SIGTERM, then
SIGKILL), even when the drill fails. Children of a ``--processes N`` supervisor run in their own process group, so
they are found in the supervisor's log (``worker process n started (pid P)``) and stopped by pid too.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import redis
from bananas_redis.broker import RedisBroker
from bananas_redis.testing import RedisServer, find_redis_servers, free_port

from bananas import Bananas
from bananas.broker import DeadLetter, JobRecord, QueueDepth

HERE = Path(__file__).resolve().parent
PLUGINS = {"BANANAS_LOAD_PLUGINS": "bananas-redis"}
"""The entry points the drills need; every other installed plugin stays out (hermetic workers and producer)."""
CLEAN_ENV = ("BANANAS_", "WORKER_", "REDIS_", "LOG_", "ENABLE_SCHEDULER", "SCHEDULER_", "SHUTDOWN_", "JOB_", "MAX_")
PREFIX = "chaos"
QUEUE = "normal"  # the priority router's queue for the default priority


def redis_binary() -> str:
    servers = find_redis_servers()
    if not servers:  # pragma: no cover - CI installs redis-server
        pytest.skip("no redis-server available")
    return servers[0][1]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, logs: Callable[[], str] = str,
               interval: float = 0.05) -> Any:
    """Poll ``predicate`` until truthy; fail with ``what`` and ``logs()`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs()}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover
        return True
    try:  # a zombie child of ours counts as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


class Proc:
    """One subprocess (a worker, a supervisor, a producer) with stdout+stderr in a log file, stopped by pid."""

    def __init__(self, name: str, cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = cwd / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.started_at = time.time()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> float:
        """SIGKILL by pid and reap; returns the Unix time of the kill."""
        at = time.time()
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)
        return at

    def child_pids(self) -> list[int]:
        """Pids of the worker processes a supervisor started (from its log)."""
        return [int(p) for p in re.findall(r"worker process \d+ started \(pid (\d+)\)", self.log())]

    def stop(self, timeout: float = 10.0) -> None:
        children = self.child_pids()
        if self.alive():
            for sig in (signal.SIGCONT, signal.SIGTERM):
                os.kill(self.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        for pid in children:  # a supervisor killed above leaves its children behind (own process group)
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if not self._log.closed:
            self._log.close()

    def wait_exit(self, timeout: float) -> tuple[int | None, float]:
        """``(exit status or None if still running, seconds waited)``."""
        started = time.monotonic()
        try:
            code: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - started

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, chars: int = 4000) -> str:
        return self.log()[-chars:]


class Drill:
    """One drill's world: a broker redis-server, a ledger redis-server, a bananas.toml, and its processes."""

    def __init__(self, root: Path, *, aof_everysec: bool = False, broker_port: int | None = None,
                 start_broker: bool = True) -> None:
        self.root = root
        self.binary = redis_binary()
        self.servers: list[RedisServer] = []
        self.procs: list[Proc] = []
        (root / "ledger-data").mkdir(exist_ok=True)
        self.ledger_server = self._server(RedisServer(self.binary, dir=str(root / "ledger-data")))
        broker_dir = root / "broker-data"
        broker_dir.mkdir(exist_ok=True)
        extra = ("--appendfsync", "everysec") if aof_everysec else ()
        self.broker_server = self._server(RedisServer(self.binary, port=broker_port or free_port(),
                                                      appendonly=aof_everysec, extra=extra, dir=str(broker_dir)))
        try:
            self.ledger_server.start()
            if start_broker:
                self.broker_server.start()
        except BaseException:
            for server in self.servers:
                server.stop(kill=True)
            raise
        self.ledger = redis.Redis.from_url(self.ledger_server.url, decode_responses=True)
        self.url = self.broker_server.url
        self.broker_options: dict[str, Any] = {}
        self.configure()
        self._app: Bananas | None = None

    def _server(self, server: RedisServer) -> RedisServer:
        self.servers.append(server)
        return server

    # -- configuration -------------------------------------------------------------------------------------------
    def configure(self, *, lease: float = 2.0, reaper_interval: float = 0.5, max_crash_deliveries: int = 3,
                  shutdown_timeout: float = 3.0, retry_for: float = 120.0, socket_timeout: float = 10.0,
                  extra_options: str = "") -> None:
        """Write ``bananas.toml`` (shared by the workers and the test's producer)."""
        self.broker_options = {"lease": lease, "reaper_interval": reaper_interval,
                               "max_crash_deliveries": max_crash_deliveries}
        (self.root / "bananas.toml").write_text(textwrap.dedent(
            f"""
            broker = "{self.url}"

            [worker]
            scheduler_interval = "0.2s"
            shutdown_timeout = "{shutdown_timeout}s"

            [jobs]
            retry_backoff_base = "0.1s"
            retry_backoff_max = "0.2s"

            [broker_options]
            prefix = "{PREFIX}"
            lease = "{lease}s"
            reaper_interval = "{reaper_interval}s"
            max_crash_deliveries = {max_crash_deliveries}
            retry_for = "{retry_for}s"
            retry_backoff_max = "0.5s"
            socket_timeout = "{socket_timeout}s"
            connect_timeout = "1s"
            timeout = "3s"

            [result_backend_options]
            timeout = "{socket_timeout}s"
            connect_timeout = "1s"
            retry_for = "{retry_for}s"
            """
        ) + textwrap.dedent(extra_options))

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(CLEAN_ENV)}
        pythonpath = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
        env.update(PLUGINS, PYTHONPATH=pythonpath, CHAOS_LEDGER_URL=self.ledger_server.url, LOG_LEVEL="info",
                   LOG_COLOR="false", BANANAS_CONFIG=str(self.root / "bananas.toml"))
        env.update(extra)
        return env

    # -- processes -----------------------------------------------------------------------------------------------
    def worker(self, name: str, *, concurrency: int = 4, processes: int = 1, mode: str = "thin",
               broker: str | None = None, **env: str) -> Proc:
        cmd = [sys.executable, "-m", "bananas.cli", "worker", "--app", "chaos_app", "--mode", mode,
               "--concurrency", str(concurrency)]
        if processes > 1:
            cmd += ["--processes", str(processes)]
        if broker:
            cmd += ["--broker", broker]
        proc = Proc(name, cmd, self.root, self.env(**env))
        self.procs.append(proc)
        return proc

    def process(self, name: str, cmd: list[str], **env: str) -> Proc:
        proc = Proc(name, cmd, self.root, self.env(**env))
        self.procs.append(proc)
        return proc

    def wait_started(self, *procs: Proc, count: int = 1, timeout: float = 30.0) -> None:
        """Until each proc's log shows ``count`` started worker(s)."""

        def ready() -> bool:
            for proc in procs:
                if not proc.alive():
                    raise AssertionError(f"{proc.name} exited with {proc.proc.returncode}\n{self.logs()}")
            return all(proc.log().count(" started: mode ") >= count for proc in procs)

        wait_until(ready, timeout, "the workers to start", self.logs)

    # -- producer and broker inspection ---------------------------------------------------------------------------
    @property
    def app(self) -> Bananas:
        """A producer with no handlers, on the same bananas.toml as the workers."""
        if self._app is None:
            self._app = Bananas(config=str(self.root / "bananas.toml"), env=PLUGINS)
        return self._app

    def enqueue(self, keys: Iterable[str], **payload: Any) -> list[str]:
        keys = list(keys)
        for i in range(0, len(keys), 250):
            self.app.enqueue_many([{"name": "work", "payload": {"key": k, **payload}, "job_id": k}
                                   for k in keys[i:i + 250]])
        return keys

    def _broker_call(self, call: Callable[[RedisBroker], Any]) -> Any:
        async def run() -> Any:
            return await call(await self.app.broker())

        return self.app.run_sync(run)

    def dead_letters(self, queue: str = QUEUE) -> list[DeadLetter]:
        return list(self._broker_call(lambda b: b.dead_letters(queue, limit=10_000)))

    def depths(self) -> dict[str, QueueDepth]:
        return dict(self._broker_call(lambda b: b.depths()))

    def lookup(self, job_id: str) -> JobRecord | None:
        return self._broker_call(lambda b: b.lookup(job_id))  # type: ignore[no-any-return]

    def broker_redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    # -- ledger --------------------------------------------------------------------------------------------------
    def counts(self, name: str) -> dict[str, int]:
        return {k: int(v) for k, v in self.ledger.hgetall(name).items()}

    def completed(self, keys: Iterable[str]) -> int:
        done = self.counts("done")
        return sum(1 for k in keys if done.get(k, 0) > 0)

    def starts(self, key: str) -> list[tuple[int, float]]:
        out = []
        for row in self.ledger.lrange(f"starts:{key}", 0, -1):
            pid, at = row.split()
            out.append((int(pid), float(at)))
        return out

    def inflight(self, pid: int) -> set[str]:
        return set(self.ledger.smembers(f"inflight:{pid}"))

    def running(self, pid: int) -> set[str]:
        return set(self.ledger.smembers(f"running:{pid}"))

    def wait_completed(self, keys: list[str], timeout: float, what: str = "every job to complete") -> float:
        """Wait until every key has a ``done``; returns the seconds it took."""
        started = time.monotonic()
        wait_until(lambda: self.completed(keys) == len(keys), timeout,
                   f"{what} ({self.completed(keys)}/{len(keys)} done)", self.logs, interval=0.2)
        return time.monotonic() - started

    # -- reporting and teardown ---------------------------------------------------------------------------------
    def logs(self) -> str:
        return "\n".join(f"--- {p.name} (pid {p.pid}) log tail\n{p.tail()}" for p in self.procs)

    def close(self) -> None:
        for proc in self.procs:
            try:
                proc.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                print(f"could not stop {proc.name} (pid {proc.pid}): {exc}")
        if self._app is not None:
            self._app.close()
        self.ledger.close()
        for server in self.servers:
            server.stop(kill=True)


def report(record_property: Callable[[str, Any], None], drill: str, **figures: Any) -> None:
    """Print the drill's figures (``pytest -s`` shows them) and attach them to the test report."""
    line = ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
    print(f"\n[chaos] {drill}: {line}")
    for key, value in figures.items():
        record_property(key, value)
