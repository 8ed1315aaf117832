"""The worker's contracts with plugins: what observers get (a frozen ``WorkerInfo``, process and pool ids, a dead
notice for jobs no handler ran), the duties plugins add, and unique pool ids in a plan."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

import attrs
import pytest

from bananas import Bananas, hookimpl
from bananas.broker import Envelope
from bananas.worker import Duty, WorkerInfo
from bananas.worker.settlement import MALFORMED_JOB_NAME
from bananas.worker_mode import PoolPlan, WorkerPlan


class Recorder:
    __name__ = "recorder"

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.dead = threading.Event()

    @hookimpl
    def bananas_worker_started(self, worker: WorkerInfo) -> None:
        self.events.append(("started", worker))

    @hookimpl
    def bananas_worker_stopped(self, worker: WorkerInfo) -> None:
        self.events.append(("stopped", worker))

    @hookimpl
    def bananas_job_started(self, job: Any, process_id: str, pool_id: str) -> None:
        self.events.append(("job", (job.name, process_id, pool_id)))

    @hookimpl
    def bananas_job_dead(self, job: Any, reason: str) -> None:
        self.events.append(("dead", (job, reason)))
        self.dead.set()

    def of(self, kind: str) -> list[Any]:
        return [value for k, value in self.events if k == kind]


def test_observers_get_a_frozen_worker_info_and_process_and_pool_ids(make_app, run_worker, wait_for) -> None:
    # Given an app with a recording observer and a handler
    recorder = Recorder()
    app = make_app(plugins=[recorder])

    @app.job("work")
    def work() -> None:
        pass

    app.enqueue("work")
    # When a worker runs the job and stops
    worker = run_worker(app)
    wait_for(lambda: recorder.of("job"))
    worker.request_stop()
    wait_for(lambda: recorder.of("stopped"))
    # Then the worker hooks got one frozen record of this process, and the job hook both ids
    [info] = recorder.of("started")
    assert recorder.of("stopped") == [info]
    assert isinstance(info, WorkerInfo)
    assert info.process_id == f"{socket.gethostname()}-{os.getpid()}" == worker.id
    assert (info.host, info.pid, info.mode, info.scheduler) == (socket.gethostname(), os.getpid(), "thin", True)
    [pool] = info.pools
    assert (pool.pool_id, pool.name, pool.queues, pool.job_types) == ("thin-1", "thin", ("high", "normal", "low"),
                                                                       None)
    assert pool.concurrency == info.concurrency
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        info.mode = "other"  # type: ignore[misc]
    assert recorder.of("job") == [("work", info.process_id, "thin-1")]


def test_malformed_and_unhandled_jobs_notify_dead_observers(make_app, run_worker, wait_for) -> None:
    # Given garbage bytes and a job without a handler in the queue (a worker that dead-letters unknown types)
    recorder = Recorder()
    app = make_app(plugins=[recorder], overrides={"worker.unknown_job_types": "dead-letter"})

    async def put_garbage() -> None:
        await (await app.broker()).enqueue([Envelope("bad-1", "normal", b"\x00not json")])

    app.run_sync(put_garbage)
    handle = app.enqueue("nobody_handles_this")
    # When the worker runs
    worker = run_worker(app)
    wait_for(lambda: len(recorder.of("dead")) == 2)
    # Then both went to bananas_job_dead with their reason; the malformed one with a placeholder job
    dead = {job.id: (job, reason) for job, reason in recorder.of("dead")}
    placeholder, reason = dead["bad-1"]
    assert reason.startswith("malformed job: not a Bananas job frame")
    assert (placeholder.name, placeholder.queue, placeholder.payload, placeholder.attempts) == (
        MALFORMED_JOB_NAME, "normal", {}, 0)
    assert placeholder.status.value == "dead" and placeholder.last_error == reason
    job, reason = dead[handle.id]
    assert (job.name, reason) == ("nobody_handles_this", "no handler for job 'nobody_handles_this' in this worker")
    # No handler ran for either: not counted as processed, no job_started
    assert recorder.of("job") == []
    assert worker.processed == 0 and worker.settlement.rejected == 2


class DutyPlugin:
    __name__ = "duty-plugin"

    def __init__(self) -> None:
        self.runs: dict[str, int] = {"every": 0, "leader": 0, "later": 0}
        self.seen: list[WorkerInfo] = []

    @hookimpl
    def bananas_worker_duties(self, worker: WorkerInfo) -> list[Duty]:
        self.seen.append(worker)

        def count(name: str) -> Any:
            async def run(broker: Any) -> None:
                self.runs[name] += 1
                if name == "every" and self.runs[name] == 1:
                    raise RuntimeError("a failing run is logged, the duty goes on")

            return run

        return [
            Duty("every", 0.05, count("every")),
            Duty("leader", 0.05, count("leader"), needs_leader=True),
            Duty("later", 60.0, count("later"), at_start=False),
        ]


@pytest.mark.parametrize("scheduler", [True, False])
def test_plugin_duties_run_periodically_and_leader_duties_only_with_the_scheduler(
    make_app, run_worker, wait_for, scheduler: bool
) -> None:
    # Given a plugin that adds three duties
    plugin = DutyPlugin()
    app = make_app(plugins=[plugin])
    plan = attrs.evolve(app.plan(), scheduler=scheduler)
    # When a worker runs
    run_worker(app, plan)
    # Then the plain duty runs at start and again after a failure; the leader duty only where the scheduler runs
    wait_for(lambda: plugin.runs["every"] >= 3)
    assert plugin.seen[0].scheduler is scheduler
    if scheduler:
        wait_for(lambda: plugin.runs["leader"] >= 2)
    else:
        assert plugin.runs["leader"] == 0
    assert plugin.runs["later"] == 0  # not at start, and its interval has not passed


def test_duty_specs_are_checked() -> None:
    async def run(broker: Any) -> None:
        pass

    with pytest.raises(ValueError, match="interval must be positive"):
        Duty("bad", 0, run)


def test_a_plugin_returning_something_else_than_duties_is_an_error(make_app) -> None:
    class Wrong:
        __name__ = "wrong"

        @hookimpl
        def bananas_worker_duties(self, worker: WorkerInfo) -> Any:
            return ["not a duty"]

    app = make_app(plugins=[Wrong()])
    with pytest.raises(Exception, match="not a bananas.worker.Duty"):
        app.worker_context().duties(WorkerInfo.of(app.plan()))


def test_pool_ids_are_unique_in_a_plan_and_default_to_the_pool_name() -> None:
    assert PoolPlan("high", 2, ["high"]).pool_id == "high"
    assert PoolPlan("high", 2, ["high"], worker_id="high-1").pool_id == "high-1"
    with pytest.raises(ValueError, match="used more than once: a-1"):
        WorkerPlan("x", (PoolPlan("a", 1, ["high"], worker_id="a-1"), PoolPlan("b", 1, ["low"], worker_id="a-1")))


def test_the_worker_gets_a_context_not_the_app(make_app) -> None:
    app: Bananas = make_app()
    worker = app.worker()
    assert not hasattr(worker, "app")
    assert worker.context.codec is app.codec and worker.context.handlers is app.handlers
