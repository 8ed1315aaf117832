"""Settlement: the one place that turns an :data:`~bananas.worker.execution.Outcome` into broker calls, result
backend writes, counters and observer calls.

- **Succeeded**: the result is stored (when a result backend is configured; ``result_ttl=0`` stores none), then
  the delivery is acknowledged; a backend with the optional ``stage`` has the broker write the result in the round
  trip of the ack, before it (:mod:`bananas.result_backend`). A value the serializer cannot encode is stored as an
  error record saying why (``UnstorableResult``); the job still completes, so its side effects are never repeated.
  Acks are batched: while one ``ack`` call is in flight the next ones queue up and go in the following call. With a
  broker that has the optional ``ack_and_fetch`` (see :mod:`bananas.broker`), the acks of jobs that finish while
  their pool is about to fetch ride along with that fetch instead (the pool takes them with
  :meth:`Settlement.take_acks`): one round trip for both. A pool blocked in an idle fetch (or a stopping worker)
  still acks at once. ``bananas_job_succeeded`` follows the ack, only for deliveries that still held their lease.
- **Failed**: ``bananas_job_failed``, then a retry with exponential backoff and jitter (``bananas_job_retried``)
  or, past ``max_retries``, the dead letters (``bananas_job_dead``, failure stored in the result backend). The
  handler's retry control decides first (:func:`retry_plan`): ``Retry(delay=…)`` retries on that delay,
  ``Reject(reason)``, ``dont_retry_for`` and errors outside ``retry_for`` go to the dead letters at once, and
  ``retry_backoff`` replaces the ``jobs.retry_backoff_*`` settings. Each run is added to the job's attempt history
  (:mod:`bananas.attempts`) before its body is written back.
- **Cancelled / expired** (issue 16): a run stopped by its cancel request (``Failed`` with
  :class:`~bananas.errors.JobCancelled`) or a job dropped before it ran (:class:`Dropped`: cancelled, or past its
  ``expires``) ends in state ``cancelled`` / ``expired`` through the broker's ``cancellation`` capability
  (``finish``), counted under that status and logged (INFO). No result is stored: waiters get
  :class:`~bananas.errors.JobCancelled` / :class:`~bananas.errors.JobExpired` from the record. A broker without the
  capability cannot hold those states: such a job goes to the dead letters with the reason instead.
- **Rejected** (no handler ran): the dead letters and ``bananas_job_dead(job, reason)``. A job without a handler
  in this worker, or whose payload does not bind to its handler's signature, has its failure stored like any dead
  job. A body that cannot be decoded goes to the dead letters as it came; observers get a placeholder job (see
  :func:`malformed_job`) and nothing is stored for it.
"""

from __future__ import annotations

import asyncio
import random
import time
import traceback
from typing import Any

from loguru import logger

from bananas.attempts import add_attempt
from bananas.broker import Delivery
from bananas.control import Reject, Retry, backoff_delay
from bananas.errors import JobCancelled, SerializationError
from bananas.handlers import HandlerSpec
from bananas.job import Job, Status
from bananas.metrics.stats import CANCELLED, COMPLETED, DEAD, EXPIRED, FAILED, RETRIED
from bananas.result_backend import encode_failure, encode_success, encode_unstorable, ttl_from_headers
from bananas.values import unstorable_reason
from bananas.worker import events
from bananas.worker.context import WorkerContext
from bananas.worker.execution import Dropped, Failed, Outcome, Rejected, Succeeded
from bananas.worker.state import WorkerState, _Slot, error_text

__all__ = ["ACK_DELAY", "MALFORMED_JOB_NAME", "Settlement", "malformed_job", "retry_plan"]

MALFORMED_JOB_NAME = "<malformed>"
"""The ``name`` of the placeholder job observers get for a body that could not be decoded."""

ACK_DELAY = 0.005
"""Seconds an ack waits for its pool's next fetch to take it along (``ack_and_fetch``) before it is sent alone: a
pool running prefetched jobs fetches only when half of them have started. Bounds how late a result shows."""

Ack = tuple[Delivery, Job, Any, float]
"""A finished job waiting for its ack: delivery, job, result, duration."""

log = logger.bind(component="worker", log_source="bananas_internal")


