"""The worker runtime around faults, on the memory broker: crash isolation of recovered jobs, reaping at start,
a heartbeat that retries and pauses work while leases cannot be renewed, waiting for the broker at start-up, and
lease-loss warnings that only speak of real losses. (The same faults with real processes and a real Redis are the
drills of ``tests/chaos/``.)"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from loguru import logger

from bananas import Bananas
from bananas.broker import Delivery
from bananas.builtin.memory_broker import MemoryBroker
from bananas.errors import BrokerMisconfigured, BrokerUnavailable
from bananas.worker import runtime
from bananas.worker.runtime import _Heartbeat, _Slot


@pytest.fixture
def logs() -> Iterator[list[str]]:
    """Every log message (WARNING and up) while the test runs."""
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="INFO")
    yield messages
    logger.remove(sink)


def fast(make_app: Callable[..., Bananas], **broker_options: Any) -> Bananas:
    options = {"lease": 0.6, "reaper_interval": 0.1, **broker_options}
    return make_app(overrides={"worker.concurrency": 4, "broker_options": options})


def orphan(app: Bananas, count: int) -> list[Delivery]:
    """Lease ``count`` jobs to a worker that then dies (never renews or settles): a crash, as the broker sees it."""

    async def take() -> list[Delivery]:
        ghost = app.new_broker()
        await ghost.connect()
        got = await ghost.fetch(["normal"], count, 0.0)
        await ghost.close()
        return got

    return app.run_sync(take)


class Concurrency:
    """Records, for every run of a handler, how many runs of any handler were in flight at its start and end."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.runs: list[tuple[str, int]] = []

    def run(self, tag: str, seconds: float) -> None:
        with self.lock:
            self.now += 1
            seen = self.now
        time.sleep(seconds)
        with self.lock:
            seen = max(seen, self.now)
            self.now -= 1
            self.runs.append((tag, seen))


def test_recovered_jobs_on_their_last_chance_run_alone_and_none_is_dead_lettered(
    make_app, run_worker, wait_for, logs
) -> None:
    # Given four jobs leased by a worker that died, one crash short of crash_loop, and six fresh jobs behind them
    app = fast(make_app, max_crash_deliveries=2)
    seen = Concurrency()

    @app.job("work")
    def work(tag: str) -> None:
        seen.run(tag, 0.05)

    for i in range(4):
        app.enqueue("work", {"tag": f"orphan{i}"}, job_id=f"orphan{i}")
    lost = orphan(app, 4)
    assert sorted(d.id for d in lost) == [f"orphan{i}" for i in range(4)]
    for i in range(6):
        app.enqueue("work", {"tag": f"fresh{i}"})
    time.sleep(0.7)  # their leases expire
    # When a four-slot worker starts
    run_worker(app)
    wait_for(lambda: len(seen.runs) == 10)
    # Then every recovered job ran alone (nothing else in flight from its start to its end), all ten completed once
    runs = dict(seen.runs)
    assert sorted(runs) == sorted([f"orphan{i}" for i in range(4)] + [f"fresh{i}" for i in range(6)])
    assert all(runs[f"orphan{i}"] == 1 for i in range(4)), seen.runs
    # and nothing went to the dead letters
    assert app.run_sync(lambda: _dead_count(app)) == 0
    assert any("on their last chance: running them one at a time, alone" in m for m in logs)


def test_a_first_recovery_runs_at_full_concurrency(make_app, run_worker, wait_for) -> None:
    # Given four jobs of a dead worker, recovered with one crash each (three make crash_loop)
    app = fast(make_app, max_crash_deliveries=3)
    seen = Concurrency()

    @app.job("work")
    def work(tag: str) -> None:
        seen.run(tag, 0.3)

    for i in range(4):
        app.enqueue("work", {"tag": f"orphan{i}"})
    orphan(app, 4)
    time.sleep(0.7)
    # When a four-slot worker recovers them, they run side by side (an ordinary crash costs no throughput)
    run_worker(app)
    wait_for(lambda: len(seen.runs) == 4)
    assert max(n for _, n in seen.runs) > 1


async def _dead_count(app: Bananas) -> int:
    return sum(d.dead for d in (await (await app.broker()).depths()).values())


