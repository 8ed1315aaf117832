"""The worker runtime on the memory broker: running, retrying, dead letters, timeouts, crashes, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from bananas import Bananas, JobFailed, Status, hookimpl
from bananas.broker import Envelope
from bananas.worker_mode import PoolPlan, WorkerPlan


def one_slot(app: Bananas) -> WorkerPlan:
    queues = app.router.queues(priorities=["high", "normal", "low"])
    return WorkerPlan(mode="test", pools=(PoolPlan("solo", 1, queues, worker_id="solo-1"),), scheduler_interval=0.1)


def dead_letters(app: Bananas, queue: str = "normal") -> list[Any]:
    async def read() -> list[Any]:
        return await (await app.broker()).dead_letters(queue)

    return app.run_sync(read)


def test_sync_and_async_handlers_run_and_store_results(make_app, run_worker, wait_for) -> None:
    # Given an app with a sync and an async handler
    app = make_app()

    @app.job("add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.job("shout")
    async def shout(text: str) -> str:
        await asyncio.sleep(0)
        return text.upper()

    # When jobs are enqueued and a thin worker runs
    first = app.enqueue("add", {"a": 2, "b": 3})
    second = app.enqueue("shout", {"text": "hi"})
    run_worker(app)
    # Then both complete with their results
    assert first.result(timeout=10) == 5
    assert second.result(timeout=10) == "HI"
    # (the result is stored before the ack, so the status may trail it by one batch)
    wait_for(lambda: first.status() is Status.COMPLETED)


def test_high_jobs_run_before_queued_low_jobs_on_a_single_slot(make_app, run_worker, wait_for) -> None:
    # Given low jobs queued first and high jobs after
    app = make_app()
    order: list[str] = []

    @app.job("work")
    def work(tag: str) -> None:
        order.append(tag)

    for i in range(5):
        app.enqueue("work", {"tag": f"low{i}"}, priority="low")
    for i in range(5):
        app.enqueue("work", {"tag": f"high{i}"}, priority="high")
    # When a one-slot worker drains them
    run_worker(app, one_slot(app))
    wait_for(lambda: len(order) == 10)
    # Then every high job ran before any low job
    assert order == [f"high{i}" for i in range(5)] + [f"low{i}" for i in range(5)]


def test_failing_job_retries_then_goes_to_dead_letters_with_reason(make_app, run_worker) -> None:
    # Given a handler that always fails and allows two retries
    app = make_app()
    attempts: list[int] = []

    @app.job("boom", max_retries=2)
    def boom() -> None:
        attempts.append(1)
        raise RuntimeError("kaput")

    handle = app.enqueue("boom")
    # When the worker runs it
    run_worker(app)
    # Then it ran three times, is dead, and its result raises JobFailed with the remote error
    with pytest.raises(JobFailed) as failed:
        handle.result(timeout=10)
    assert failed.value.error_type == "RuntimeError" and failed.value.message == "kaput"
    assert "Traceback" in (failed.value.traceback or "")
    assert len(attempts) == 3
    job = app.get_job(handle.id)
    assert job.status is Status.DEAD and job.attempts == 3 and job.last_error == "RuntimeError: kaput"
    [letter] = dead_letters(app)
    assert letter.id == handle.id and letter.reason == "failed after 3 attempt(s): RuntimeError: kaput"


def test_retried_job_that_then_succeeds_completes(make_app, run_worker) -> None:
    app = make_app()
    calls: list[int] = []

    @app.job("flaky", max_retries=3)
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ValueError("not yet")
        return "ok"

    handle = app.enqueue("flaky")
    run_worker(app)
    assert handle.result(timeout=10) == "ok"
    assert app.get_job(handle.id).attempts == 3


def test_malformed_body_goes_to_dead_letters_at_once(make_app, run_worker, wait_for) -> None:
    # Given garbage bytes in the queue next to a good job
    app = make_app()
    done = threading.Event()

    @app.job("ok")
    def ok() -> None:
        done.set()

    async def put_garbage() -> None:
        await (await app.broker()).enqueue([Envelope("bad-1", "normal", b"\x00not json")])

    app.run_sync(put_garbage)
    app.enqueue("ok")
    # When the worker runs
    run_worker(app)
    # Then the good job ran and the bad one is dead with the reason, without retries
    assert done.wait(10)
    wait_for(lambda: len(dead_letters(app)) == 1)
    [letter] = dead_letters(app)
    assert letter.id == "bad-1" and letter.reason.startswith("malformed job: not a Bananas job frame")


def test_unknown_job_name_is_dead_lettered_not_lost_when_unknown_job_types_is_dead_letter(
    make_app, run_worker, wait_for
) -> None:
    app = make_app(overrides={"worker.unknown_job_types": "dead-letter"})
    handle = app.enqueue("nobody_handles_this")
    run_worker(app)
    wait_for(lambda: len(dead_letters(app)) == 1)
    assert dead_letters(app)[0].reason == "no handler for job 'nobody_handles_this' in this worker"
    assert app.get_job(handle.id).status is Status.DEAD


def test_a_job_type_no_worker_handles_waits_in_its_queue_until_a_worker_with_its_handler_comes(
    make_app, run_worker, wait_for
) -> None:
    # Given a job of a type the running worker has no handler for (the default: unknown_job_types = "wait"),
    # queued ahead of a job it can run
    app = make_app()
    ran: list[str] = []

    @app.job("known")
    def known() -> None:
        ran.append("known")

    waiting = app.enqueue("added_later")
    done = app.enqueue("known")
    worker = run_worker(app)

    # When the worker has run what it can
    wait_for(lambda: app.get_job(done.id).status is Status.COMPLETED)
    time.sleep(0.3)

    # Then the other job is neither run nor dead-lettered: it waits, ready, with no delivery spent
    assert app.get_job(waiting.id).status is Status.PENDING
    assert dead_letters(app) == []
    worker.request_stop()

    # and a worker of the next version, which has the handler, runs it
    @app.job("added_later")
    def added_later() -> None:
        ran.append("added_later")

    run_worker(app)
    wait_for(lambda: app.get_job(waiting.id).status is Status.COMPLETED)
    assert ran == ["known", "added_later"]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_timeouts_fail_the_job_and_follow_the_retry_policy(make_app, run_worker, kind: str) -> None:
    # Given a handler that runs far longer than its 0.2 s timeout, with one retry allowed
    app = make_app()
    starts: list[float] = []

    if kind == "sync":

        @app.job("slow", timeout=0.2, max_retries=1)
        def slow() -> None:
            starts.append(time.monotonic())
            for _ in range(300):  # pure-Python loop: interruptible between bytecodes
                time.sleep(0.01)

    else:

        @app.job("slow", timeout=0.2, max_retries=1)
        async def slow() -> None:
            starts.append(time.monotonic())
            await asyncio.sleep(3)

    handle = app.enqueue("slow")
    # When the worker runs it
    run_worker(app)
    # Then both attempts time out and the job is dead with a timeout error
    with pytest.raises(JobFailed) as failed:
        handle.result(timeout=10)
    assert failed.value.error_type == "JobTimeout"
    assert len(starts) == 2


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt(), MemoryError("big")])
def test_handler_raising_base_exceptions_does_not_kill_the_worker(make_app, run_worker, exc) -> None:
    app = make_app()

    @app.job("evil", max_retries=0)
    def evil() -> None:
        raise exc

    @app.job("after")
    async def after() -> str:
        raise exc

    @app.job("fine")
    def fine() -> str:
        return "still here"

    bad = app.enqueue("evil")
    bad_async = app.enqueue("after", max_retries=0)
    good = app.enqueue("fine")
    run_worker(app)
    assert good.result(timeout=10) == "still here"
    for handle in (bad, bad_async):
        with pytest.raises(JobFailed) as failed:
            handle.result(timeout=10)
        assert failed.value.error_type == type(exc).__name__


def test_delayed_job_waits_for_its_time(make_app, run_worker, wait_for) -> None:
    app = make_app()
    ran_at: list[float] = []

    @app.job("later")
    def later() -> None:
        ran_at.append(time.time())

    handle = app.enqueue("later", delay="0.5s")
    assert handle.status() is Status.SCHEDULED
    run_worker(app)
    wait_for(lambda: bool(ran_at))
    assert ran_at[0] >= handle.job.scheduled_at


def test_graceful_shutdown_lets_running_job_finish(make_app, run_worker, wait_for) -> None:
    # Given a job that is running when the stop request comes
    app = make_app()
    started, finished = threading.Event(), threading.Event()

    @app.job("steady")
    def steady() -> None:
        started.set()
        time.sleep(0.5)
        finished.set()

    handle = app.enqueue("steady")
    worker = run_worker(app)
    assert started.wait(10)
    # When the worker is asked to stop
    worker.request_stop()
    # Then the job finishes and is acknowledged
    assert finished.wait(10)
    wait_for(lambda: app.get_job(handle.id).status is Status.COMPLETED)


def test_shutdown_gives_unfinished_jobs_back(make_app, run_worker, wait_for) -> None:
    # Given a grace period shorter than the running job
    app = make_app(overrides={"worker.shutdown_timeout": 0.2})
    started = threading.Event()

    @app.job("long")
    async def long() -> None:
        started.set()
        await asyncio.sleep(30)

    handle = app.enqueue("long")
    worker = run_worker(app)
    assert started.wait(10)
    # When the worker stops
    worker.request_stop()
    # Then the job is back in its queue, ready for another worker, not lost
    wait_for(lambda: app.get_job(handle.id).status is Status.PENDING)


class Boom:
    """An observer plugin whose hooks raise."""

    calls = 0

    @hookimpl
    def bananas_job_succeeded(self, job: Any, result: Any, duration: float) -> None:
        Boom.calls += 1
        raise RuntimeError("observer bug")


def test_observer_errors_are_logged_once_and_never_fail_jobs(make_app, run_worker, wait_for) -> None:
    # Given an observer that raises on every success
    messages: list[str] = []
    from loguru import logger

    sink = logger.add(lambda m: messages.append(str(m)), level="ERROR")
    app = make_app(plugins=[Boom()])

    @app.job("ok")
    def ok(n: int) -> int:
        return n

    try:
        handles = [app.enqueue("ok", {"n": i}) for i in range(3)]
        run_worker(app)
        # Then every job still completes, the observer ran each time, and the error was logged once
        assert [h.result(timeout=10) for h in handles] == [0, 1, 2]
        wait_for(lambda: Boom.calls >= 3)
    finally:
        logger.remove(sink)
    assert sum("observer bananas_job_succeeded of plugin" in m for m in messages) == 1


def test_hooks_without_implementations_are_skipped(make_app) -> None:
    # Given an app with no observer plugins
    app = make_app()
    observers = app.plugins.observers
    # Then no lifecycle hook is marked as having implementations: notify returns at the first dict lookup
    assert not any(observers.has(name) for name in ("bananas_job_started", "bananas_job_succeeded"))


def test_enqueue_many_and_enqueue_inside_a_loop_needs_async(make_app) -> None:
    app = make_app()
    handles = app.enqueue_many([{"name": "x", "payload": {"i": i}} for i in range(10)])
    assert len({h.id for h in handles}) == 10

    async def inside() -> None:
        app.enqueue("x")

    from bananas.errors import UsageError

    with pytest.raises(UsageError, match="event loop is running"):
        asyncio.run(inside())
