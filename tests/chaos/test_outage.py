"""Drill 6: a worker started before Redis waits for it; SIGTERM during a Redis outage ends the worker in time."""

from __future__ import annotations

import signal
import time

import pytest
from _support import Drill, report, wait_until

SHUTDOWN_TIMEOUT = 3.0
EXIT_SLACK = 5.0  # one 2 s fetch wait, the 2 s join of stuck handler threads, process exit


@pytest.mark.slow
@pytest.mark.chaos
@pytest.mark.parametrize("processes", [1, 2])
def test_worker_started_before_redis_waits_and_then_runs_jobs(make_drill, record_property, processes):
    started = time.monotonic()
    drill: Drill = make_drill(start_broker=False)
    drill.configure(shutdown_timeout=SHUTDOWN_TIMEOUT)

    # Given a worker whose broker port has no redis-server yet
    worker = drill.worker("worker", concurrency=4, processes=processes)
    time.sleep(3.0)

    # Then it says it is waiting (every process it runs: on a busy machine a child may take longer than 3 s to
    # start) and is still running
    def waiting() -> list[str]:
        return [line for line in worker.log().splitlines() if "waiting for the broker" in line]

    waiting_lines = wait_until(waiting, 30, "a 'waiting for the broker' line", worker.tail)
    assert worker.alive(), f"the worker exited with {worker.proc.returncode} before Redis came up\n{worker.tail()}"

    # When Redis starts on that port and 20 jobs are enqueued
    up_at = time.monotonic()
    drill.broker_server.start()
    drill.wait_started(worker, count=processes, timeout=30)
    connected = time.monotonic() - up_at
    keys = drill.enqueue(f"job-{i:02d}" for i in range(20))

    # Then all of them complete
    drain = drill.wait_completed(keys, timeout=20)
    report(record_property, f"start before redis (--processes {processes})", jobs=len(keys), lost=0,
           waiting_log_lines=len(waiting_lines), connect_after_redis_up_s=connected, drain_s=drain,
           runtime_s=time.monotonic() - started)
    assert waiting_lines, f"the worker logged nothing while waiting for Redis\n{worker.tail()}"


@pytest.mark.slow
@pytest.mark.chaos
@pytest.mark.parametrize("load", ["idle", "busy"])
def test_sigterm_during_a_redis_outage_exits_within_the_shutdown_timeout(drill: Drill, record_property, load):
    started = time.monotonic()
    drill.configure(shutdown_timeout=SHUTDOWN_TIMEOUT, lease=5.0, retry_for=120.0)

    # Given a running worker, idle or busy with 4 jobs of 30 s
    worker = drill.worker("worker", concurrency=4)
    drill.wait_started(worker)
    if load == "busy":
        keys = drill.enqueue((f"long-{i}" for i in range(4)), secs=30.0)
        wait_until(lambda: len(drill.running(worker.pid)) == len(keys), 15, "the 4 long jobs to start", drill.logs)
    else:
        keys = drill.enqueue(["warmup"])
        drill.wait_completed(keys, timeout=15)

    # When Redis dies and, 1 s into the outage, the worker gets SIGTERM
    drill.broker_server.stop(kill=True)
    time.sleep(1.0)
    worker.proc.send_signal(signal.SIGTERM)
    code, took = worker.wait_exit(SHUTDOWN_TIMEOUT + EXIT_SLACK + 20)

    # Then it exits within SHUTDOWN_TIMEOUT + EXIT_SLACK
    report(record_property, f"SIGTERM during outage ({load})", shutdown_s=took,
           bound_s=SHUTDOWN_TIMEOUT + EXIT_SLACK, exit_code=code, runtime_s=time.monotonic() - started)
    assert code is not None, f"the worker did not exit {took:.1f}s after SIGTERM\n{worker.tail()}"
    assert took <= SHUTDOWN_TIMEOUT + EXIT_SLACK, f"exit took {took:.1f}s\n{worker.tail()}"
