"""Issue 13 on real processes: ``/metrics``, ``/healthz``/``/readyz``, the ``System metrics`` line, the worker
registry and ``--processes N`` aggregation, with ``python -m bananas.cli worker`` subprocesses on a real
redis-server (the :mod:`bananas_redis.e2e` fleet: every process is stopped by pid when the test ends).

The app (``metricsapp.py``, written to the test's directory) has a job that succeeds (``ok``), one that always fails
with one retry allowed (``boom``), and one that sleeps (``nap``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bananas_redis.e2e import Fleet, clean_env, e2e_fleet, e2e_producer, e2e_server, wait_until
from bananas_redis.testing import RedisServer, free_port
from prometheus_client.parser import text_string_to_metric_families

from bananas import Bananas
from bananas.broker import Envelope
from bananas.metrics.registry import TTL, decode_records

APP = '''
import asyncio

from bananas import Bananas

app = Bananas()


@app.job("ok")
async def ok():
    return None


@app.job("boom", max_retries=1)
async def boom():
    raise RuntimeError("always")


@app.job("nap")
async def nap(seconds=1.0):
    await asyncio.sleep(seconds)
'''

FAST = {"BANANAS_JOBS_RETRY_BACKOFF_BASE": "0.05", "BANANAS_JOBS_RETRY_BACKOFF_MAX": "0.1",
        "SCHEDULER_INTERVAL": "0.1", "WORKER_MODE": "thin", "LOG_FORMAT": "json"}


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


def start(workers: Fleet, name: str, port: int, *args: str, **env: str) -> None:
    (workers.root / "metricsapp.py").write_text(textwrap.dedent(APP))
    command = [sys.executable, "-m", "bananas.cli", "worker", "--app", "metricsapp", *args]
    workers.start(name, {**FAST, "METRICS_PORT": str(port), **env}, command=command)


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


def samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape: (name, sorted labels) → value."""
    status, text = get(port, "/metrics")
    if status != 200:
        return {}
    return {(s.name, tuple(sorted(s.labels.items()))): float(s.value)
            for family in text_string_to_metric_families(text) for s in family.samples}


def jobs_total(port: int) -> dict[tuple[str, str, str], float]:
    """``bananas_jobs_total`` by (job, queue, status)."""
    out = {}
    for (name, labels), value in samples(port).items():
        if name == "bananas_jobs_total":
            d = dict(labels)
            out[(d["job"], d["queue"], d["status"])] = value
    return out


def value(port: int, name: str, **labels: str) -> float | None:
    return samples(port).get((name, tuple(sorted(labels.items()))))