def malformed_job(delivery: Delivery, reason: str) -> Job:
    """The job ``bananas_job_dead`` gets for a body that could not be decoded: ``id`` and ``queue`` of the
    delivery, ``name`` :data:`MALFORMED_JOB_NAME`, empty payload, status ``DEAD``, ``attempts`` 0 and
    ``last_error`` the reason. The body itself stays in the dead letters (``bananas dlq show``)."""
    return Job(name=MALFORMED_JOB_NAME, id=delivery.id or "?", queue=delivery.queue, status=Status.DEAD,
               last_error=reason, finished_at=time.time())


def retry_plan(handler: HandlerSpec | None, error: BaseException) -> tuple[bool, float | None, str | None]:
    """What the handler's retry control says of ``error``: (retry allowed, delay or ``None`` for the backoff,
    reason to dead-letter at once or ``None``). ``max_retries`` still bounds every retry."""
    if isinstance(error, Retry):
        return True, error.delay, None
    if isinstance(error, Reject):
        return False, None, f"rejected: {error.reason}"
    if handler is not None:
        if handler.dont_retry_for and isinstance(error, handler.dont_retry_for):
            return False, None, f"not retried ({type(error).__name__} is in dont_retry_for): {error_text(error)}"
        if handler.retry_for is not None and not isinstance(error, handler.retry_for):
            return False, None, f"not retried ({type(error).__name__} is not in retry_for): {error_text(error)}"
    return True, None, None


