"""The broker protocol: what every broker plugin implements.

A broker moves opaque job bodies (bytes) between producers and workers. It knows queues, leases, fencing tokens,
delays, retries and dead letters; it does not know the job model (the kernel encodes and decodes bodies).

Semantics every broker must have (the conformance suite in :mod:`bananas.testing` checks each of them):

* **Queues are flat names**, chosen by the router (``high``, ``normal``, ``low``, ``cpu.high`` …). ``fetch`` takes
  queues in priority order and drains them strictly in that order unless the broker documents a weighted option.
* **At-least-once with leases.** ``fetch`` hands out up to ``limit`` deliveries, each leased to the caller until
  ``now + options.lease``. ``renew`` extends live leases. A lease that expires is recovered by ``reap``: the job
  goes back to the head of its queue with ``crashes + 1``, or to the dead letters with reason ``crash_loop`` once
  ``crashes`` reaches ``options.max_crash_deliveries``.
* **Fencing.** Each delivery carries a ``token`` that is unique for that hand-out. ``ack``, ``retry``,
  ``dead_letter``, ``renew`` and ``release`` act only when the token is still the live one, and return ``False``
  otherwise: a worker that lost its lease cannot settle the job.
* **Atomic transitions.** A settle either fully happens or not at all; a crash between two steps never loses or
  duplicates a job.
* **One live copy per id.** Enqueueing an id that is already ready, scheduled or running does nothing; an id whose
  record is completed or dead is enqueued anew.
* **Delays.** An envelope with an ``eta`` in the future waits in the scheduled set until ``move_due`` (run by the
  scheduler loop) moves it to its queue. ``retry`` works the same way.
* **Retention.** Completed records are kept ``options.completed_ttl`` seconds, dead ones ``options.dead_ttl``.
* **Clock.** Every lease, eta and retention comparison uses ``options.clock()`` (Unix seconds), so tests can move
  time. Only ``fetch``'s ``timeout`` is real (monotonic) time; ``timeout=0`` never blocks.
* **When a lease is lost.** A lease counts as lost once ``reap`` has recovered it (or ``release`` gave it back):
  a settle between the lease's expiry and the next ``reap`` may still succeed. ``reap`` returns every job it
  recovered, redelivered or buried as ``crash_loop``.
* **Order** of several jobs released, reaped, moved or requeued in one call is the broker's choice; a retry with
  ``at <= now`` goes to the tail of its queue. Enqueueing a dead id anew removes its dead letter.

Optional capabilities (not part of :class:`Broker`; the kernel looks them up with ``getattr`` on the instance and
falls back to the protocol without them; each keeps every rule above):

* ``enqueue_sync(envelopes, *, generated_ids=()) -> None``: :meth:`Broker.enqueue` blocking the calling thread, with
  no event loop. Thread-safe; raises :class:`~bananas.errors.BrokerUnavailable` like ``enqueue``. The blocking
  producer calls (``app.enqueue``, ``app.enqueue_many``) use it instead of a turn of their private loop.
* ``async enqueue_with_hints(envelopes, *, generated_ids=()) -> None``: :meth:`Broker.enqueue`; used by
  ``app.enqueue_async`` / ``app.enqueue_many_async``.
* ``async ack_and_fetch(deliveries, queues, limit) -> tuple[list[bool], list[Delivery]]``: :meth:`Broker.ack`, then
  take up to ``limit`` ready jobs from ``queues`` without blocking (priority order as in ``fetch``), in one round
  trip where the backend allows. The worker runtime sends the acks of finished jobs along with its next fetch.

``generated_ids`` names the envelopes whose id the kernel generated for this call (a fresh ``uuid4`` hex, never one
the producer gave): no copy of such an id can exist in any queue, so a broker may skip its cross-queue uniqueness
work for them. Explicit ids never appear there and keep the full "one live copy per id" check, including an
explicit re-enqueue of an id the kernel generated earlier. See ``docs/PLUGINS.md`` (Optional capabilities).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import attrs

__all__ = [
    "Broker",
    "BrokerOptions",
    "BrokerSpec",
    "DeadLetter",
    "Delivery",
    "Envelope",
    "JobRecord",
    "QueueDepth",
    "RecordState",
]

Clock = Callable[[], float]


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{attribute.name}: expected a positive number, got {value!r}")


@attrs.frozen(kw_only=True)
class BrokerOptions:
    """Options every broker understands; plugins subclass this (``kw_only``, every field with a default).

    The kernel builds it from ``[broker_options]`` in the config file; durations may be given as ``"30s"``.

    Attributes:
        lease: Seconds a delivery stays leased without a renewal.
        reaper_interval: Seconds between two ``reap`` calls by each worker.
        max_crash_deliveries: Expired leases after which a job is dead-lettered as ``crash_loop``.
        completed_ttl: Seconds a completed job record is kept.
        dead_ttl: Seconds a dead job record (and its dead letter) is kept.
        clock: Returns the current Unix time; tests replace it.
    """

    lease: float = attrs.field(default=30.0, validator=_positive)
    reaper_interval: float = attrs.field(default=5.0, validator=_positive)
    max_crash_deliveries: int = attrs.field(default=3, validator=_positive)
    completed_ttl: float = attrs.field(default=24 * 3600.0, validator=_positive)
    dead_ttl: float = attrs.field(default=7 * 24 * 3600.0, validator=_positive)
    clock: Clock = attrs.field(default=time.time, eq=False, repr=False)


@attrs.frozen
class Envelope:
    """A job body on its way into the broker.

    Attributes:
        id: The job id (one live copy per id).
        queue: The queue the router chose.
        body: The encoded job.
        eta: Unix time before which the job must not run; ``None`` or a past time means now.
    """

    id: str
    queue: str
    body: bytes
    eta: float | None = None


@attrs.frozen
class Delivery:
    """One hand-out of a job to one worker.

    Attributes:
        id: The job id.
        queue: The queue it came from.
        body: The encoded job as last stored (retries store an updated body).
        token: Fencing token of this hand-out; settling with an older token fails.
        deliveries: How many times the job has been handed out, this one included.
        crashes: How many earlier hand-outs ended with an expired lease (the worker died).
    """

    id: str
    queue: str
    body: bytes
    token: int
    deliveries: int = 1
    crashes: int = 0


@attrs.frozen
class DeadLetter:
    """A job that will not be tried again, with the reason it got there."""

    id: str
    queue: str
    body: bytes
    reason: str
    dead_at: float


RecordState = str
"""``"ready"``, ``"scheduled"``, ``"running"``, ``"completed"`` or ``"dead"``."""


@attrs.frozen
class JobRecord:
    """What the broker knows of one job id."""

    id: str
    queue: str
    state: RecordState
    body: bytes
    deliveries: int
    crashes: int
    reason: str | None
    updated_at: float


@attrs.frozen
class QueueDepth:
    """Counts for one queue."""

    ready: int = 0
    scheduled: int = 0
    running: int = 0
    dead: int = 0


@runtime_checkable
class Broker(Protocol):
    """An async broker. One instance belongs to one event loop; the kernel builds one per loop it uses."""

    options: BrokerOptions

    async def connect(self) -> None:
        """Open connections. Raise :class:`~bananas.errors.BrokerUnavailable` if the broker cannot be reached."""
        ...

    async def close(self) -> None:
        """Close connections; calling it twice is harmless."""
        ...

    async def enqueue(self, envelopes: Sequence[Envelope]) -> None:
        """Store every envelope (one round trip where the backend allows). Ready ones go to the tail of their
        queue, future ones to the scheduled set."""
        ...

    async def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        """Lease up to ``limit`` ready jobs from ``queues`` (highest priority first).

        Block up to ``timeout`` seconds until at least one is ready; return ``[]`` on time-out. ``limit`` is the
        caller's free slots: a broker never hands out more.
        """
        ...

    async def renew(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """Extend each live lease to ``now + lease``; ``False`` where the lease was lost."""
        ...

    async def ack(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """Mark each job completed; ``False`` (and no change) where the token is stale."""
        ...

    async def retry(self, delivery: Delivery, *, body: bytes, at: float) -> bool:
        """Store ``body`` (the updated job) and schedule it for Unix time ``at``; ``False`` if the token is stale."""
        ...

    async def dead_letter(self, delivery: Delivery, *, body: bytes, reason: str) -> bool:
        """Move the job to its queue's dead letters with ``reason``; ``False`` if the token is stale."""
        ...

    async def release(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """Give unfinished jobs back to the head of their queues at once (graceful shutdown); no crash is counted."""
        ...

    async def move_due(self, limit: int = 1000) -> int:
        """Move up to ``limit`` scheduled jobs whose time has come to their queues; return how many moved."""
        ...

    async def reap(self) -> int:
        """Recover jobs whose lease expired (see the module docstring); return how many were recovered."""
        ...

    async def depths(self, queues: Sequence[str] | None = None) -> dict[str, QueueDepth]:
        """Counts per queue; all known queues when ``queues`` is ``None``."""
        ...

    async def known_queues(self) -> list[str]:
        """Every queue that has ever received a job (sorted)."""
        ...

    async def lookup(self, job_id: str) -> JobRecord | None:
        """The record of one job, or ``None`` if unknown or expired."""
        ...

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """The newest ``limit`` dead letters of ``queue``, newest first."""
        ...

    async def requeue_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        """Put dead jobs (all, or those in ``ids``) back on ``queue`` with fresh counters; return how many."""
        ...

    async def purge_dead(self, queue: str) -> int:
        """Drop every dead letter of ``queue``; return how many."""
        ...


BrokerFactory = Callable[[str, BrokerOptions], Broker]


@attrs.frozen
class BrokerSpec:
    """What a broker plugin registers.

    Attributes:
        schemes: URL schemes it serves (``("redis", "rediss")``); each may be claimed by one plugin only.
        factory: ``factory(url, options) -> Broker``; must not do I/O (``connect`` does).
        options: The :class:`BrokerOptions` subclass built from ``[broker_options]``.
        summary: One line for ``bananas plugins``.
    """

    schemes: tuple[str, ...] = attrs.field(converter=tuple)
    factory: BrokerFactory = attrs.field(eq=False)
    options: type[BrokerOptions] = BrokerOptions
    summary: str = ""

    @property
    def name(self) -> str:
        return self.schemes[0]
