"""Inspection for producers: a job as its broker record shows it, and waiting for a job's result.

Used by :class:`bananas.app.Bananas` (``get_job``, ``get_result``); it needs no app, only the codec, the broker's
``admin`` capability and the result backend.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from bananas.attempts import completed_attempt
from bananas.broker import Broker, JobRecord, RecordState, SupportsAdmin
from bananas.errors import JobCancelled, JobExpired, JobFailed, JobNotFound, ResultNotStored, ResultTimeout
from bananas.job import Job, Status
from bananas.result_backend import ResultBackend, decode_result
from bananas.serializer import JobCodec
from bananas.units import parse_duration

__all__ = ["STATE_TO_STATUS", "WATCH_INTERVAL", "job_from_record", "wait_for_result"]

WATCH_INTERVAL = 0.5
"""Seconds between two looks at the job's record while waiting for its result: a job that ends without a stored
result ends the wait this soon after (one record lookup per waiter per interval)."""

STATE_TO_STATUS = {
    RecordState.READY: Status.PENDING,
    RecordState.SCHEDULED: Status.SCHEDULED,
    RecordState.RUNNING: Status.RUNNING,
    RecordState.COMPLETED: Status.COMPLETED,
    RecordState.DEAD: Status.DEAD,
    RecordState.CANCELLED: Status.CANCELLED,
    RecordState.EXPIRED: Status.EXPIRED,
}


def job_from_record(codec: JobCodec, record: JobRecord, *, worker: str | None = None) -> Job:
    """The job of a broker record, with its current status, attempts, timestamps and last error. ``worker``: the
    worker of a completed job's last run when known (kept with its result), for the attempt history."""
    job = codec.decode(record.body)
    status = STATE_TO_STATUS.get(record.state, job.status)
    if status is Status.SCHEDULED and job.status is Status.RETRYING:
        status = Status.RETRYING
    if record.state in ("running", "completed"):
        # The stored body is the job as fetched: ack does not rewrite it, so add the run in progress / done.
        job.attempts += 1
        if record.started_at is not None:
            job.started_at = record.started_at
        elif record.state == "running":
            job.started_at = record.updated_at
        if record.state == "completed":
            job.finished_at = record.updated_at
            completed_attempt(job, job.started_at, record.updated_at, worker)
    if record.state in ("cancelled", "expired") and job.finished_at is None:
        job.finished_at = record.updated_at  # cancelled before it ran: the record knows when
    if record.state == "dead" and not job.last_error and record.reason:
        job.last_error = record.reason  # crash loop, malformed body, no handler: no handler error to show
    job.queue = record.queue
    job.status = status
    return job


async def wait_for_result(
    codec: JobCodec,
    broker: Callable[[], Awaitable[Broker]],
    admin: Callable[[Broker], SupportsAdmin | None],
    backend: ResultBackend,
    job_id: str,
    wait: str | float | None = None,
) -> Any:
    """The handler's return value, waiting up to ``wait`` seconds for it (see ``Bananas.get_result_async``).

    ``await broker()`` (the connected broker) and ``admin(broker)`` (its ``admin`` capability) are only called
    when no result is stored yet."""
    try:
        seconds = parse_duration(wait) if wait is not None else 0.0
    except ValueError as exc:
        raise ValueError(f"wait: {exc}") from None
    deadline = time.monotonic() + seconds
    body = await backend.get(job_id)
    if body is None:
        body = await _result_missing(codec, broker, admin, job_id, backend, can_wait=seconds > 0)
    # Block on the backend's completion signal, in slices: between two, the broker's record tells whether the job
    # ended without a stored result (completed with result_ttl=0 or on a worker that stores none, or dead), so the
    # wait ends then instead of at its deadline.
    while body is None and (remaining := deadline - time.monotonic()) > 0:
        body = await backend.get(job_id, wait=min(remaining, WATCH_INTERVAL))
        if body is None and remaining > WATCH_INTERVAL:
            body = await _result_missing(codec, broker, admin, job_id, backend, can_wait=True)
    if body is None:
            body = await _result_missing(codec, broker, admin, job_id, backend, can_wait=False, waited=seconds)
    return decode_result(codec, job_id, body)


async def _result_missing(
    codec: JobCodec,
    connect: Callable[[], Awaitable[Broker]],
    admin_of: Callable[[Broker], SupportsAdmin | None],
    job_id: str,
    backend: ResultBackend,
    *,
    can_wait: bool,
    waited: float = 0.0,
) -> bytes | None:
    """No result was stored: return one stored meanwhile, ``None`` if waiting makes sense, else raise what the
    broker's record explains (:class:`JobNotFound`, :class:`JobFailed` or :class:`ResultTimeout`)."""
    admin = admin_of(broker := await connect())
    if admin is None:  # no record to explain a missing result: keep waiting on the backend, or say so
        body = await backend.get(job_id)
        if body is not None or can_wait:
            return body
        raise ResultTimeout(
            f"no result for job {job_id}{f' within {waited:g}s' if waited else ' yet'} (broker "
            f"{type(broker).__name__} has no 'admin' capability to tell whether it is still running)",
            job_id=job_id,
        )
    record = await admin.lookup(job_id)
    body = await backend.get(job_id)  # the worker stores before it settles: look again after the lookup
    if body is not None:
        return body
    if record is None:
        raise JobNotFound(f"no job with id {job_id!r} (never enqueued here, or its record and result expired)")
    if record.state == "dead":
        job = job_from_record(codec, record)
        error_type, _, message = (job.last_error or "dead").partition(": ")
        raise JobFailed(job_id, error_type, message or (record.reason or ""), job.traceback)
    if record.state == "cancelled":
        raise JobCancelled(job_id)
    if record.state == "expired":
        raise JobExpired(job_id, f"job {job_id} expired before it started; it has no result")
    if record.state == "completed":
        raise ResultNotStored(
            f"job {job_id} completed but no result is stored for it (result_ttl=0, the result expired, or the "
            "worker had no result backend)"
        )
    if can_wait:
        return None
    status = STATE_TO_STATUS.get(record.state, Status.PENDING).value
    if waited:
        raise ResultTimeout(f"no result for job {job_id} within {waited:g}s; the job keeps running ({status})",
                            job_id=job_id)
    raise ResultTimeout(f"job {job_id} has no result yet ({status}); pass wait= to block for it", job_id=job_id)