class Settlement:
    """Acks, retries, dead letters, stored results and failures, counters and observer calls of one worker."""

    def __init__(self, state: WorkerState) -> None:
        self.state = state
        context: WorkerContext = state.context
        self.codec = context.codec
        self.has_results = context.has_results
        self.results = context.results
        self.backoff = context.backoff
        self.handlers = context.handlers
        self.notify = context.observers.notify
        self.stats = state.stats  # bananas.metrics: counted here, read by the sampler duty
        self.processed = 0
        self.failed = 0
        self.rejected = 0  # malformed bodies, no handler here, payloads that do not fit (not counted as processed)
        self.combined = False  # the broker has ack_and_fetch: pools take pending acks along with their fetches
        self._acks: list[Ack] = []
        self._ack_task: asyncio.Task[None] | None = None
        self._stage: Any = None  # the result backend's optional ``stage`` (False: it has none)
        self._timer: asyncio.TimerHandle | None = None  # sends acks no pool took along within ACK_DELAY

    # -- observers around the run ------------------------------------------------------------------------------
    def started(self, job: Job, pool_id: str) -> None:
        self.notify("bananas_job_started", job=job, process_id=self.state.id, pool_id=pool_id)

    # -- one outcome -----------------------------------------------------------------------------------------------
    async def settle(self, slot: _Slot, pool_id: str, outcome: Outcome) -> None:
        delivery = slot.delivery
        if type(outcome) is Dropped:
            slot.done = True
            await self._end(delivery, outcome.job, outcome.status, outcome.reason, pool_id, ran=False)
            self.state.slots.pop(delivery.id, None)
            return
        if type(outcome) is not Rejected:
            assert slot.job is not None
            self.stats.job_ran(slot.job, delivery.queue, outcome.duration)
        if type(outcome) is Succeeded:
            job = slot.job
            assert job is not None
            value = outcome.value
            events.succeeded(self.state, job, pool_id, outcome.duration)
            if self.has_results:
                await self._store_result(job, value)
            object.__setattr__(job, "status", Status.COMPLETED)
            slot.settling = True
            self._acks.append((delivery, job, value, outcome.duration))
            if slot.solo:  # a recovered job's ack lands before anything else runs in this process
                await self.flush_acks()
                return
            # Its pool's loop fetches again as soon as this slot is free and takes the ack along (ack_and_fetch),
            # unless that loop is blocked in a fetch already, is stopping, or the broker cannot combine: then ack now.
            piggyback = self.combined and pool_id not in self.state._blocked and not self.state._stop_requested()
            if not piggyback:
                self.flush_soon()
            elif self._timer is None:  # a pool busy with prefetched jobs may not fetch soon: acks wait ACK_DELAY
                self._timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._ack_due)
            return
        slot.done = True
        if type(outcome) is Failed and slot.cancelled and type(outcome.error) is JobCancelled:
            assert slot.job is not None
            await self._end(delivery, slot.job, Status.CANCELLED, str(outcome.error), pool_id, ran=True)
        elif type(outcome) is Failed:
            assert slot.job is not None
            await self._fail(delivery, slot.job, outcome.error, pool_id=pool_id, duration=outcome.duration)
        else:
            assert isinstance(outcome, Rejected)
            await self._reject(delivery, outcome, pool_id=pool_id)
        self.state.slots.pop(delivery.id, None)

    # -- acks ------------------------------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return len(self._acks)

    def flush_soon(self) -> None:
        """Send the pending acks now, unless an ack call is in flight (they go in the next one)."""
        if self._acks and (self._ack_task is None or self._ack_task.done()):
            self._ack_task = asyncio.create_task(self.flush_acks())

    def take_acks(self) -> list[Ack]:
        """The pending acks, for a pool to send along with its fetch (``ack_and_fetch``); settle them with
        :meth:`acked`."""
        acks, self._acks = self._acks, []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return acks

    def _ack_due(self) -> None:
        self._timer = None
        self.flush_soon()

    async def flush_acks(self) -> None:
        assert self.state._broker is not None
        while self._acks:
            batch, self._acks = self._acks, []
            try:
                owned = await self.state._broker.ack([item[0] for item in batch])
            except Exception as exc:  # noqa: BLE001 - unacked jobs are redelivered after their lease
                log.error("ack of {count} job(s) failed: {error}; their leases will expire and they run again",
                          count=len(batch), error=error_text(exc))
                owned = [False] * len(batch)
            self.acked(batch, owned)

    async def drain(self) -> None:
        """At shutdown: wait for the ack call in flight (those jobs finished: acked, not released), send the rest."""
        if self._ack_task is not None and not self._ack_task.done():
            await asyncio.gather(self._ack_task, return_exceptions=True)
        await self.flush_acks()

    def acked(self, batch: list[Ack], owned: list[bool]) -> None:
        slots = self.state.slots
        for (delivery, job, value, duration), mine in zip(batch, owned, strict=True):
            slot = slots.pop(delivery.id, None)
            if slot is not None:
                slot.done = True
            self.processed += 1
            if not mine:
                log.warning("job {job_id} finished but its lease was lost; it may run again", job_id=delivery.id)
                continue
            self.stats.count(job.name, job.priority, delivery.queue, COMPLETED)
            self.notify("bananas_job_succeeded", job=job, result=value, duration=duration)

    # -- results, retries, dead letters ---------------------------------------------------------------------------
    async def _store_result(self, job: Job, value: Any) -> None:
        """Store the handler's value. A value the serializer cannot encode never re-runs the job (its side effects
        happened): the job still completes, and the stored result is an error record saying why, which
        ``get_result`` raises as :class:`~bananas.errors.UnstorableResult`."""
        backend = await self.results()
        if backend is None:
            return
        ttl = ttl_from_headers(job.headers) if job.headers else None
        if ttl == 0:  # result_ttl=0: the producer wants no stored result
            return
        try:
            body = encode_success(self.codec, value, self.state.id)
        except SerializationError as exc:
            message = f"result of {job.name} cannot be stored: {unstorable_reason(exc, value)}"
            log.warning("job {job_id}: {message}; the job completed and its stored result is this error",
                        job_id=job.id, message=message, worker_id=self.state.id)
            body = encode_unstorable(self.codec, message)
        stage = self._stage
        if stage is None:  # resolved once: the optional ``stage`` of bananas.result_backend
            stage = self._stage = getattr(backend, "stage", False)
        if stage and stage(job.id, body, ttl, self.state._broker):
            return  # written by the broker before this job's ack, in the same round trip
        await backend.store(job.id, body, ttl)

    async def _fail(self, delivery: Delivery, job: Job, error: BaseException, *, pool_id: str | None = None,
                    duration: float | None = None) -> None:
        broker = self.state._broker
        assert broker is not None
        self.processed += 1
        self.failed += 1
        self.stats.count(job.name, job.priority, delivery.queue, FAILED)
        job.last_error = error_text(error)
        job.traceback = "".join(traceback.format_exception(error)) if error.__traceback__ else job.last_error
        allowed, chosen, reason = retry_plan(self.handlers.get(job.name), error)
        will_retry = allowed and job.attempts <= job.max_retries
        events.failed(self.state, job, pool_id, will_retry, duration)
        self.notify("bananas_job_failed", job=job, error=error, will_retry=will_retry)
        if not will_retry:
            add_attempt(job, self.state.id, "dead", job.last_error)
            await self._bury(delivery, job, reason or f"failed after {job.attempts} attempt(s): {job.last_error}",
                             pool_id)
            return
        if chosen is not None:
            delay = chosen
        else:
            handler = self.handlers.get(job.name)
            backoff = handler.retry_backoff if handler is not None and handler.retry_backoff else self.backoff
            delay = backoff_delay(backoff, job.attempts, random.uniform(0.5, 1.0))
        add_attempt(job, self.state.id, "retried", job.last_error)
        job.status = Status.RETRYING
        job.scheduled_at = time.time() + delay
        if await broker.retry(delivery, body=self.codec.encode(job), at=job.scheduled_at):
            events.retried(self.state, job, pool_id, delay)
            self.stats.count(job.name, job.priority, delivery.queue, RETRIED)
            self.notify("bananas_job_retried", job=job, delay=delay)
        else:
            log.warning("job {job_id} failed but its lease was lost; not retried by this worker", job_id=job.id)

    async def _end(self, delivery: Delivery, job: Job, status: Status, reason: str, pool_id: str | None,
                   *, ran: bool) -> None:
        """The job ends ``cancelled`` or ``expired`` (see the module docstring); ``ran``: its handler was started."""
        broker = self.state._broker
        assert broker is not None
        job.status = status
        job.finished_at = time.time()
        if ran:
            self.processed += 1
            add_attempt(job, self.state.id, status.value, reason)
        control = self.state._caps.cancellation
        if control is not None:
            owned = await control.finish(delivery, body=self.codec.encode(job), state=status.value)
        else:
            owned = await broker.dead_letter(delivery, body=self.codec.encode(job), reason=f"{status.value}: {reason}")
        if not owned:
            log.warning("job {job_id} was {status} but its lease was lost", job_id=job.id, status=status.value)
            return
        self.stats.count(job.name, job.priority, delivery.queue, CANCELLED if status is Status.CANCELLED else EXPIRED)
        events.ended(self.state, job, pool_id, status.value, reason)

    async def _reject(self, delivery: Delivery, rejected: Rejected, pool_id: str | None = None) -> None:
        broker = self.state._broker
        assert broker is not None
        self.rejected += 1
        self.stats.rejected += 1
        if rejected.job is not None:  # decoded, but no handler for it here
            await self._bury(delivery, rejected.job, rejected.reason, pool_id)
            return
        owned = await broker.dead_letter(delivery, body=delivery.body, reason=rejected.reason)
        log.bind(event="dead", pool_id=pool_id, worker_id=self.state.id, worker_type=self.state.plan.mode,
                 queue=delivery.queue, reason=rejected.reason).error(
            "job {job_id} is malformed and went to the dead letters: {detail}", job_id=delivery.id,
            detail=rejected.detail)
        if owned:
            self.stats.count(MALFORMED_JOB_NAME, "unknown", delivery.queue, DEAD)
            self.notify("bananas_job_dead", job=malformed_job(delivery, rejected.reason), reason=rejected.reason)

    async def _bury(self, delivery: Delivery, job: Job, reason: str, pool_id: str | None = None) -> None:
        broker = self.state._broker
        assert broker is not None
        job.status = Status.DEAD
        job.finished_at = time.time()
        if await broker.dead_letter(delivery, body=self.codec.encode(job), reason=reason):
            events.dead(self.state, job, pool_id, reason)
            self.stats.count(job.name, job.priority, delivery.queue, DEAD)
            backend = await self.results() if self.has_results else None
            if backend is not None:
                if job.last_error:
                    error_type, _, message = job.last_error.partition(": ")
                else:  # dead without a handler error (no handler): the reason is the message
                    error_type, message = "DeadLetter", reason
                body = encode_failure(self.codec, error_type, message or reason, job.traceback)
                await backend.store(job.id, body, ttl_from_headers(job.headers) if job.headers else None)
            self.notify("bananas_job_dead", job=job, reason=reason)
