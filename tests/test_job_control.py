"""Job control (issue 16, point 5, and the last gap of point 8): cancel, expires, duplicate job ids, dlq requeue's
fresh counters, and the worker of a completed job's last run — memory broker, real in-process worker."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bananas import Bananas, Status, current_job
from bananas.attempts import attempts_of
from bananas.errors import JobCancelled, JobExpired, JobNotFound, UsageError
from bananas.metrics.stats import CANCELLED, EXPIRED

MakeApp = Callable[..., Bananas]


def _status(app: Bananas, job_id: str, *wanted: Status) -> Callable[[], bool]:
    return lambda: app.get_job(job_id).status in wanted


# -- cancel ----------------------------------------------------------------------------------------------------------
def test_cancel_a_pending_and_a_scheduled_job_they_never_run(make_app: MakeApp, run_worker: Any,
                                                             wait_for: Any) -> None:
    app = make_app()
    ran: list[str] = []

    @app.job()
    def work(tag: str) -> str:
        ran.append(tag)
        return tag

    pending = work.enqueue(tag="pending")
    scheduled = work.options(delay="1s").enqueue(tag="scheduled")
    assert app.cancel(pending.id) is True
    assert scheduled.cancel() is True
    assert pending.status() is Status.CANCELLED and scheduled.status() is Status.CANCELLED
    control = work.enqueue(tag="control")
    run_worker(app)
    wait_for(_status(app, control.id, Status.COMPLETED))
    time.sleep(1.3)  # past the scheduled job's eta: move_due must skip it
    assert ran == ["control"]
    with pytest.raises(JobCancelled, match=f"job {pending.id} was cancelled"):
        pending.result()
    with pytest.raises(JobCancelled):
        app.get_result(scheduled.id, wait=1)


def test_cancel_a_finished_job_is_a_no_op_and_an_unknown_id_an_error(make_app: MakeApp, run_worker: Any,
                                                                     wait_for: Any) -> None:
    app = make_app()

    @app.job()
    def quick() -> int:
        return 1

    handle = quick.enqueue()
    run_worker(app)
    wait_for(_status(app, handle.id, Status.COMPLETED))
    assert app.cancel(handle.id) is False
    assert handle.status() is Status.COMPLETED and handle.result() == 1
    with pytest.raises(JobNotFound, match="no job with id 'nope'"):
        app.cancel("nope")
    cancelled = quick.options(delay="1h").enqueue()
    assert cancelled.cancel() is True and cancelled.cancel() is False  # cancelled is finished: a second is a no-op


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_cancel_a_running_job_stops_its_handler(make_app: MakeApp, run_worker: Any, wait_for: Any,
                                                kind: str) -> None:
    app = make_app()
    started = threading.Event()
    seen: dict[str, Any] = {}

    if kind == "sync":
        @app.job(timeout="30s")
        def slow() -> str:
            started.set()
            try:
                for _ in range(3000):
                    time.sleep(0.01)
            finally:
                seen["flag"] = current_job().cancelled
            return "finished"
    else:
        @app.job(timeout="30s")
        async def slow() -> str:
            started.set()
            try:
                await asyncio.sleep(30)
            finally:
                seen["flag"] = current_job().cancelled
            return "finished"

    handle = slow.enqueue()
    run_worker(app)
    assert started.wait(10)
    began = time.monotonic()
    assert handle.cancel() is True
    wait_for(_status(app, handle.id, Status.CANCELLED))
    assert time.monotonic() - began < 5  # the heartbeat asks about once a second
    assert seen["flag"] is True
    job = app.get_job(handle.id)
    assert job.status is Status.CANCELLED and job.attempts == 1
    [run] = attempts_of(job)
    assert run["outcome"] == "cancelled" and run["worker"] and run["started_at"] <= run["finished_at"]
    with pytest.raises(JobCancelled):
        handle.result(timeout=2)


def test_a_cancelled_run_is_counted_under_its_own_status(make_app: MakeApp, run_worker: Any,
                                                         wait_for: Any) -> None:
    app = make_app()
    started = threading.Event()

    @app.job()
    async def slow() -> None:
        started.set()
        await asyncio.sleep(30)

    handle = slow.enqueue()
    worker = run_worker(app)
    assert started.wait(10)
    handle.cancel()
    wait_for(_status(app, handle.id, Status.CANCELLED))
    wait_for(lambda: any(k[3] == CANCELLED for k in worker.stats.counts))
    assert [k for k in worker.stats.counts if k[3] == CANCELLED] == [("slow", "normal", "normal", CANCELLED)]


def test_cancel_needs_the_capability() -> None:
    class Bare:
        pass

    from bananas.broker import capabilities

    assert capabilities(Bare()).cancellation is None


# -- expires ---------------------------------------------------------------------------------------------------------
def test_a_job_not_started_before_it_expires_is_dropped_as_expired(make_app: MakeApp, run_worker: Any,
                                                                   wait_for: Any) -> None:
    app = make_app()
    ran: list[str] = []

    @app.job()
    def work(tag: str) -> None:
        ran.append(tag)

    old = work.options(expires=0.2).enqueue(tag="old")
    by_delta = app.enqueue("work", {"tag": "delta"}, expires=timedelta(milliseconds=200))
    fresh = app.enqueue("work", {"tag": "fresh"}, expires=datetime.now(UTC) + timedelta(hours=1))
    time.sleep(0.4)
    worker = run_worker(app)
    wait_for(_status(app, fresh.id, Status.COMPLETED))
    wait_for(_status(app, old.id, Status.EXPIRED))
    wait_for(_status(app, by_delta.id, Status.EXPIRED))
    assert ran == ["fresh"]
    with pytest.raises(JobExpired, match="expired before it started"):
        old.result()
    wait_for(lambda: sum(n for k, n in worker.stats.counts.items() if k[3] == EXPIRED) == 2)


def test_expires_is_checked_at_enqueue(make_app: MakeApp) -> None:
    app = make_app()

    @app.job()
    def work() -> None: ...

    with pytest.raises(ValueError, match="expires: .* naive datetime"):
        work.options(expires=datetime(2030, 1, 1)).enqueue()  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="expires: .* not in the future"):
        work.options(expires=datetime(2020, 1, 1, tzinfo=UTC)).enqueue()
    with pytest.raises(ValueError, match="expires: expected a non-negative duration"):
        work.options(expires=-1).enqueue()
    with pytest.raises(ValueError, match="comes before the job may start"):
        work.options(expires="1m", delay="5m").enqueue()
    with pytest.raises(ValueError, match="expires: expected"):
        work.options(expires=[1]).enqueue()


# -- duplicate job ids -----------------------------------------------------------------------------------------------
def test_a_duplicate_job_id_returns_the_existing_job_flagged(make_app: MakeApp) -> None:
    app = make_app()

    @app.job()
    def send(to: str) -> None: ...

    first = send.options(job_id="order-1").enqueue(to="a@example.com")
    again = send.options(job_id="order-1").enqueue(to="b@example.com")
    assert first.duplicate is False and again.duplicate is True
    assert again.id == "order-1" and again.job.payload == {"to": "a@example.com"}  # what is stored, not what was sent
    assert app.get_job("order-1").payload == {"to": "a@example.com"}
    many = app.enqueue_many([{"name": "send", "payload": {"to": "c"}, "job_id": "order-1"},
                             {"name": "send", "payload": {"to": "d"}}])
    assert [h.duplicate for h in many] == [True, False] and many[0].job.payload == {"to": "a@example.com"}


def test_a_duplicate_job_id_async(make_app: MakeApp) -> None:
    app = make_app()

    @app.job()
    def send(to: str) -> None: ...

    async def go() -> tuple[Any, Any]:
        one = await app.enqueue_async("send", {"to": "x"}, job_id="j-1")
        two = await app.enqueue_async("send", {"to": "y"}, job_id="j-1")
        await app.aclose()
        return one, two

    one, two = asyncio.run(go())
    assert (one.duplicate, two.duplicate, two.job.payload) == (False, True, {"to": "x"})


def test_a_finished_job_id_is_enqueued_anew_not_a_duplicate(make_app: MakeApp) -> None:
    app = make_app()

    @app.job()
    def send(to: str) -> None: ...

    first = send.options(job_id="k", delay="1h").enqueue(to="a")
    assert first.cancel() is True
    again = send.options(job_id="k").enqueue(to="b")
    assert again.duplicate is False and app.get_job("k").payload == {"to": "b"}
    assert app.get_job("k").status is Status.PENDING


# -- point 8: the worker of the last, successful run -----------------------------------------------------------------
def test_the_history_of_a_completed_job_names_the_worker_of_every_run(make_app: MakeApp, run_worker: Any,
                                                                      wait_for: Any) -> None:
    app = make_app()
    calls: list[int] = []

    @app.job(max_retries=2)
    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first time")
        return "ok"

    handle = flaky.enqueue()
    worker = run_worker(app)
    wait_for(_status(app, handle.id, Status.COMPLETED))
    runs = attempts_of(app.get_job(handle.id))
    assert [(r["attempt"], r["outcome"], r["worker"]) for r in runs] == [(1, "retried", worker.id),
                                                                       (2, "completed", worker.id)]
    assert all(r["started_at"] <= r["finished_at"] for r in runs)


def test_cancel_without_the_capability_is_a_usage_error(make_app: MakeApp, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app()
    from bananas.broker import BrokerCapabilities

    monkeypatch.setattr(app, "capabilities", lambda broker: BrokerCapabilities())
    with pytest.raises(UsageError, match="capability 'cancellation'"):
        app.cancel("x")


def test_client_and_async_client_cancel_and_send_expires(make_app: MakeApp) -> None:
    from bananas import AsyncClient, Client

    app = make_app()
    with Client(app=app) as client:
        handle = client.submit_job("report", {"day": 1}, delay="1h", expires="2h")
        assert "expires_at" in handle.job.headers
        assert client.cancel(handle.id) is True and client.cancel(handle.id) is False
        assert client.get_job(handle.id).status is Status.CANCELLED
        with pytest.raises(JobNotFound):
            client.cancel("unknown-id")

    async def go() -> tuple[bool, Status]:
        async with AsyncClient(app=app) as aclient:
            job = await aclient.submit_job("report", {"day": 2}, delay="1h")
            done = await aclient.cancel(job.id)
            return done, (await aclient.get_job(job.id)).status

    assert asyncio.run(go()) == (True, Status.CANCELLED)


_OPS = st.lists(st.tuples(st.sampled_from(["enqueue", "cancel", "fetch", "ack"]), st.sampled_from("abc")),
                max_size=30)


@settings(max_examples=60, deadline=None)
@given(ops=_OPS)
def test_property_a_cancelled_copy_is_never_handed_out(ops: list[tuple[str, str]]) -> None:
    # Any interleaving of enqueue / cancel / fetch / ack on the memory broker: a copy of an id cancelled while it was
    # ready is never fetched (only a later enqueue of the id runs), and cancel reports the state the model expects.
    from bananas.broker import Envelope
    from bananas.builtin.memory_broker import MemoryBroker

    url = f"memory://prop-{uuid.uuid4().hex[:8]}"
    broker = MemoryBroker(url)

    async def run() -> None:
        state: dict[str, str] = {}  # id -> ready | running | completed | cancelled (the model)
        held: dict[str, Any] = {}
        for op, job_id in ops:
            if op == "enqueue":
                [stored] = await broker.enqueue([Envelope(job_id, "q", job_id.encode())])
                assert stored == (state.get(job_id) not in ("ready", "running"))
                if stored:
                    state[job_id] = "ready"
            elif op == "cancel":
                before = await broker.cancel(job_id)
                assert before == state.get(job_id)
                if before == "ready":
                    state[job_id] = "cancelled"
            elif op == "fetch":
                for d in await broker.fetch(["q"], 3, 0):
                    assert state[d.id] == "ready", f"{d.id} was handed out while {state[d.id]}"
                    state[d.id] = "running"
                    held[d.id] = d
            elif job_id in held:
                assert await broker.ack([held.pop(job_id)]) == [True]
                state[job_id] = "completed"

    try:
        asyncio.run(run())
    finally:
        MemoryBroker.reset(url)
