"""``bananas demo``: a thin worker on the in-memory broker, with jobs of every priority, a delayed job and a
job that fails, retries and lands in the dead letters. Needs nothing but Python and the installed packages."""

from __future__ import annotations

import time
import uuid
from typing import Any

import click
from loguru import logger

from bananas.app import Bananas
from bananas.hookspecs import hookimpl
from bananas.job import Job
from bananas.worker_mode import WorkerPlan

__all__ = ["run_demo"]


class _Recorder:
    """An observer plugin that prints what happens, in order."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.events: list[tuple[str, str]] = []

    def _say(self, event: str, job: Job, detail: str = "") -> None:
        self.events.append((event, job.name))
        at = time.monotonic() - self.started
        click.echo(f"  {at:6.2f}s  {event:<9} {job.name:<14} {job.priority.value:<6} {detail}")

    @hookimpl
    def bananas_job_started(self, job: Job, pool_id: str) -> None:
        self._say("started", job, f"attempt {job.attempts} on {pool_id}")

    @hookimpl
    def bananas_job_succeeded(self, job: Job, result: Any, duration: float) -> None:
        self._say("done", job, f"→ {result!r}")

    @hookimpl
    def bananas_job_retried(self, job: Job, delay: float) -> None:
        self._say("retrying", job, f"in {delay:.2f}s after {job.last_error}")

    @hookimpl
    def bananas_job_dead(self, job: Job, reason: str) -> None:
        self._say("dead", job, reason)


def run_demo(extra_per_priority: int = 2) -> None:
    started = time.monotonic()
    recorder = _Recorder(started)
    url = f"memory://demo-{uuid.uuid4().hex[:8]}"
    app = Bananas(
        broker=url,
        result_backend=url,
        overrides={
            "worker.mode": "thin",
            "jobs.retry_backoff_base": 0.2,
            "jobs.retry_backoff_max": 1.0,
            "worker.scheduler_interval": 0.1,
        },
        plugins=[recorder],
    )

    @app.job("send_email", priority="high")
    def send_email(to: str, subject: str) -> str:
        time.sleep(0.05)
        return f"sent {subject!r} to {to}"

    @app.job("resize_image")
    async def resize_image(width: int, height: int) -> dict[str, int]:
        return {"width": width // 2, "height": height // 2}

    @app.job("cleanup", priority="low")
    def cleanup(days: int) -> int:
        return days * 3

    @app.job("flaky_payment", max_retries=2)
    def flaky_payment(amount: int) -> None:
        raise RuntimeError(f"card declined for {amount}")

    click.echo("Bananas demo: memory broker, thin worker (5 slots), built-in scheduler\n")
    click.echo("Enqueueing low jobs first, then normal, then high, one delayed 1s and one that always fails:")
    handles = []
    for i in range(extra_per_priority):
        handles.append(app.enqueue("cleanup", {"days": i + 1}))
    for i in range(extra_per_priority):
        handles.append(app.enqueue("resize_image", {"width": 640 * (i + 1), "height": 480}))
    for i in range(extra_per_priority):
        handles.append(app.enqueue("send_email", {"to": f"user{i}@example.com", "subject": "hi"}))
    delayed = app.enqueue("send_email", {"to": "later@example.com", "subject": "delayed"}, delay="1s")
    failing = app.enqueue("flaky_payment", {"amount": 42})
    click.echo(f"  {len(handles) + 2} jobs queued; the worker starts now and takes high before normal before low\n")

    logger.remove()  # the demo tells its own story; `bananas worker` logs through the configured tiers
    plan: WorkerPlan = app.plan("thin")
    worker = app.worker(plan)
    worker.start_in_thread()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        settled = sum(1 for event, _ in recorder.events if event in ("done", "dead"))
        if settled >= len(handles) + 2:
            break
        time.sleep(0.05)
    worker.request_stop()
    time.sleep(0.3)

    click.echo("\nWhat happened:")
    click.echo(f"  delayed job {delayed.id[:8]}: {delayed.status().value}, result {delayed.result(timeout=1)!r}")
    job = app.get_job(failing.id)
    click.echo(f"  failing job {failing.id[:8]}: {job.status.value} after {job.attempts} attempts ({job.last_error})")
    letters = app.run_sync(lambda: _dead(app))
    click.echo(f"  dead-letter queue 'normal': {[(d.id[:8], d.reason) for d in letters]}")
    order = [name for event, name in recorder.events if event == "started"]
    click.echo(f"  start order: {' → '.join(dict.fromkeys(order))}")


async def _dead(app: Bananas) -> list[Any]:
    broker = await app.broker()
    return await broker.dead_letters("normal")
