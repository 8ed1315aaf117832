"""Issue 4's runtime guarantees on real processes: timeouts, handler exceptions, graceful and forced shutdown, and
the scheduler loop, with ``python -m bananas.cli worker`` subprocesses on a real redis-server.

The app under test (``sigapp.py``, written to the test's directory) appends ``<event> <pid> <key> <unix time>
[<detail>]`` to a file for every handler start, finish and exception (``raised <pid> <key> <t> JobInterrupt``), so
the records survive the processes. Workers get their settings from the environment (``WORKER_MODE``,
``BANANAS_BROKER``, ``SHUTDOWN_TIMEOUT``, ``JOB_TIMEOUT`` …) and from a ``bananas.toml`` in the test's directory
(fast retries, and a 1 s lease with a 0.5 s reaper where a test needs the lease to expire). Every process is
started by the ``harness`` fixture and stopped by pid (SIGTERM, wait, SIGKILL) when the test ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from bananas_redis.e2e import clean_env, wait_until
from bananas_redis.testing import RedisServer, find_redis_servers

from bananas import Bananas, JobFailed, Status

PLUGINS = {
    "BANANAS_LOAD_PLUGINS": "bananas-redis,bananas-mode-scheduler-only"
}
"""The entry points these tests need; the other installed plugins stay out (hermetic workers and producer)."""


APP = textwrap.dedent(
    '''
    """The signals e2e app: sync and async handlers that run long, run short, or raise."""
    import asyncio
    import os
    import time
    from pathlib import Path

    from bananas import Bananas

    LOG = os.environ["TEST_LOG"]
    ERRORS = {"SystemExit": SystemExit, "KeyboardInterrupt": KeyboardInterrupt, "RuntimeError": RuntimeError}

    app = Bananas()


    def record(event, key, detail=""):
        with open(LOG, "a") as f:
            f.write(f"{event} {os.getpid()} {key} {time.time():.6f} {detail}".rstrip() + "\\n")


    def run_number(key):
        """1 on the first run of ``key``, 2 on the next one (in any process)..."""
        marker = Path(LOG).with_name("runs-" + key)
        with open(marker, "a") as f:
            f.write("x")
        return marker.stat().st_size


    @app.job("spin")
    def spin(key, secs, busy=False, again=None):
        """Sync: ``secs`` of a pure-Python busy loop (busy) or of time.sleep in 10 ms steps; ``again`` secs from
        the second run on."""
        if again is not None and run_number(key) > 1:
            secs = again
        record("start", key)
        end = time.monotonic() + secs
        try:
            if busy:
                n = 0
                while time.monotonic() < end:
                    n += 1
            else:
                while time.monotonic() < end:
                    time.sleep(0.01)
        except BaseException as exc:
            record("raised", key, type(exc).__name__)
            raise
        record("done", key)
        return key


    @app.job("nap")
    async def nap(key, secs, again=None):
        """Async: asyncio.sleep(secs); ``again`` secs from the second run on."""
        if again is not None and run_number(key) > 1:
            secs = again
        record("start", key)
        try:
            await asyncio.sleep(secs)
        except BaseException as exc:
            record("raised", key, type(exc).__name__)
            raise
        record("done", key)
        return key


    @app.job("explode")
    def explode(key, error):
        record("start", key)
        raise ERRORS[error](error + " from " + key)


    @app.job("aexplode")
    async def aexplode(key, error):
        record("start", key)
        await asyncio.sleep(0)
        raise ERRORS[error](error + " from " + key)
    '''
)


class Events:
    """The lines the handlers wrote: ``(event, pid, key, time, detail)``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self, event: str | None = None, key: str | None = None) -> list[tuple[str, int, str, float, str]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            parts = line.split(" ", 4)
            if len(parts) < 4:  # a line being written
                continue
            row = (parts[0], int(parts[1]), parts[2], float(parts[3]), parts[4] if len(parts) == 5 else "")
            if (event is None or row[0] == event) and (key is None or row[2] == key):
                out.append(row)
        return out

    def keys(self, event: str, pid: int | None = None) -> list[str]:
        return [row[2] for row in self.rows(event) if pid is None or row[1] == pid]


class Proc:
    """One ``bananas worker`` subprocess, signalled and stopped by its pid."""

    def __init__(self, root: Path, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = root / f"worker-{name}.log"
        cmd = [sys.executable, "-m", "bananas.cli", "worker", "--app", "sigapp"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, sig: int) -> None:
        assert self.alive(), f"worker {self.name} already exited with {self.proc.returncode}\n{self.log()}"
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float) -> tuple[int | None, float]:
        """``(exit status, seconds waited)``; status ``None`` when still running after ``timeout``."""
        started = time.monotonic()
        try:
            code: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - started

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Harness:
    """The test's directory (app, bananas.toml, events), its workers and a producer app on the same Redis."""

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url
        self.events = Events(root / "events.log")
        (root / "sigapp.py").write_text(APP)
        self.configure()
        self.procs: list[Proc] = []
        self._app: Bananas | None = None

    def configure(self, broker_options: str = "") -> None:
        """Write bananas.toml: fast retries, the scheduler every 0.2 s, plus ``[broker_options]`` lines."""
        (self.root / "bananas.toml").write_text(
            textwrap.dedent(
                """
                [worker]
                scheduler_interval = "0.2s"

                [jobs]
                retry_backoff_base = "0.1s"
                retry_backoff_max = "0.2s"

                [broker_options]
                """
            )
            + textwrap.dedent(broker_options)
        )

    @property
    def app(self) -> Bananas:
        """The producer: same Redis (broker and results) and the same bananas.toml as the workers, no handlers."""
        if self._app is None:
            self._app = Bananas(broker=self.url, result_backend=self.url, config=str(self.root / "bananas.toml"),
                                env=PLUGINS)
        return self._app

    def start(self, name: str, **env: str) -> Proc:
        full = {
            **clean_env(),
            **PLUGINS,
            "BANANAS_BROKER": self.url,
            "BANANAS_RESULT_BACKEND": self.url,
            "TEST_LOG": str(self.events.path),
            "LOG_LEVEL": "info",
            "LOG_COLOR": "false",
            **env,
        }
        proc = Proc(self.root, name, full)
        self.procs.append(proc)
        return proc

    def wait_ready(self, *procs: Proc, timeout: float = 30) -> None:
        def ready() -> bool:
            for proc in procs:
                if not proc.alive():
                    raise AssertionError(f"worker {proc.name} exited with {proc.proc.returncode}\n{self.logs()}")
            return all(" started: mode " in proc.log() for proc in procs)

        wait_until(ready, timeout, "the workers to start", self.logs)

    def wait_event(self, event: str, key: str, count: int = 1, timeout: float = 20) -> list[tuple]:
        return wait_until(lambda: (rows := self.events.rows(event, key)) and len(rows) >= count and rows,
                          timeout, f"{count} {event!r} event(s) of {key}", self.logs)

    def record(self, job_id: str) -> Any:
        async def lookup() -> Any:
            return await (await self.app.broker()).lookup(job_id)

        return self.app.run_sync(lookup)

    def settled(self, job_id: str, state: str) -> Any:
        """The broker's record of ``job_id`` once it is in ``state`` (a result is stored before the ack)."""
        return wait_until(lambda: (record := self.record(job_id)) is not None and record.state == state and record,
                          20, f"job {job_id} to be {state}", self.logs)

    def logs(self) -> str:
        events = self.events.path.read_text() if self.events.path.exists() else ""
        workers = "\n".join(f"--- {p.name} (pid {p.pid})\n{p.log()[-4000:]}" for p in self.procs)
        return f"--- events\n{events}\n{workers}"

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
        if self._app is not None:
            self._app.close()


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    servers = find_redis_servers()
    if not servers:  # pragma: no cover - CI installs redis-server
        pytest.skip("no redis-server available")
    server = RedisServer(servers[0][1]).start()
    try:
        yield server.url
    finally:
        server.cleanup()


@pytest.fixture
def harness(tmp_path: Path, redis_url: str) -> Iterator[Harness]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    made = Harness(tmp_path, redis_url)
    try:
        yield made
    finally:
        made.close()


def failure(app: Bananas, job_id: str) -> JobFailed:
    with pytest.raises(JobFailed) as info:
        app.get_result(job_id, wait=10)
    return info.value


def pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- 1. timeouts ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sync_and_async_jobs_over_their_timeout_fail_retry_once_and_die_while_other_jobs_run(harness):
    # Given a thin worker with 4 slots and a 2 s default job timeout (JOB_TIMEOUT)
    worker = harness.start("thin", WORKER_MODE="thin", WORKER_CONCURRENCY="4", JOB_TIMEOUT="2s")
    harness.wait_ready(worker)
    app = harness.app

    # When three 30 s jobs with max_retries=1 run: a sync busy loop and an async sleep with timeout=2 on the job,
    # and a sync sleep in small steps on the worker's JOB_TIMEOUT
    slow = {
        "busy": app.enqueue("spin", {"key": "busy", "secs": 30, "busy": True}, job_id="busy", timeout=2,
                            max_retries=1),
        "steps": app.enqueue("spin", {"key": "steps", "secs": 30}, job_id="steps", max_retries=1),
        "async": app.enqueue("nap", {"key": "async", "secs": 30}, job_id="async", timeout=2, max_retries=1),
    }
    for key in slow:
        harness.wait_event("start", key)

    # ... and quick jobs are enqueued after them
    quick = [app.enqueue("spin", {"key": "quick-sync", "secs": 0}),
             app.enqueue("nap", {"key": "quick-async", "secs": 0})]

    # Then the quick jobs complete while the slow ones are still in their first attempt
    assert [handle.result(timeout=10) for handle in quick] == ["quick-sync", "quick-async"]
    quick_done = max(row[3] for key in ("quick-sync", "quick-async") for row in harness.events.rows("done", key))
    assert all(quick_done < row[3] for row in harness.events.rows("raised")), harness.logs()

    # And each slow job is interrupted after its timeout (JobInterrupt in the sync thread, CancelledError in the
    # coroutine), retried once, and dead after 2 attempts with JobTimeout as its error
    for key in slow:
        harness.wait_event("raised", key, count=2, timeout=30)
    for key, handle in slow.items():
        error = failure(app, handle.id)
        assert (error.error_type, error.message) == ("JobTimeout", f"job {handle.job.name} timed out after 2s")
        job = app.get_job(handle.id)
        assert (job.status, job.attempts) == (Status.DEAD, 2), key
        raised = [row[4] for row in harness.events.rows("raised", key)]
        expected = "CancelledError" if key == "async" else "JobInterrupt"
        assert raised == [expected, expected], (key, raised)
        assert len(harness.events.rows("start", key)) == 2
        assert harness.events.rows("done", key) == []

    # And the worker is still up and still runs jobs
    assert worker.alive()
    assert app.enqueue("nap", {"key": "after", "secs": 0}).result(timeout=10) == "after"
    # (the console writes from its own thread, in batches: the last lines may still be on their way)
    deadline = time.monotonic() + 10
    while worker.log().count(" is dead: failed after 2 attempt(s): JobTimeout") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.log().count(" is dead: failed after 2 attempt(s): JobTimeout") == 3


# -- 2. handler exceptions, SystemExit and KeyboardInterrupt included ------------------------------------------------
def test_system_exit_and_keyboard_interrupt_from_handlers_fail_the_job_not_the_worker(harness):
    # Given a thin worker
    worker = harness.start("thin", WORKER_MODE="thin", WORKER_CONCURRENCY="4")
    harness.wait_ready(worker)
    app = harness.app

    # When sync and async handlers raise SystemExit, KeyboardInterrupt and RuntimeError (no retries)
    handles = {
        (name, error): app.enqueue(name, {"key": f"{name}-{error}", "error": error}, max_retries=0)
        for name in ("explode", "aexplode")
        for error in ("SystemExit", "KeyboardInterrupt", "RuntimeError")
    }

    # Then every job fails for good with the handler's exception as its error
    for (name, error), handle in handles.items():
        failed = failure(app, handle.id)
        assert (failed.error_type, failed.message) == (error, f"{error} from {name}-{error}")
        assert 'raise ERRORS[error](error + " from " + key)' in (failed.traceback or "")
        assert app.get_job(handle.id).status is Status.DEAD

    # And the worker process is still running and completes later jobs, sync and async
    assert worker.alive() and pid_running(worker.pid)
    later = [app.enqueue("spin", {"key": "later-sync", "secs": 0.05}),
             app.enqueue("nap", {"key": "later-async", "secs": 0.05})]
    assert [handle.result(timeout=10) for handle in later] == ["later-sync", "later-async"]
    assert {row[1] for row in harness.events.rows()} == {worker.pid}
    assert worker.alive()


# -- 3. graceful shutdown --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_lets_running_jobs_finish_within_shutdown_timeout_and_exits_0(harness):
    # Given a thin worker with SHUTDOWN_TIMEOUT=10s running a 1 s sync job and a 1 s async job
    worker = harness.start("thin", WORKER_MODE="thin", WORKER_CONCURRENCY="4", SHUTDOWN_TIMEOUT="10s")
    harness.wait_ready(worker)
    app = harness.app
    running = [app.enqueue("spin", {"key": "sync", "secs": 1.0}), app.enqueue("nap", {"key": "async", "secs": 1.0})]
    harness.wait_event("start", "sync")
    harness.wait_event("start", "async")

    # When it gets SIGTERM mid-job, and one more job arrives after the signal
    signalled = time.time()
    worker.send(signal.SIGTERM)
    late = app.enqueue("nap", {"key": "late", "secs": 0})

    # Then the process exits 0 after the running jobs finished, and both are completed (acknowledged)
    code, _ = worker.wait_exit(30)
    assert code == 0, harness.logs()
    for key in ("sync", "async"):
        (done,) = harness.events.rows("done", key)
        assert done[3] > signalled
    for handle in running:
        assert handle.status() is Status.COMPLETED
        assert handle.result() == handle.job.payload["key"]
        assert harness.record(handle.id).deliveries == 1

    # And the job enqueued after the signal was not run: it waits in its queue
    assert harness.events.rows("start", "late") == []
    assert late.status() is Status.PENDING
    assert " stopping; 2 job(s) running" in worker.log()


@pytest.mark.slow
def test_a_job_finishing_in_the_grace_period_is_not_given_back_to_the_broker(harness):
    # Given a worker running a sync job that outlasts the pools' stop (one blocking fetch, 2 s)
    worker = harness.start("thin", WORKER_MODE="thin", WORKER_CONCURRENCY="2", SHUTDOWN_TIMEOUT="10s")
    harness.wait_ready(worker)
    handle = harness.app.enqueue("spin", {"key": "grace", "secs": 3.0})
    harness.wait_event("start", "grace")

    # When it gets SIGTERM and the job finishes within SHUTDOWN_TIMEOUT
    worker.send(signal.SIGTERM)
    code, _ = worker.wait_exit(30)
    assert code == 0, harness.logs()
    assert handle.status() is Status.COMPLETED

    # Then the finished job was acknowledged, not handed back to the broker: no release of a job whose ack is in
    # flight (at commit 02ec805 _shutdown did not wait for the running ack task and logged "gave 1 unfinished job(s)
    # back to the broker" for it; Redis refused that release only because the ack had reached it first)
    assert "gave" not in worker.log(), worker.log()
    assert "lease was lost" not in worker.log()
    record = harness.record(handle.id)
    assert (record.state, record.deliveries) == ("completed", 1)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("async"),
        pytest.param("sync"),
    ],
)
def test_sigterm_past_shutdown_timeout_gives_the_job_back_and_a_new_worker_completes_it(harness, kind):
    # Given a thin worker with SHUTDOWN_TIMEOUT=1s running a 30 s job (0.2 s when it runs again)
    worker = harness.start("first", WORKER_MODE="thin", WORKER_CONCURRENCY="2", SHUTDOWN_TIMEOUT="1s")
    harness.wait_ready(worker)
    name = "nap" if kind == "async" else "spin"
    handle = harness.app.enqueue(name, {"key": "long", "secs": 30, "again": 0.2}, job_id="long")
    harness.wait_event("start", "long")

    # When it gets SIGTERM
    worker.send(signal.SIGTERM)

    # Then it exits within a few seconds (1 s grace + one fetch wait, far below the 30 s of the job) with status 0
    code, waited = worker.wait_exit(10)
    assert code == 0, f"exit status {code} after {waited:.1f}s\n{harness.logs()}"
    assert "gave 1 unfinished job(s) back to the broker" in worker.log()

    # And the job is back at the head of its queue, not finished, delivered once, no crash counted
    assert harness.events.rows("done", "long") == []
    if kind == "async":
        assert [row[4] for row in harness.events.rows("raised", "long")] == ["CancelledError"]
    record = harness.record("long")
    assert (record.state, record.deliveries, record.crashes) == ("ready", 1, 0)
    assert handle.status() is Status.PENDING

    # When a second worker starts, it completes the job: nothing was lost
    second = harness.start("second", WORKER_MODE="thin", WORKER_CONCURRENCY="2")
    assert handle.result(timeout=20) == "long"
    assert [row[1] for row in harness.events.rows("start", "long")] == [worker.pid, second.pid]
    record = harness.settled("long", "completed")
    assert (record.state, record.deliveries, record.crashes) == ("completed", 2, 0)


