"""The real worker runtime on real Redis: ``python -m bananas.cli worker`` subprocesses, killed, stopped and
restarted by pid, with a test app written to ``tmp_path``.

Every job appends ``<event> <pid> <job id> <unix time>`` to a file (not to Redis, so the records survive a Redis
restart); the app's ``bananas_job_succeeded`` observer appends ``succeeded <pid> <job id> <attempts>``, which the
kernel only calls when the ack kept its lease. Leases are 1 s and the reaper runs every 0.5 s (``bananas.toml``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from bananas_redis.testing import RedisServer, find_redis_servers, shared_server

from bananas import Bananas, Status

LEASE = 1.0
REAPER = 0.5
PLUGINS = {"BANANAS_LOAD_PLUGINS": "bananas-redis"}
"""Entry points these tests need (the other installed plugins stay out: hermetic apps and workers)."""

APP = textwrap.dedent(
    """
    import os, time
    from bananas import Bananas, hookimpl

    LOG = os.environ["TEST_LOG"]

    def record(*parts):
        with open(LOG, "a") as f:
            f.write(" ".join(str(p) for p in parts) + "\\n")

    class Recorder:
        __name__ = "recorder"

        @hookimpl
        def bananas_job_succeeded(self, job, result, duration):
            record("succeeded", os.getpid(), job.id, job.attempts)

    app = Bananas(plugins=[Recorder()])

    @app.job("work")
    def work(key, secs=0.0):
        record("start", os.getpid(), key, time.time())
        time.sleep(secs)
        record("done", os.getpid(), key, time.time())
        return key

    @app.job("suicide")
    def suicide(key):
        record("start", os.getpid(), key, time.time())
        os.kill(os.getpid(), 9)
    """
)


class Events:
    """The lines the jobs and the observer wrote."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self, kind: str | None = None) -> list[tuple[str, int, str, float]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4 and (kind is None or parts[0] == kind):
                out.append((parts[0], int(parts[1]), parts[2], float(parts[3])))
        return out

    def keys(self, kind: str, pid: int | None = None) -> list[str]:
        return [key for _, p, key, _ in self.rows(kind) if pid is None or p == pid]


class Worker:
    """One ``bananas worker`` subprocess; :meth:`stop` ends it by pid (SIGCONT, SIGTERM, then SIGKILL)."""

    def __init__(self, cwd: Path, env: dict[str, str], name: str) -> None:
        self.log_path = cwd / f"worker-{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "bananas.cli", "worker", "--app", "wapp"]
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGCONT)
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Harness:
    def __init__(self, tmp_path: Path, url: str, **worker_env: str) -> None:
        self.dir = tmp_path
        self.url = url
        self.prefix = f"w{uuid.uuid4().hex[:8]}"
        self.events = Events(tmp_path / "events.log")
        (tmp_path / "wapp.py").write_text(APP)
        (tmp_path / "bananas.toml").write_text(
            textwrap.dedent(
                f"""
                broker = "{url}"

                [worker]
                mode = "thin"
                scheduler_interval = "0.2s"
                shutdown_timeout = "1s"

                [jobs]
                retry_backoff_base = "0.1s"

                [broker_options]
                prefix = "{self.prefix}"
                lease = "{LEASE}s"
                reaper_interval = "{REAPER}s"
                retry_backoff_max = "0.2s"
                """
            )
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("BANANAS_", "WORKER_", "LOG_"))}
        self.env.update(TEST_LOG=str(self.events.path), LOG_LEVEL="info", LOG_COLOR="false", **PLUGINS, **worker_env)
        self.workers: list[Worker] = []
        self.app = Bananas(config=str(tmp_path / "bananas.toml"), env=PLUGINS)

    def worker(self, name: str, **env: str) -> Worker:
        w = Worker(self.dir, {**self.env, **env}, name)
        self.workers.append(w)
        return w

    def enqueue(self, name: str, key: str, **options: Any) -> None:
        self.app.enqueue(name, {"key": key, **options.pop("payload", {})}, job_id=key, **options)

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        self.app.close()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def server_url() -> str:
    label = find_redis_servers()[0][0]  # one binary is enough here: the broker tests cover every server
    return shared_server(label).url


