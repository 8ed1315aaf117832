"""Prefetch (``worker.prefetch_multiplier``) on the memory broker: a busy pool of short jobs leases at most
multiplier x slots jobs, the waiting ones keep their leases, go back on stop, honour cancel requests, finished
jobs' acks do not wait for the pool's next fetch, and a pool of long jobs does not prefetch."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from bananas import Bananas, Status
from bananas.broker import BrokerOptions
from bananas.builtin.memory_broker import MemoryBroker
from bananas.worker.pools import PREFETCH_BELOW
from bananas.worker_mode import PoolPlan, WorkerPlan


def pool_of(app: Bananas, slots: int) -> WorkerPlan:
    queues = app.router.queues(priorities=["high", "normal", "low"])
    return WorkerPlan(mode="test", pools=(PoolPlan("p", slots, queues, worker_id="p-1"),), scheduler_interval=0.1)


def warm_up(app: Bananas) -> None:
    """Run a few quick jobs first: a pool prefetches only once its jobs have shown to be short."""
    if "tick" not in app.handlers:
        app.job("tick")(lambda: None)
    for handle in [app.enqueue("tick") for _ in range(30)]:
        handle.result(timeout=10)
    # a blocking fetch that began while ticks still ran asks for fewer jobs: let it end (fetch_wait is 0.2 s here)
    time.sleep(0.5)


def one_running_one_prefetched(app: Bananas, run_worker: Any, wait_for: Any, name: str) -> tuple[Any, Any]:
    """Start a one-slot worker, warm it up, enqueue jobs ``first`` and ``second`` of handler ``name`` together:
    ``first`` runs, ``second`` waits prefetched behind it (both leased)."""
    run_worker(app, pool_of(app, 1))
    warm_up(app)
    first, second = app.enqueue_many([{"name": name, "payload": {"tag": tag}} for tag in ("first", "second")])
    wait_for(lambda: running(app) == 2)
    return first, second


def running(app: Bananas, queue: str = "normal") -> int:
    async def read() -> int:
        return (await (await app.broker()).depths([queue]))[queue].running

    return app.run_sync(read)


def record(app: Bananas, job_id: str) -> Any:
    async def read() -> Any:
        return await (await app.broker()).lookup(job_id)

    return app.run_sync(read)


@pytest.mark.parametrize(("multiplier", "held"), [(1, 2), (2, 4), (3, 6)])
def test_a_busy_pool_leases_at_most_multiplier_times_its_slots_and_runs_every_job_once(
    make_app, run_worker, wait_for, multiplier: int, held: int
) -> None:
    # Given a pool of 2 slots whose jobs block, and more jobs queued than it may hold
    app = make_app(overrides={"worker.prefetch_multiplier": multiplier})
    gate = threading.Event()
    ran: list[int] = []

    @app.job("work")
    def work(n: int) -> None:
        gate.wait(10)
        ran.append(n)

    run_worker(app, pool_of(app, 2))
    warm_up(app)
    handles = app.enqueue_many([{"name": "work", "payload": {"n": n}} for n in range(10)])
    # When both slots are busy
    wait_for(lambda: running(app) == held)
    time.sleep(0.3)  # a pool that overfetched would show it by now
    # Then the pool holds exactly multiplier x slots leases: 2 running, the rest prefetched
    assert running(app) == held
    # And once the jobs can finish, every job runs exactly once
    gate.set()
    for handle in handles:
        handle.result(timeout=10)
    assert sorted(ran) == list(range(10))


def test_prefetched_jobs_keep_their_leases_while_they_wait(make_app, run_worker, wait_for) -> None:
    # Given a 1 s lease, one slot, and a job that runs 2.5 s while another waits prefetched behind it
    app = make_app(overrides={"worker.prefetch_multiplier": 2,
                              "broker_options": {"lease": 1.0, "reaper_interval": 0.2}})
    starts: list[str] = []

    @app.job("slow")
    def slow(tag: str) -> None:
        starts.append(tag)
        if tag == "first":
            time.sleep(2.5)

    first, second = one_running_one_prefetched(app, run_worker, wait_for, "slow")
    # When both finish
    first.result(timeout=10)
    second.result(timeout=10)
    # Then the waiting job was never recovered as if its worker had died: one delivery, no crash, one run
    rec = record(app, second.id)
    assert (rec.deliveries, rec.crashes) == (1, 0)
    assert starts == ["first", "second"]


def test_stopping_gives_prefetched_jobs_back_unstarted(make_app, run_worker, wait_for) -> None:
    # Given one slot running a job and two more prefetched behind it
    app = make_app(overrides={"worker.prefetch_multiplier": 3})
    started = threading.Event()
    starts: list[str] = []

    @app.job("step")
    def step(tag: str) -> None:
        starts.append(tag)
        started.set()
        time.sleep(0.5)

    worker = run_worker(app, pool_of(app, 1))
    warm_up(app)
    handles = app.enqueue_many([{"name": "step", "payload": {"tag": tag}} for tag in ("a", "b", "c")])
    assert started.wait(10)
    wait_for(lambda: running(app) == 3)
    # When the worker stops
    worker.request_stop()
    # Then the running job finishes and the prefetched ones are back in the queue, never started here
    wait_for(lambda: app.get_job(handles[0].id).status is Status.COMPLETED)
    wait_for(lambda: all(app.get_job(h.id).status is Status.PENDING for h in handles[1:]))
    assert starts == ["a"]
    # And the next worker runs them
    run_worker(app, pool_of(app, 1))
    for handle in handles[1:]:
        handle.result(timeout=10)
    assert starts == ["a", "b", "c"]


def test_a_cancelled_prefetched_job_never_runs(make_app, run_worker, wait_for) -> None:
    # Given one slot busy and a job prefetched behind it (short lease: the heartbeat looks every third of it)
    app = make_app(overrides={"worker.prefetch_multiplier": 2, "broker_options": {"lease": 0.6}})
    gate = threading.Event()
    starts: list[str] = []

    @app.job("step")
    def step(tag: str) -> None:
        starts.append(tag)
        gate.wait(10)

    first, second = one_running_one_prefetched(app, run_worker, wait_for, "step")
    # When the waiting job is cancelled, then the running one finishes
    assert second.cancel()
    time.sleep(0.5)  # the heartbeat sees the request
    gate.set()
    # Then the cancelled job ends cancelled without its handler ever running
    wait_for(lambda: app.get_job(second.id).status is Status.CANCELLED)
    first.result(timeout=10)
    assert starts == ["first"]


def test_a_finished_jobs_result_shows_while_the_pool_runs_prefetched_jobs(make_app, run_worker, wait_for) -> None:
    # Given one slot and four jobs: a quick one, then one that blocks, with two more prefetched behind them
    app = make_app(overrides={"worker.prefetch_multiplier": 4})
    gate = threading.Event()

    @app.job("step")
    def step(tag: str) -> str:
        if tag == "blocks":
            gate.wait(10)
        return tag

    run_worker(app, pool_of(app, 1))
    warm_up(app)
    quick, blocking, *rest = app.enqueue_many([{"name": "step", "payload": {"tag": tag}}
                                               for tag in ("quick", "blocks", "r0", "r1")])
    # When the quick job has finished and the blocking one runs (the pool has no reason to fetch again yet)
    # Then the quick job is acknowledged and its result readable anyway (the ack does not wait for a fetch)
    assert quick.result(timeout=10) == "quick"
    wait_for(lambda: app.get_job(quick.id).status is Status.COMPLETED, timeout=2)
    assert app.get_job(blocking.id).status is Status.RUNNING
    gate.set()
    assert [h.result(timeout=10) for h in rest] == ["r0", "r1"]


def test_a_pool_of_long_jobs_fetches_only_for_free_slots(make_app, run_worker, wait_for) -> None:
    # Given prefetch allowed (x3) but jobs that run 50 ms each, well above PREFETCH_BELOW
    app = make_app(overrides={"worker.prefetch_multiplier": 3})
    assert PREFETCH_BELOW < 0.05

    @app.job("long")
    def long() -> None:
        time.sleep(0.05)

    run_worker(app, pool_of(app, 2))
    handles = app.enqueue_many([{"name": "long", "payload": {}} for _ in range(20)])
    # When they drain, Then the pool never holds more leases than slots: a worker that dies takes only what it ran
    peak = 0
    while not all(app.get_job(h.id).status is Status.COMPLETED for h in handles):
        peak = max(peak, running(app))
        time.sleep(0.005)
    assert 1 <= peak <= 2


def test_a_prefetched_job_whose_lease_was_lost_is_not_started_from_the_stale_lease(
    make_app, run_worker, wait_for, memory_url
) -> None:
    # Given one slot busy and a job prefetched behind it (short lease: the heartbeat renews every 0.2 s)
    app = make_app(overrides={"worker.prefetch_multiplier": 2, "broker_options": {"lease": 0.6}})
    gate = threading.Event()
    starts: list[str] = []

    @app.job("step")
    def step(tag: str) -> None:
        starts.append(tag)
        if tag == "first":
            gate.wait(10)

    first, second = one_running_one_prefetched(app, run_worker, wait_for, "step")
    # When another worker's reaper recovers both leases (as if this worker had stopped renewing them)
    later = MemoryBroker(memory_url, BrokerOptions(clock=lambda: time.time() + 100))
    assert app.run_sync(later.reap) == 2
    time.sleep(0.6)  # the heartbeat's next renewal finds both leases lost
    gate.set()
    # Then the prefetched job is not started on its lost lease: it runs once, from a new delivery
    second.result(timeout=10)
    wait_for(lambda: app.get_job(second.id).status is Status.COMPLETED)
    assert starts.count("second") == 1
    assert record(app, second.id).deliveries == 2