# -- 4. a second signal forces the exit ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(("second_signal", "name"), [(signal.SIGTERM, "spin"), (signal.SIGINT, "nap")],
                         ids=["SIGTERM-sync", "SIGINT-async"])
def test_a_second_signal_exits_at_once_and_the_lease_recovers_the_job(harness, second_signal, name):
    # Given a 1 s lease and a 0.5 s reaper, and a worker with SHUTDOWN_TIMEOUT=60s running a 30 s job
    harness.configure('lease = "1s"\nreaper_interval = "0.5s"\n')
    worker = harness.start("first", WORKER_MODE="thin", WORKER_CONCURRENCY="2", SHUTDOWN_TIMEOUT="60s")
    harness.wait_ready(worker)
    handle = harness.app.enqueue(name, {"key": "long", "secs": 30, "again": 0.2}, job_id="long")
    harness.wait_event("start", "long")

    # When it gets SIGTERM (and starts its graceful shutdown), then a second signal
    worker.send(signal.SIGTERM)
    first_signal = "signal 15: finishing running jobs (up to 60.0s)"
    wait_until(lambda: first_signal in worker.log(), 10, "the first signal", harness.logs)
    assert worker.alive()
    worker.send(second_signal)

    # Then it exits at once, with a non-zero status, without finishing or giving back the job
    code, waited = worker.wait_exit(10)
    assert code == 1, f"exit status {code} after {waited:.1f}s\n{harness.logs()}"
    assert f"second signal {second_signal.value}: exiting now" in worker.log()
    assert "gave" not in worker.log()
    assert harness.events.rows("done", "long") == []

    # And once its lease expired, a second worker recovers the job and completes it
    second = harness.start("second", WORKER_MODE="thin", WORKER_CONCURRENCY="2")
    assert handle.result(timeout=20) == "long"
    assert [row[1] for row in harness.events.rows("start", "long")] == [worker.pid, second.pid]
    record = harness.settled("long", "completed")
    assert (record.state, record.deliveries, record.crashes) == ("completed", 2, 1)
    assert "recovered 1 job(s)" in second.log()


