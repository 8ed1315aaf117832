"""The handler API (issue 16) on a real redis-server through real ``bananas worker`` processes: progress reported
by sync and async handlers is read back by the producer, the attempt history names each run's worker process and
survives retries, ``Retry``/``Reject`` and completion; the signature check dead-letters a bad payload at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from bananas_redis.e2e import Fleet, clean_env, e2e_fleet, e2e_producer, e2e_server, wait_until
from bananas_redis.testing import RedisServer

from bananas import JobFailed, Status
from bananas.attempts import attempts_of

pytestmark = pytest.mark.slow

HANDLER_APP = '''
"""The e2e recording app plus the handlers of the handler-API test."""
import asyncio

from bananas import Reject, Retry, current_job
from e2eapp import app


@app.job(max_retries=3, retry_backoff=lambda attempt: 0.05)
def import_rows(rows):
    ctx = current_job()
    ctx.report_progress(rows / 2, "half")
    if ctx.attempt == 1:
        raise RuntimeError("the first attempt fails")
    if ctx.attempt == 2:
        raise Retry(delay=0.1)
    ctx.report_progress(rows, "all rows")
    return rows


@app.job(max_retries=3)
async def resize(size):
    current_job().report_progress(0.5, "resizing")
    await asyncio.sleep(0)
    if size < 0:
        raise Reject("negative size")
    current_job().report_progress(1.0, "done")
    return size * 2


@app.job(max_retries=3)
def send_mail(to, subject):
    return to
'''


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with e2e_server() as server:
        yield server


@pytest.fixture
def fleet(redis_server: RedisServer, tmp_path: Path) -> Iterator[Fleet]:
    with e2e_fleet(redis_server, tmp_path) as made:
        (made.root / "handlerapp.py").write_text(textwrap.dedent(HANDLER_APP))
        yield made


@pytest.fixture
def producer(fleet: Fleet) -> Iterator:
    with e2e_producer(fleet) as make:
        yield make


def _worker(fleet: Fleet) -> None:
    fleet.start("w1", {"WORKER_MODE": "thin", "SCHEDULER_INTERVAL": "0.1"},
                command=[sys.executable, "-m", "bananas.cli", "worker", "--app", "handlerapp"])
    fleet.wait_started("w1")


def test_progress_history_retry_reject_and_signature_check_through_a_worker_process(fleet, producer):
    # Given one worker process running the handler app, and a producer on the same Redis
    _worker(fleet)
    app = producer()
    pid = fleet.procs["w1"].pid

    # When a sync job fails once, asks for a retry once, then completes; an async job completes and another is
    # rejected; and a payload with a misspelt keyword is sent by name
    rows = app.enqueue("import_rows", {"rows": 10})
    ok = app.enqueue("resize", {"size": 3})
    bad = app.enqueue("resize", {"size": -1})
    typo = app.enqueue("send_mail", {"too": "a", "subject": "s"})

    # Then results and failures come back
    assert rows.result(timeout=30) == 10 and ok.result(timeout=30) == 6
    with pytest.raises(JobFailed, match="negative size"):
        bad.result(timeout=30)
    with pytest.raises(JobFailed) as failed:
        typo.result(timeout=30)
    assert failed.value.message == "payload does not match send_mail(to, subject): unexpected keyword 'too'"

    # And the last progress of each job is stored in Redis with the job
    wait_until(lambda: app.get_job(rows.id).status is Status.COMPLETED, 10, "the ack", fleet.logs)
    assert (rows.progress().value, rows.progress().message) == (10.0, "all rows")
    assert (ok.progress().value, ok.progress().message) == (1.0, "done")
    assert bad.progress().message == "resizing"

    # And the history lists each attempt with the worker process, its start and end, and its outcome
    job = app.get_job(rows.id)
    history = attempts_of(job)
    assert [(a["attempt"], a["outcome"]) for a in history] == [(1, "retried"), (2, "retried"), (3, "completed")]
    assert all(a["worker"].endswith(f"-{pid}") for a in history)  # the last run's worker is kept with its result
    assert all(a["started_at"] <= a["finished_at"] for a in history)
    assert job.started_at == history[-1]["started_at"] and job.attempts == 3
    dead = app.get_job(bad.id)
    assert dead.status is Status.DEAD and [a["outcome"] for a in attempts_of(dead)] == ["dead"]
    assert app.get_job(typo.id).attempts == 0

    # And `bananas job` prints them
    shown = subprocess.run([sys.executable, "-m", "bananas.cli", "job", rows.id, "--broker", fleet.url],
                           cwd=fleet.root, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "progress:    10 all rows" in shown.stdout and "  #1  " in shown.stdout
    assert f"  #3  {history[-1]['worker']}  " in shown.stdout and " completed" in shown.stdout
