"""The worker's job events (issue 12): one function per event, each with the seed's flat fields bound.

=================  ==========================  ==========================================================
event (``event``)   level                      fields beyond the job's (``job_id``, ``job_name``, …)
=================  ==========================  ==========================================================
``dequeued``       DEBUG                       ``wait_ms`` (time in the queue since the job was due), ``attempt``
                                               (the attempt about to run)
``started``        DEBUG                       ``attempt``
``succeeded``      DEBUG                       ``duration_ms``
``failed``         WARNING (will retry),       ``error``, ``traceback``, ``duration_ms``, ``will_retry``
                   ERROR (last attempt)
``retried``        WARNING                     ``attempt``, ``max_retries``, ``delay_s``
``dead``           ERROR                       ``reason``
``cancelled``      INFO                        ``reason`` (stopped while it ran, or cancelled before it started)
``expired``        INFO                        ``reason`` (not started before its ``expires`` time)
=================  ==========================  ==========================================================

Per-job lines are cheap when their level is off: each function reads one flag of
:data:`bananas.log_context.levels` first and returns before anything is formatted or bound. Every record carries
``worker_id`` (``host-pid``), ``worker_type`` (the mode) and, when known, ``pool_id``.
"""

from __future__ import annotations

import time
from typing import Any

from loguru import logger

from bananas.job import Job
from bananas.log_context import JobScope, levels
from bananas.worker.state import WorkerState

__all__ = ["dead", "dequeued", "ended", "failed", "retried", "started", "succeeded"]

log = logger.bind(component="worker", log_source="bananas_internal")


def _bound(state: WorkerState, job: Job, pool_id: str | None, event: str, **more: Any) -> Any:  # a loguru Logger
    fields = JobScope(job, pool_id, state.id, state.plan.mode).fields()
    fields["event"] = event
    if more:
        fields.update(more)
    return log.bind(**fields)


def _since_due(job: Job, now: float) -> float | None:
    due = max(job.enqueued_at or 0.0, job.scheduled_at or 0.0)
    return round((now - due) * 1000, 3) if due else None


def dequeued(state: WorkerState, job: Job, pool_id: str) -> None:
    """The job was taken from its queue and decoded (DEBUG): ``wait_ms`` from the time it was due to now."""
    if levels.debug:
        wait = _since_due(job, time.time())
        _bound(state, job, pool_id, "dequeued", wait_ms=wait, attempt=job.attempts + 1).debug(
            "job {} ({}) dequeued from {} after {} ms in the queue", job.id, job.name, job.queue, wait)


def started(state: WorkerState, job: Job, pool_id: str) -> None:
    """The handler is about to run (DEBUG)."""
    if levels.debug:
        _bound(state, job, pool_id, "started").debug("job {} ({}) started, attempt {}", job.id, job.name,
                                                      job.attempts)


def succeeded(state: WorkerState, job: Job, pool_id: str, duration: float) -> None:
    """The handler returned (DEBUG): ``duration_ms`` of the handler call."""
    if levels.debug:
        ms = round(duration * 1000, 3)
        _bound(state, job, pool_id, "succeeded", duration_ms=ms).debug(
            "job {} ({}) succeeded in {} ms", job.id, job.name, ms)


def failed(state: WorkerState, job: Job, pool_id: str | None, will_retry: bool, duration: float | None) -> None:
    """The handler raised or timed out: WARNING when it will be retried, ERROR on its last attempt.
    ``error`` and ``traceback`` come from the job (``last_error``, ``traceback``)."""
    if will_retry and not levels.warning:
        return
    bound = _bound(
        state, job, pool_id, "failed", error=job.last_error, traceback=job.traceback, will_retry=will_retry,
        duration_ms=round(duration * 1000, 3) if duration is not None else None)
    bound.log("WARNING" if will_retry else "ERROR", "job {} ({}) failed on attempt {}: {}", job.id, job.name,
              job.attempts, job.last_error)


def retried(state: WorkerState, job: Job, pool_id: str | None, delay: float) -> None:
    """The job goes back to be run again after ``delay`` seconds (WARNING)."""
    if not levels.warning:
        return
    _bound(state, job, pool_id, "retried", max_retries=job.max_retries, delay_s=round(delay, 3)).warning(
        "job {} ({}) failed ({}); retry {}/{} in {:.2f}s", job.id, job.name, job.last_error, job.attempts,
        job.max_retries, delay)


def dead(state: WorkerState, job: Job, pool_id: str | None, reason: str) -> None:
    """The job went to the dead letters (ERROR)."""
    _bound(state, job, pool_id, "dead", reason=reason).error("job {} ({}) is dead: {}", job.id, job.name,
                                                                  reason)


def ended(state: WorkerState, job: Job, pool_id: str | None, status: str, reason: str) -> None:
    """The job ended ``cancelled`` or ``expired`` (INFO): ``event`` is the status."""
    _bound(state, job, pool_id, status, reason=reason).info("job {} ({}) {}: {}", job.id, job.name, status, reason)
