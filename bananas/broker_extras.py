"""Three optional broker capabilities beside the ones in :mod:`bananas.broker`: the worker registry
(:class:`SupportsWorkerRegistry`, ``bananas workers`` and ``bananas status``), job progress
(:class:`SupportsProgress`, ``current_job().report_progress``) and job control (:class:`SupportsCancellation`,
``client.cancel``, ``bananas cancel`` and the ``expired`` state). Resolved like every capability by
:func:`bananas.broker.capabilities`, which re-exports these names; the conformance kit checks each of them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    from bananas.broker import Delivery

__all__ = ["CANCEL_STATES", "Progress", "SupportsCancellation", "SupportsProgress", "SupportsWorkerRegistry"]

CANCEL_STATES = ("cancelled", "expired")
"""The terminal record states of the ``cancellation`` capability (``RecordState.CANCELLED`` / ``EXPIRED``)."""


@runtime_checkable
class SupportsWorkerRegistry(Protocol):
    """Capability ``worker_registry``: each worker process's heartbeat record, gone ``ttl`` seconds after its last
    publication (a SIGKILLed worker leaves by itself). Records are opaque bytes (the kernel's JSON)."""

    async def publish_worker(self, worker_id: str, record: bytes, ttl: float) -> None:
        """Store (or replace) the record of ``worker_id``, live until ``options.clock() + ttl``."""
        ...

    async def remove_worker(self, worker_id: str) -> None:
        """Drop the record of ``worker_id`` (a worker that stops); unknown ids are ignored."""
        ...

    async def list_workers(self) -> list[bytes]:
        """Every live record (any order); expired ones are never returned."""


@attrs.frozen
class Progress:
    """What a handler last reported (``current_job().report_progress(value, message)``): ``value`` (the handler's
    scale, e.g. 0–1 or items done), ``message`` and the Unix time it was stored."""

    value: float
    message: str | None = None
    updated_at: float = 0.0


@runtime_checkable
class SupportsProgress(Protocol):
    """Capability ``progress``: the last progress of a job, kept at least as long as its record."""

    async def set_progress(self, job_id: str, value: float, message: str | None = None, *,
                           queue: str | None = None) -> None:
        """Store ``value`` / ``message`` as the job's progress (stamped with ``options.clock()``); ``queue`` is the
        job's queue when the caller knows it (a hint; the worker passes it). Unknown jobs keep nothing."""
        ...

    async def progress(self, job_id: str) -> Progress | None:
        """The last stored progress of the job, ``None`` if none."""
        ...


@runtime_checkable
class SupportsCancellation(Protocol):
    """Capability ``cancellation``: stop a job that has not finished, and end a running one in a terminal state of
    its own (``cancelled`` or ``expired``) instead of ``completed`` or ``dead``.

    Rules (the conformance kit checks each): a ``cancelled`` or ``expired`` record is terminal like ``completed``:
    it is kept ``options.completed_ttl`` seconds, never handed out again, counted in no depth, and an enqueue of
    its id stores a new job. Cancelling is atomic with every other transition of the job (a job that is taken and
    cancelled at the same instant either runs with its cancel requested, or never runs).
    """

    async def cancel(self, job_id: str) -> str | None:
        """Cancel ``job_id`` and return the state its record was in before (``None``: no record).

        ``ready`` / ``scheduled``: the record becomes ``cancelled`` at once; the job is never handed out (its
        entry leaves the ready list or the scheduled set). ``running``: the record stays running, with a cancel
        request that :meth:`cancel_requested` reports to the worker holding the lease (which stops the handler and
        calls :meth:`finish`). The request stays with the record until the job ends: a lease that expires or is
        released puts the job back as usual, and its next hand-out reports the request at once (a worker asks
        before it runs a redelivered job). Any other state (``completed``, ``dead``, ``cancelled``, ``expired``):
        nothing changes."""
        ...

    async def cancel_requested(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """For each delivery, ``True`` when its lease is still live and its job has a cancel request (the lease
        heartbeat asks this every beat for the jobs its process runs: keep it one cheap round trip)."""
        ...

    async def finish(self, delivery: Delivery, *, body: bytes, state: str) -> bool:
        """End a running job in ``state`` (one of :data:`CANCEL_STATES`), storing ``body`` (the job as it ended);
        fenced like ``ack``: ``False`` (and no change) when the token is stale."""
        ...