@pytest.fixture
def harness(tmp_path: Path, server_url: str) -> Iterator[Harness]:
    h = Harness(tmp_path, server_url)
    try:
        yield h
    finally:
        h.close()


def _all_logs(h: Harness) -> str:
    return "\n".join(f"--- {w.log_path.name}\n{w.log()}" for w in h.workers)


# -- crash recovery ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_mid_job_is_redelivered_within_lease_plus_reaper(harness):
    # Given a worker with 3 slots running 3 long jobs, and a second worker already up with free slots
    keys = [f"job{i}" for i in range(6)]
    for key in keys[:3]:
        harness.enqueue("work", key, payload={"secs": 3.0})
    first = harness.worker("a", WORKER_CONCURRENCY="3")
    wait_until(lambda: len(harness.events.keys("start", first.pid)) == 3, 15, "3 jobs started on worker a")
    second = harness.worker("b", WORKER_CONCURRENCY="6")
    for key in keys[3:]:
        harness.enqueue("work", key, payload={"secs": 0.1})
    wait_until(lambda: len(harness.events.keys("done", second.pid)) == 3, 15, "worker b up and busy")

    # When the first worker is SIGKILLed mid-job, with no other traffic
    killed = harness.events.keys("start", first.pid)
    first.kill()
    t_kill = time.time()

    # Then every job completes, the killed ones on the second worker within lease + reaper interval (+ slack)
    wait_until(lambda: set(harness.events.keys("done")) == set(keys), 20, "every job done: " + _all_logs(harness))
    restarts = {key: t for _, pid, key, t in harness.events.rows("start") if pid == second.pid and key in killed}
    assert set(restarts) == set(killed)
    delays = [t - t_kill for t in restarts.values()]
    assert max(delays) <= LEASE + REAPER + 1.5, delays  # 1.5 s slack for scheduling on a busy CI machine
    assert min(delays) > 0
    assert "recovered 3 job(s)" in second.log() or "recovered" in second.log()
    for key in keys:
        job = harness.app.get_job(key)
        assert job.status is Status.COMPLETED
    assert sorted(harness.events.keys("succeeded")) == sorted(keys)  # each acked exactly once


@pytest.mark.slow
def test_a_job_five_times_longer_than_the_lease_runs_once(harness):
    # Given a healthy worker and a job that runs 5 leases long
    w = harness.worker("a", WORKER_CONCURRENCY="2")
    harness.enqueue("work", "long", payload={"secs": 5 * LEASE})

    # When it finishes
    wait_until(lambda: harness.events.keys("succeeded"), 15, "the long job: " + _all_logs(harness))

    # Then it ran exactly once: the heartbeat renewed the lease, nobody reaped it
    assert harness.events.keys("start") == ["long"]
    assert harness.events.keys("succeeded", w.pid) == ["long"]
    record = harness.app.run_sync(lambda: _lookup(harness.app, "long"))
    assert (record.state, record.deliveries, record.crashes) == ("completed", 1, 0)
    assert "lease was lost" not in w.log()


async def _lookup(app: Bananas, job_id: str) -> Any:
    return await (await app.broker()).lookup(job_id)


