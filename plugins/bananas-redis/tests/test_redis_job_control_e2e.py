"""Job control (issue 16, point 5) on a real redis-server through a real ``bananas worker`` process: a running sync
job and a running async job are cancelled (their handlers see ``current_job().cancelled`` and stop; the jobs end
``cancelled``), a pending job never runs, a job past its ``expires`` is dropped as ``expired``, a duplicate job id
returns the stored job, and ``bananas cancel`` / ``bananas job`` say so."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bananas_redis.e2e import Fleet, clean_env, e2e_fleet, e2e_producer, e2e_server, wait_until
from bananas_redis.testing import RedisServer

from bananas import JobCancelled, JobExpired, Status
from bananas.attempts import attempts_of

pytestmark = pytest.mark.slow

CONTROL_APP = '''
"""The handlers of the job-control test: slow ones that record, in Redis, that they started and how they ended."""
import asyncio
import os
import time

import redis

from bananas import current_job
from e2eapp import app

_r = redis.Redis.from_url(os.environ["REDIS_URL"])


@app.job(timeout="60s")
def slow_sync(tag):
    _r.rpush("ctl:started", tag)
    try:
        for _ in range(6000):
            time.sleep(0.01)
    finally:
        _r.rpush("ctl:ended", f"{tag}:{current_job().cancelled}")
    return tag


@app.job(timeout="60s")
async def slow_async(tag):
    _r.rpush("ctl:started", tag)
    try:
        await asyncio.sleep(60)
    finally:
        _r.rpush("ctl:ended", f"{tag}:{current_job().cancelled}")
    return tag


@app.job()
def quick(tag):
    _r.rpush("ctl:started", tag)
    return tag
'''


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with e2e_server() as server:
        yield server


@pytest.fixture
def fleet(redis_server: RedisServer, tmp_path: Path) -> Iterator[Fleet]:
    with e2e_fleet(redis_server, tmp_path) as made:
        (made.root / "controlapp.py").write_text(textwrap.dedent(CONTROL_APP))
        yield made


@pytest.fixture
def producer(fleet: Fleet) -> Iterator:
    with e2e_producer(fleet) as make:
        yield make


def _cli(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bananas.cli", *args, "--broker", fleet.url], cwd=fleet.root,
                          env=clean_env(), capture_output=True, text=True, timeout=60)


def test_cancel_running_sync_and_async_jobs_through_a_worker_process(fleet, producer):
    # Given a worker process running two slow jobs, one sync and one async
    fleet.start("w1", {"WORKER_MODE": "thin", "SCHEDULER_INTERVAL": "0.1"},
                command=[sys.executable, "-m", "bananas.cli", "worker", "--app", "controlapp"])
    fleet.wait_started("w1")
    app = producer()
    sync_job = app.enqueue("slow_sync", {"tag": "sync"})
    async_job = app.enqueue("slow_async", {"tag": "async"})
    wait_until(lambda: set(fleet.redis.lrange("ctl:started", 0, -1)) == {"sync", "async"}, 30, "both to start",
               fleet.logs)

    # When the producer cancels the sync one and `bananas cancel` the async one
    assert sync_job.cancel() is True
    shown = _cli(fleet, "cancel", async_job.id)
    assert shown.returncode == 0, shown.stderr
    assert f"job {async_job.id} is running: asked its worker to stop it" in shown.stdout

    # Then both handlers see current_job().cancelled and stop, and both jobs end cancelled, each attempt recorded
    wait_until(lambda: sorted(fleet.redis.lrange("ctl:ended", 0, -1)) == ["async:True", "sync:True"], 15,
               "both handlers to stop", fleet.logs)
    for handle in (sync_job, async_job):
        wait_until(lambda h=handle: app.get_job(h.id).status is Status.CANCELLED, 10, "the cancelled state",
                   fleet.logs)
        with pytest.raises(JobCancelled):
            handle.result(timeout=5)
        [run] = attempts_of(app.get_job(handle.id))
        assert run["outcome"] == "cancelled" and run["worker"].endswith(f"-{fleet.procs['w1'].pid}")

    # And cancelling again is a no-op with exit 1; `bananas job` shows the status and the attempt
    again = _cli(fleet, "cancel", sync_job.id)
    assert again.returncode == 1 and again.stderr.strip() == f"job {sync_job.id} is already cancelled: nothing to " \
                                                              "cancel"
    unknown = _cli(fleet, "cancel", "no-such-job")
    assert unknown.returncode == 2 and "no job with id 'no-such-job'" in unknown.stderr
    job = _cli(fleet, "job", sync_job.id)
    assert job.returncode == 0, job.stderr
    assert "status:      cancelled" in job.stdout and "  #1  " in job.stdout and " cancelled " in job.stdout

    # And the worker goes on with other work
    done = app.enqueue("quick", {"tag": "after"})
    assert done.result(timeout=30) == "after"


def test_pending_cancel_expires_and_duplicates_on_redis(fleet, producer):
    # Given jobs sent before any worker runs: one to cancel, one that expires, one duplicate id
    app = producer()
    cancelled = app.enqueue("quick", {"tag": "cancelled"})
    expiring = app.enqueue("quick", {"tag": "expiring"}, expires=0.3)
    first = app.enqueue("quick", {"tag": "first"}, job_id="order-7")
    second = app.enqueue("quick", {"tag": "second"}, job_id="order-7")
    assert (first.duplicate, second.duplicate, second.job.payload) == (False, True, {"tag": "first"})
    assert cancelled.cancel() is True and app.get_job(cancelled.id).status is Status.CANCELLED
    time.sleep(0.5)  # past the expiry of `expiring`

    # When a worker starts
    fleet.start("w1", {"WORKER_MODE": "thin", "SCHEDULER_INTERVAL": "0.1"},
                command=[sys.executable, "-m", "bananas.cli", "worker", "--app", "controlapp"])
    fleet.wait_started("w1")

    # Then the duplicate ran once with the first payload, the cancelled job never ran, the expired one was dropped
    assert first.result(timeout=30) == "first"
    wait_until(lambda: app.get_job(expiring.id).status is Status.EXPIRED, 20, "the expired state", fleet.logs)
    with pytest.raises(JobExpired):
        expiring.result()
    assert fleet.redis.lrange("ctl:started", 0, -1) == ["first"]
    # the console's writer thread writes in batches: wait for the line instead of sampling the log once
    wait_until(lambda: "expired" in fleet.logs(), 10, "the worker's expired line", fleet.logs)
