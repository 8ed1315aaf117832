"""The file tier in real ``bananas worker`` processes on ``memory://``, enabled by ``LOG_FILE_ENABLED=true`` alone: the
worker's own records and what its handlers log land in the file as flat JSON lines; with ``--processes 2`` the
supervisor and each child write their own file. Every process is stopped by its pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import bananas
from bananas.plugin_api import CONTEXT_FIELDS, FIXED_FIELDS

APP = textwrap.dedent(
    '''
    """Handlers that log through loguru with the job's fields; the app enqueues its own jobs (memory:// lives here)."""
    import os

    from loguru import logger

    from bananas import Bananas

    app = Bananas()


    @app.job("greet")
    def greet(who):
        logger.bind(log_source="bananas_job", job_name="greet", pid=os.getpid()).info(f"hello {who}")
        return who


    app.enqueue_many([{"name": "greet", "payload": {"who": f"w{n}"}} for n in range(5)])
    '''
)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANANAS_", "WORKER_", "LOG_", "REDIS_"))}
    return {**env, "BANANAS_BROKER": "memory://logfile-e2e", "LOG_COLOR": "false", "LOG_FILE_ENABLED": "true",
            "LOG_FILE_PATH": str(tmp_path / "logs" / "bananas.log"), "PYTHONPATH": str(tmp_path), **extra}


def _records(directory: Path) -> dict[int, list[dict[str, Any]]]:
    """pid → records of ``bananas-<pid>.log``."""
    out = {}
    for path in sorted(directory.glob("bananas-*.log")):
        lines = path.read_text(encoding="utf-8").splitlines()
        out[int(path.stem.rpartition("-")[2])] = [json.loads(line) for line in lines if line.endswith("}")]
    return out


def _wait_until(predicate: Callable[[], Any], timeout: float, what: str, logs: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs()}")
        time.sleep(0.1)


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    (tmp_path / "greetapp.py").write_text(APP)
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, **env: str) -> subprocess.Popen[bytes]:
        out = open(tmp_path / "worker.out", "ab")  # noqa: SIM115 - closed with the process below
        proc = subprocess.Popen([sys.executable, "-m", "bananas.cli", "worker", "--app", "greetapp", *args],
                                cwd=tmp_path, env=_env(tmp_path, **env), stdout=out, stderr=out)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _output(tmp_path: Path) -> Callable[[], str]:
    return lambda: (tmp_path / "worker.out").read_text(errors="replace")[-3000:] if (
        tmp_path / "worker.out").exists() else ""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)


def test_a_worker_writes_its_records_and_its_handlers_records_to_the_file(tmp_path, worker):
    proc = worker()
    logs = tmp_path / "logs"

    def greeted() -> bool:
        records = _records(logs).get(proc.pid, [])
        return sum(r["msg"].startswith("hello") for r in records) == 5

    _wait_until(greeted, 30, "the handlers' records in the file", _output(tmp_path))
    _stop(proc)  # the tier is closed (flushed) at shutdown

    files = _records(logs)
    assert list(files) == [proc.pid]  # one process, one file: bananas-<pid>.log
    records = files[proc.pid]
    model = set(FIXED_FIELDS) | set(CONTEXT_FIELDS)
    assert all(list(r)[:5] == list(FIXED_FIELDS) and r["time"].endswith("Z") for r in records)
    jobs = [r for r in records if r["log_source"] == "bananas_job"]
    assert sorted(r["msg"] for r in jobs) == [f"hello w{n}" for n in range(5)]
    assert all(r["job_name"] == "greet" and r["pid"] == proc.pid for r in jobs)
    internal = [r for r in records if r["log_source"] == "bananas_internal"]
    components = ("worker", "scheduler", "queue", "redis", "api", "cli", "supervisor")  # the issue's, + supervisor
    assert internal and all(r["component"] in components for r in internal)
    assert any("stopped" in r["msg"] for r in internal)  # written at shutdown, before the tier closed
    assert all(set(r) <= model | {"pid"} for r in jobs)


def test_processes_2_gives_each_process_its_own_file(tmp_path, worker):
    proc = worker("--processes", "2")
    logs = tmp_path / "logs"

    def children_greeted() -> dict[int, list[dict[str, Any]]] | None:
        files = _records(logs)
        greeting = {pid for pid, records in files.items() if
                    sum(r["msg"].startswith("hello") for r in records) == 5}
        return files if len(greeting) == 2 else None

    _wait_until(children_greeted, 60, "both children's records", _output(tmp_path))
    _stop(proc)

    files = _records(logs)
    assert proc.pid in files and len(files) == 3, sorted(files)  # the supervisor and two children
    for pid, records in files.items():
        jobs = [r for r in records if r["log_source"] == "bananas_job"]
        assert all(r["pid"] == pid for r in jobs)  # a child's records are only in its own file
        assert len(jobs) == (0 if pid == proc.pid else 5)


EVENTS_APP = textwrap.dedent(
    '''
    """A job that succeeds (logging through job_logger) and one that fails with no retry left."""
    from bananas import Bananas, job_logger

    app = Bananas()


    @app.job("ok")
    def ok():
        job_logger.info("inside the handler")


    @app.job("boom", max_retries=0)
    def boom():
        raise RuntimeError("kaput")


    app.enqueue("ok", {}, job_id="job-ok")
    app.enqueue("boom", {}, job_id="job-boom")
    '''
)


@pytest.mark.skipif(not hasattr(bananas, "job_logger"), reason="needs the kernel's job events and job_logger")
def test_the_kernels_job_events_reach_the_file_at_its_own_level(tmp_path, worker):
    (tmp_path / "greetapp.py").write_text(EVENTS_APP)  # the fixture runs greetapp
    proc = worker(LOG_LEVEL="warning", LOG_FILE_LEVEL="debug")  # the file gets debug; the console only warnings
    logs = tmp_path / "logs"

    def events() -> dict[tuple[str, str], dict[str, Any]] | None:
        found = {(r.get("job_id"), r.get("event")): r for r in _records(logs).get(proc.pid, [])}
        return found if ("job-ok", "succeeded") in found and ("job-boom", "dead") in found else None

    found = _wait_until(events, 30, "the job events in the file", _output(tmp_path))
    _stop(proc)
    succeeded, failed = found[("job-ok", "succeeded")], found[("job-boom", "failed")]
    assert succeeded["level"] == "DEBUG" and succeeded["job_name"] == "ok" and succeeded["duration_ms"] >= 0
    assert {"started", "succeeded"} <= {event for job_id, event in found if job_id == "job-ok"}
    assert failed["level"] == "ERROR" and failed["error"] == "RuntimeError: kaput" and "kaput" in failed["traceback"]
    assert found[("job-boom", "dead")]["level"] == "ERROR"
    handler = [r for r in _records(logs)[proc.pid] if r["log_source"] == "bananas_job"]
    assert [(r["msg"], r["job_id"], r["job_name"]) for r in handler] == [("inside the handler", "job-ok", "ok")]
    assert all(r.get("worker_id") for (_, event), r in found.items() if event)
    console = _output(tmp_path)()
    assert "kaput" in console and "inside the handler" not in console  # LOG_LEVEL=warning on the console