@pytest.mark.slow
def test_a_zombie_whose_lease_was_taken_over_cannot_ack(harness):
    # Given a worker running a job, and a second idle worker
    zombie = harness.worker("zombie", WORKER_CONCURRENCY="1")
    harness.enqueue("work", "contested", payload={"secs": 1.5})
    wait_until(lambda: harness.events.keys("start", zombie.pid), 15, "the job started")
    rescuer = harness.worker("rescuer", WORKER_CONCURRENCY="1")

    # When the first one is frozen past its lease and the second takes the job over and completes it
    zombie.signal(signal.SIGSTOP)
    wait_until(lambda: harness.events.keys("succeeded", rescuer.pid), 20, "the takeover: " + _all_logs(harness))

    # ... and the frozen one wakes up and finishes its (stale) run
    zombie.signal(signal.SIGCONT)
    wait_until(lambda: harness.events.keys("done", zombie.pid), 10, "the zombie to finish its handler")
    lost = "finished but its lease was lost"
    wait_until(lambda: lost in zombie.log(), 10, "the zombie's failed ack: " + zombie.log())

    # Then the zombie's ack was refused: one success, from the new owner; the record is completed once
    assert [pid for _, pid, _, _ in harness.events.rows("succeeded")] == [rescuer.pid]
    record = harness.app.run_sync(lambda: _lookup(harness.app, "contested"))
    assert (record.state, record.deliveries, record.crashes) == ("completed", 2, 1)
    assert zombie.alive() and rescuer.alive()


@pytest.mark.slow
def test_a_job_that_kills_its_worker_becomes_a_crash_loop_dead_letter(harness):
    # Given a job that SIGKILLs whichever worker runs it, and a supervisor that restarts the worker
    harness.enqueue("suicide", "poison")
    deadline = time.monotonic() + 30
    current = harness.worker("0", WORKER_CONCURRENCY="1")
    restarts = 0
    while time.monotonic() < deadline:
        record = harness.app.run_sync(lambda: _lookup(harness.app, "poison"))
        if record is not None and record.state == "dead":
            break
        if not current.alive():
            current.stop()
            restarts += 1
            current = harness.worker(str(restarts), WORKER_CONCURRENCY="1")
        time.sleep(0.05)
    else:
        raise AssertionError("the poison job never reached the dead letters: " + _all_logs(harness))

    # Then after max_crash_deliveries (3) crashes it is dead with reason crash_loop, and the fleet survives
    assert record.reason == "crash_loop"
    assert (record.deliveries, record.crashes) == (3, 3)
    assert len(harness.events.keys("start")) == 3
    assert restarts == 3
    letters = harness.app.run_sync(lambda: _dead_letters(harness.app, "normal"))
    assert [(d.id, d.reason) for d in letters] == [("poison", "crash_loop")]
    harness.enqueue("work", "after")
    wait_until(lambda: harness.events.keys("succeeded"), 15, "a normal job after the crash loop")
    assert current.alive()


async def _dead_letters(app: Bananas, queue: str) -> Any:
    return await (await app.broker()).dead_letters(queue)


# -- Redis restart -------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_every_job_completes_across_a_redis_restart_with_aof(tmp_path):
    label_path = find_redis_servers()[0][1]
    server = RedisServer(label_path, appendonly=True).start()
    h = Harness(tmp_path, server.url)
    try:
        # Given a running worker with jobs in flight
        keys = [f"r{i:02d}" for i in range(30)]
        for key in keys:
            h.enqueue("work", key, payload={"secs": 0.1})
        w = h.worker("a", WORKER_CONCURRENCY="4")
        wait_until(lambda: len(h.events.keys("done")) >= 4, 15, "some jobs done")

        # When Redis is killed and restarted on the same port (AOF replays every acknowledged write)
        server.restart(kill=True)

        # Then the worker recovers and every job completes (at least once; each completed record exactly once)
        wait_until(lambda: set(h.events.keys("done")) >= set(keys), 40, "every job done: " + _all_logs(h))
        wait_until(lambda: all(h.app.get_job(k).status is Status.COMPLETED for k in keys), 10, "records completed")
        assert w.alive()
        # An ack whose reply died with Redis is retried; if the first one had landed, the retry reports the lease
        # lost (README: "a lost ack is reported False although the job completed"), so success hooks may miss a job
        # but never fire twice for one.
        succeeded = h.events.keys("succeeded")
        assert len(succeeded) == len(set(succeeded))
    finally:
        h.close()
        server.cleanup()