# -- 5. the scheduler loop -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_delayed_jobs_wait_for_a_scheduler_only_process_when_workers_have_enable_scheduler_false(harness):
    # Given a default worker without its own scheduler loop
    worker = harness.start("worker", WORKER_MODE="default", WORKER_CONCURRENCY="4", ENABLE_SCHEDULER="false")
    harness.wait_ready(worker)
    assert "scheduler off" in worker.log()
    app = harness.app

    # When a delayed job and a ready job are enqueued
    delayed = app.enqueue("nap", {"key": "delayed", "secs": 0}, delay=0.3)
    assert app.enqueue("nap", {"key": "ready", "secs": 0}).result(timeout=10) == "ready"

    # Then the ready job runs, but the delayed one is not run, well past its due time
    time.sleep(2.0)
    assert harness.events.rows("start", "delayed") == []
    assert delayed.status() is Status.SCHEDULED

    # When a scheduler-only process starts
    scheduler = harness.start("scheduler", WORKER_MODE="scheduler-only", SCHEDULER_INTERVAL="0.2s")
    harness.wait_ready(scheduler)

    # Then it moves the job to its queue and the default worker runs it; the scheduler runs no job
    assert delayed.result(timeout=15) == "delayed"
    assert [row[1] for row in harness.events.rows("start", "delayed")] == [worker.pid]
    assert "scheduler on" in scheduler.log() and "pools none" in scheduler.log()