def test_a_job_that_keeps_crashing_alone_is_the_only_one_dead_lettered(make_app, run_worker, wait_for) -> None:
    # Given one poison job among innocent jobs that were running beside it when it killed their worker twice
    # (simulated by orphaning them), and then the poison job killing its worker once more, alone
    app = fast(make_app, max_crash_deliveries=3)
    seen = Concurrency()

    @app.job("work")
    def work(tag: str) -> None:
        seen.run(tag, 0.02)

    for i in range(4):
        app.enqueue("work", {"tag": f"job{i}"}, job_id=f"job{i}")
    for _ in range(2):  # crashes 1 and 2: all four were in the dead process
        orphan(app, 4)
        time.sleep(0.7)
        app.run_sync(lambda: _reap(app))
    again = orphan(app, 1)  # crash 3 of the job at the head, alone
    assert len(again) == 1 and again[0].crashes == 2
    time.sleep(0.7)
    app.run_sync(lambda: _reap(app))
    poison = again[0].id
    # When a worker runs the rest
    run_worker(app)
    wait_for(lambda: len(seen.runs) == 3)
    # Then only the job that crashed three times is dead (crash_loop); the others, charged one crash each, completed
    letters = app.run_sync(lambda: _letters(app))
    assert [(d.id, d.reason) for d in letters] == [(poison, "crash_loop")]
    assert sorted(tag for tag, _ in seen.runs) == sorted(f"job{i}" for i in range(4) if f"job{i}" != poison)
    assert all(n == 1 for _, n in seen.runs), seen.runs


async def _reap(app: Bananas) -> int:
    return await (await app.broker()).reap()


async def _letters(app: Bananas) -> list[Any]:
    return await (await app.broker()).dead_letters("normal")


def test_a_new_worker_reaps_at_start_not_after_a_reaper_interval(make_app, run_worker, wait_for) -> None:
    # Given a job orphaned by a dead worker and a reaper interval far longer than the test
    app = fast(make_app, reaper_interval=3600.0)
    done: list[str] = []

    @app.job("work")
    def work() -> None:
        done.append("x")

    app.enqueue("work")
    orphan(app, 1)
    time.sleep(0.7)
    # When a worker starts, it recovers and runs the job at once
    started = time.monotonic()
    run_worker(app)
    wait_for(lambda: done == ["x"], timeout=5)
    assert time.monotonic() - started < 3


@pytest.fixture
def flaky_connect(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], list[float]]:
    """``flaky_connect(n)``: the next ``n`` ``MemoryBroker.connect`` calls fail as an outage would; returns the
    times of every call."""

    def install(failures: int) -> list[float]:
        calls: list[float] = []
        real = MemoryBroker.connect

        async def connect(self: MemoryBroker) -> None:
            calls.append(time.monotonic())
            if len(calls) <= failures:
                raise BrokerUnavailable(f"memory broker unavailable during connect: outage {len(calls)}")
            await real(self)

        monkeypatch.setattr(MemoryBroker, "connect", connect)
        monkeypatch.setattr(runtime, "CONNECT_BACKOFF", (0.05, 0.1))
        return calls

    return install


def test_a_worker_started_before_its_broker_waits_then_works(make_app, run_worker, wait_for, flaky_connect, logs):
    # Given a broker that is unreachable for the first three connection attempts
    app = fast(make_app)
    done: list[int] = []

    @app.job("work")
    def work(n: int) -> None:
        done.append(n)

    handles = [app.enqueue("work", {"n": n}) for n in range(3)]  # the producer's broker connected before
    calls = flaky_connect(3)
    # When a worker starts, it keeps trying with backoff and says so
    run_worker(app)
    wait_for(lambda: sorted(done) == [0, 1, 2])
    assert len(calls) >= 4
    waiting = [m for m in logs if m.startswith("waiting for the broker")]
    assert len(waiting) == 3 and "outage 1" in waiting[0]
    assert any(m.startswith("broker reachable after") for m in logs)
    assert all(h.result(timeout=5) is None for h in handles)


def test_broker_wait_bounds_the_wait_at_start(make_app, flaky_connect) -> None:
    # Given a broker that never answers and worker.broker_wait = 0.3s
    app = make_app(overrides={"worker.broker_wait": 0.3})
    flaky_connect(10_000)
    worker = app.worker()
    # When the worker runs, it gives up after about the bound with the broker's own error
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="outage"):
        asyncio.run(worker.run())
    assert 0.25 <= time.monotonic() - started < 3