# -- priority ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_single_slot_worker_runs_every_high_job_before_any_further_low_job(harness):
    # Given low jobs queued first and a single-slot worker busy with one of them
    lows = [f"low{i}" for i in range(6)]
    highs = [f"high{i}" for i in range(4)]
    for key in lows:
        harness.enqueue("work", key, priority="low", payload={"secs": 0.3})
    w = harness.worker("a", WORKER_CONCURRENCY="1")
    wait_until(lambda: harness.events.keys("start", w.pid), 15, "the first low job")

    # When high jobs arrive after them
    for key in highs:
        harness.enqueue("work", key, priority="high", payload={"secs": 0.05})
    t_high = time.time()

    # Then every high job starts before any low job that had not started yet
    wait_until(lambda: len(harness.events.keys("done")) == len(lows) + len(highs), 20, "every job: " + w.log())
    order = [key for _, _, key, t in sorted(harness.events.rows("start"), key=lambda r: r[3]) if t > t_high]
    assert order[: len(highs)] == highs, order
    assert order[len(highs) :] == [k for k in lows if k in order[len(highs) :]]


# -- dead letters CLI --------------------------------------------------------------------------------------------
def _cli(h: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bananas.cli", "dlq", *args],
        cwd=h.dir,
        env=h.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dlq_list_show_requeue_purge(harness, server_url):
    # Given a worker that dead-letters a failing job (no retries) with its traceback, and one crash-free dead job
    (harness.dir / "wapp.py").write_text(
        APP
        + textwrap.dedent(
            """
            @app.job("boom", max_retries=0)
            def boom(key):
                raise RuntimeError("kaput " + key)
            """
        )
    )
    w = harness.worker("a", WORKER_CONCURRENCY="2")
    harness.enqueue("boom", "b1", max_retries=0)  # the producer has no handler: it sends the retry limit itself
    harness.enqueue("boom", "b2", priority="high", max_retries=0)
    wait_until(lambda: w.log().count("is dead") >= 2, 15, "two dead jobs: " + w.log())
    w.stop()

    # When / Then: list shows both with their queue and reason
    out = _cli(harness, "list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "QUEUE", "DEAD_AT", "REASON"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"b1", "b2"}
    assert " high " in rows["b2"] and " normal " in rows["b1"]
    assert "failed after 1 attempt(s): RuntimeError: kaput b1" in rows["b1"]
    only_high = _cli(harness, "--queue", "high", "list")
    assert [line.split()[0] for line in only_high.stdout.splitlines()[1:]] == ["b2"]

    # show decodes the job with the app's codec: fields, last error and traceback
    shown = _cli(harness, "show", "b1")
    assert shown.returncode == 0, shown.stderr
    assert "reason:      failed after 1 attempt(s): RuntimeError: kaput b1" in shown.stdout
    assert "name:        boom" in shown.stdout
    assert "last_error:  RuntimeError: kaput b1" in shown.stdout
    assert 'raise RuntimeError("kaput " + key)' in shown.stdout

    # user errors exit 2 with one line
    for args in (["show", "nope"], ["requeue"], ["requeue", "b1", "--all"], ["purge"], ["--queue", "zz", "list"]):
        bad = _cli(harness, *args)
        assert bad.returncode == 2, (args, bad.stdout, bad.stderr)
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr

    # requeue one id: it is ready again with fresh counters
    again = _cli(harness, "requeue", "b1")
    assert (again.returncode, again.stdout.strip()) == (0, "requeued 1 job(s)")
    assert harness.app.get_job("b1").status is Status.PENDING
    assert [line.split()[0] for line in _cli(harness, "list").stdout.splitlines()[1:]] == ["b2"]

    # purge --yes drops the rest
    purged = _cli(harness, "purge", "--yes")
    assert (purged.returncode, purged.stdout.strip()) == (0, "purged 1 dead letter(s)")
    assert _cli(harness, "list").stdout.strip() == "no dead letters"

    # requeue --all with nothing left
    assert _cli(harness, "requeue", "--all").stdout.strip() == "requeued 0 job(s)"
    client = redis.Redis.from_url(server_url)
    try:
        assert client.zrange(f"{{{harness.prefix}:normal}}:ready:boom", 0, -1) == [b"b1"]  # requeued, still ready
    finally:
        client.close()