def log_lines(workers: Fleet, name: str, message: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``name`` with ``message``, their bound fields at the top (flat or loguru's record)."""
    out = []
    for line in (workers.root / f"{name}.log").read_text(errors="replace").splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if "record" in obj:  # loguru's serialize format
            obj = {**obj["record"]["extra"], "message": obj["record"]["message"]}
        if obj.get("message", obj.get("msg")) == message:
            out.append(obj)
    return out


def enqueue_malformed(app: Bananas, count: int) -> None:
    async def send() -> None:
        broker = await app.broker()
        await broker.enqueue([Envelope(f"bad-{i}", "normal", b"\x00not a job") for i in range(count)])

    app.run_sync(send)


def registry_ids(app: Bananas) -> list[str]:
    async def read() -> list[bytes]:
        return await (await app.broker()).list_workers()

    return [record.id for record in decode_records(app.run_sync(read))]


def test_metrics_count_a_known_workload_exactly(fleet, producer):
    # Given a worker with its endpoint on a free port
    port = free_port()
    start(fleet, "w", port, "--concurrency", "4")
    app = producer()
    wait_until(lambda: get(port, "/readyz")[0] == 200, 30, "the worker to be ready", fleet.logs)

    # When 5 jobs succeed, 2 fail twice (retried once, then dead) and 3 bodies are malformed
    for _ in range(5):
        app.enqueue("ok")
    for _ in range(2):
        app.enqueue("boom")
    enqueue_malformed(app, 3)
    expected = {
        ("ok", "normal", "completed"): 5.0,
        ("boom", "normal", "failed"): 4.0,
        ("boom", "normal", "retried"): 2.0,
        ("boom", "normal", "dead"): 2.0,
        ("<malformed>", "normal", "dead"): 3.0,
    }
    wait_until(lambda: jobs_total(port) == expected, 30, f"the counts {expected}", lambda: str(jobs_total(port)))

    # Then /metrics shows exactly those counts, the histograms saw the 9 handler runs, and one live worker
    assert value(port, "bananas_job_duration_seconds_count", job="ok", priority="normal", queue="normal") == 5.0
    assert value(port, "bananas_job_duration_seconds_count", job="boom", priority="normal", queue="normal") == 4.0
    assert value(port, "bananas_job_wait_seconds_count", job="ok", priority="normal", queue="normal") == 5.0
    wait_until(lambda: value(port, "bananas_queue_depth", queue="normal", priority="normal", state="dead") == 5.0,
               15, "the dead depth (read every 10 s)", fleet.logs)
    assert value(port, "bananas_workers_alive") == 1.0
    assert get(port, "/healthz") == (200, "ok\n")


def test_readyz_follows_the_broker(tmp_path: Path):
    # Given a worker on its own redis-server
    with e2e_server() as server:
        own = Fleet(tmp_path, server.url)
        try:
            port = free_port()
            start(own, "w", port)
            wait_until(lambda: get(port, "/readyz")[0] == 200, 30, "the worker to be ready", own.logs)

            # When Redis stops, /readyz answers 503 with the reason (and /healthz stays 200: the loop runs)
            server.stop()
            wait_until(lambda: get(port, "/readyz")[0] == 503, 20, "/readyz to turn 503", own.logs)
            status, reason = get(port, "/readyz")
            assert "broker unreachable" in reason
            assert get(port, "/healthz")[0] == 200

            # And when Redis is back, /readyz answers 200 again
            server.start()
            wait_until(lambda: get(port, "/readyz") == (200, "ok\n"), 30, "/readyz to turn 200 again", own.logs)
        finally:
            own.stop()
            own.redis.close()


@pytest.mark.slow
def test_half_the_slots_sleeping_reads_about_half_utilization_and_the_line_says_so(fleet, producer):
    # Given a 4-slot worker logging System metrics every second
    port = free_port()
    start(fleet, "w", port, "--concurrency", "4", METRICS_LOG_INTERVAL="1s", SHUTDOWN_TIMEOUT="1s")
    app = producer()
    wait_until(lambda: get(port, "/readyz")[0] == 200, 30, "the worker to be ready", fleet.logs)

    # When 2 jobs sleep 20 s (half the slots) and 3 quick ones ran before
    for _ in range(3):
        app.enqueue("ok")
    wait_until(lambda: jobs_total(port).get(("ok", "normal", "completed")) == 3.0, 20, "3 jobs", fleet.logs)
    app.enqueue("nap", {"seconds": 20.0})
    app.enqueue("nap", {"seconds": 20.0})
    wait_until(lambda: value(port, "bananas_pool_busy_slots", pool="thin-1") == 2.0, 20, "2 busy slots", fleet.logs)

    # Then the utilization window (10 s) fills up to 50 %
    def half() -> bool:
        got = value(port, "bananas_worker_utilization")
        return got is not None and abs(got - 0.5) < 0.03

    wait_until(half, 18, "utilization ≈ 0.5", lambda: str(value(port, "bananas_worker_utilization")))

    # And the System metrics line of a full second with both sleeping says 50 %, with the counts so far
    lines = log_lines(fleet, "w", "System metrics")
    assert lines, fleet.logs()
    last = lines[-1]
    assert last["worker_utilization"] == "50.0%"
    assert (last["jobs_processed"], last["jobs_completed"], last["jobs_failed"]) == (3, 3, 0)
    assert last["error_rate"] == "0.00%" and last["jobs_running"] == 2
    assert set(last) >= {"avg_duration_ms", "uptime"}


def test_a_sigkilled_worker_leaves_the_registry_in_bounded_time(fleet, producer):
    # Given two live workers in the registry
    app = producer()
    start(fleet, "a", free_port())
    start(fleet, "b", free_port())
    wait_until(lambda: len(registry_ids(app)) == 2, 30, "two workers in the registry", fleet.logs)

    # When one is SIGKILLed (it cannot say goodbye)
    victim = fleet.procs["a"]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    killed_at = time.monotonic()

    # Then its record is gone within the ttl (three heartbeats) and the other stays
    wait_until(lambda: len(registry_ids(app)) == 1, TTL + 4, "the killed worker to leave the registry", fleet.logs)
    assert time.monotonic() - killed_at <= TTL + 4
    (left,) = registry_ids(app)
    assert left.endswith(f"-{fleet.procs['b'].pid}")


@pytest.mark.slow
def test_processes_2_aggregate_on_one_port_without_double_counting_after_a_restart(fleet, producer):
    # Given a supervisor with two worker processes and one endpoint
    port = free_port()
    start(fleet, "sup", port, "--processes", "2", "--concurrency", "2")
    app = producer()
    wait_until(lambda: value(port, "bananas_worker_processes") == 2.0, 30, "two processes on the endpoint",
               fleet.logs)

    # When 20 jobs run, one child is SIGKILLed and restarted, then 10 more run
    for _ in range(20):
        app.enqueue("ok")
    wait_until(lambda: jobs_total(port).get(("ok", "normal", "completed")) == 20.0, 30, "20 jobs", fleet.logs)
    time.sleep(1.5)  # every child's last snapshot (written each second) holds its counts
    children = [pid for pid in _child_pids(fleet.procs["sup"].pid)]
    assert len(children) == 2
    os.kill(children[0], signal.SIGKILL)
    wait_until(lambda: len(set(_child_pids(fleet.procs["sup"].pid)) - {children[0]}) == 2, 30, "the restart",
               fleet.logs)
    wait_until(lambda: value(port, "bananas_worker_processes") == 2.0, 30, "two live processes again", fleet.logs)
    for _ in range(10):
        app.enqueue("ok")

    # Then one scrape of the supervisor's port counts every job exactly once
    wait_until(lambda: jobs_total(port).get(("ok", "normal", "completed")) == 30.0, 30, "30 jobs",
               lambda: str(jobs_total(port)))
    time.sleep(1.5)
    assert jobs_total(port).get(("ok", "normal", "completed")) == 30.0
    assert get(port, "/readyz")[0] == 200 and get(port, "/healthz")[0] == 200
    # and the merged exposition is valid for Prometheus too (promtool, when installed)
    if shutil.which("promtool"):
        checked = subprocess.run(["promtool", "check", "metrics"], input=get(port, "/metrics")[1],
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def _child_pids(parent: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                out.append(int(entry.name))
    return sorted(out)


def test_status_and_workers_commands_on_redis(fleet, producer):
    # Given a live worker that ran 4 jobs, and 2 jobs waiting in "low", which it does not read
    start(fleet, "w", free_port(), "--queues", "high,normal")
    app = producer()
    wait_until(lambda: len(registry_ids(app)) == 1, 30, "the worker in the registry", fleet.logs)
    for _ in range(4):
        app.enqueue("ok")
    for _ in range(2):
        app.enqueue("ok", priority="low")

    def cli(*args: str) -> Any:
        done = subprocess.run([sys.executable, "-m", "bananas.cli", *args, "--broker", fleet.url, "--json"],
                              capture_output=True, text=True, timeout=60, cwd=fleet.root, env=clean_env())
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    # When bananas status and bananas workers ask Redis (throughput: the worker's last minute, published every 2 s)
    wait_until(lambda: cli("status")["throughput_per_minute"] == 4, 20, "a throughput of 4", fleet.logs)
    report = cli("status")
    (record,) = cli("workers")

    # Then they show the queues with their priority, the worker with its mode and pools, and the throughput
    low = next(row for row in report["queues"] if row["queue"] == "low")
    assert (low["priority"], low["ready"], low["running"]) == ("low", 2, 0)
    assert record["id"] == report["workers"][0]["id"] and record["mode"] == "thin"
    assert record["pools"][0]["queues"] == ["high", "normal"] and record["pid"] == fleet.procs["w"].pid