@pytest.mark.parametrize("broker_wait", [0.0, 30.0], ids=["no-bound", "bounded"])
def test_a_misconfigured_broker_fails_the_start_at_once(make_app, monkeypatch, logs, broker_wait) -> None:
    # Given a broker that answers but cannot be used as configured (a wrong password, not that kind of server)
    calls: list[float] = []

    async def connect(self: MemoryBroker) -> None:
        calls.append(time.monotonic())
        raise BrokerMisconfigured("memory broker memory://x unusable (connect): authentication failed")

    monkeypatch.setattr(MemoryBroker, "connect", connect)
    app = make_app(overrides={"worker.broker_wait": broker_wait})
    worker = app.worker()
    # When the worker starts, with no bound on its wait or a long one
    started = time.monotonic()
    with pytest.raises(BrokerMisconfigured, match="authentication failed"):
        asyncio.run(worker.run())
    # Then it tried once and did not wait: retrying cannot help; one error line says why
    assert len(calls) == 1 and time.monotonic() - started < 2
    assert not [m for m in logs if m.startswith("waiting for the broker")]
    assert [m for m in logs if m.startswith("not waiting: retrying cannot help: memory broker")]


def test_a_stop_request_ends_the_wait_for_the_broker(make_app, flaky_connect) -> None:
    app = make_app()
    flaky_connect(10_000)
    worker = app.worker()
    thread = threading.Thread(target=lambda: asyncio.run(worker.run()), daemon=True)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    worker.request_stop()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 2


def test_heartbeat_that_cannot_connect_retries_and_the_worker_takes_no_work_meanwhile(
    make_app, run_worker, wait_for, flaky_connect, logs
) -> None:
    # Given a worker whose first connection works but whose heartbeat's first three attempts fail (a blip at start)
    app = fast(make_app)
    done: list[float] = []

    @app.job("work")
    def work() -> None:
        done.append(time.monotonic())

    app.enqueue("work")
    app.run_sync(lambda: app.broker())  # this thread's broker connects before the outage
    calls = flaky_connect(0)
    failing = {"left": 0}
    real = MemoryBroker.connect

    async def connect(self: MemoryBroker) -> None:
        calls.append(time.monotonic())
        if threading.current_thread().name == "bananas-heartbeat" and failing["left"] > 0:
            failing["left"] -= 1
            raise BrokerUnavailable("memory broker unavailable during connect: heartbeat blip")
        await real(self)

    failing["left"] = 3
    MemoryBroker.connect = connect  # type: ignore[method-assign]  # restored by flaky_connect's monkeypatch
    # When the worker runs
    worker = run_worker(app)
    # Then the heartbeat retried (its thread did not die), the worker said it takes no work, then took the job
    wait_for(lambda: len(done) == 1)
    assert failing["left"] == 0
    assert worker._heartbeat is not None and worker._heartbeat._thread.is_alive()
    assert any(m.startswith("lease renewal failed: BrokerUnavailable") for m in logs)
    assert any(m.startswith("leases cannot be renewed") for m in logs)
    assert any(m.startswith("lease renewal works again") for m in logs)
    paused_at = next(i for i, m in enumerate(logs) if m.startswith("leases cannot be renewed"))
    resumed_at = next(i for i, m in enumerate(logs) if m.startswith("lease renewal works again"))
    assert paused_at < resumed_at


def test_lost_lease_warnings_only_for_jobs_still_running_here(make_app, logs) -> None:
    # Given a worker holding three jobs: one still running, one whose ack is in flight, one already settled
    app = make_app()
    worker = app.worker()
    running, acking, settled = (Delivery(f"j{i}", "normal", b"", token=i) for i in range(3))
    worker.slots = {"j0": _Slot(running), "j1": _Slot(acking, settling=True)}
    heartbeat = _Heartbeat(worker)
    # When a renewal (whose snapshot predates the acks) says none of the three leases is live
    heartbeat._report_lost([running, acking, settled], [False, False, False])
    # Then only the running job is reported
    lost = [m for m in logs if "lease of job" in m]
    assert lost == ["lease of job j0 was lost while it runs here; another worker may run it too"]
