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
  record is completed, dead, cancelled or expired is enqueued anew. ``enqueue`` (and its fast lanes) may return
  one flag per envelope (``False``: a live copy existed, nothing was stored) or ``None`` (the broker does not say);
  the kernel hands a producer the existing job's handle, flagged ``duplicate``, for each ``False``.
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

Protocol 0.2: a small **core** (:class:`Broker`) plus **optional capabilities**, each its own
:class:`typing.Protocol`. The kernel resolves them once, when it builds the broker (:func:`capabilities`, stored with
the broker by ``app.new_broker()`` / ``app.broker()``), never per call; every capability keeps every rule above:

* **maintenance** (:class:`SupportsMaintenance`: ``reap``, ``move_due``): crash recovery and delayed jobs. A broker
  without it is usable, but nothing recovers the jobs of a worker that died (their leases never expire into the
  queue again) and jobs with an ``eta`` or a retry delay only become ready if the broker moves them by itself. The
  worker logs this at start instead of failing.
* **admin** (:class:`SupportsAdmin`: ``known_queues``, ``lookup``, ``dead_letters``, ``requeue_dead``,
  ``purge_dead``): inspection and dead-letter handling (``app.get_job``, ``app.get_result``'s explanations, the CLI).
  Without it those calls raise :class:`~bananas.errors.UsageError` naming the capability (:func:`require_admin`).
* **schedules** (:class:`~bananas.broker_schedules.SupportsSchedules`: the scheduler's fenced leader lease, the
  per-tick guard and the state of periodic jobs; see :mod:`bananas.broker_schedules`). Without it every worker that
  runs the scheduler runs the leader duties (there is no election) and periodic jobs do not run.
* **progress** (:class:`SupportsProgress`: ``set_progress``, ``progress``): the last progress a handler reported,
  kept with the job's record (``current_job().report_progress``, ``handle.progress()``, ``bananas job``).
* **cancellation** (:class:`SupportsCancellation`: ``cancel``, ``cancel_requested``, ``finish``): job control
  (``client.cancel``, ``bananas cancel``, records in state ``cancelled`` / ``expired``); see
  :mod:`bananas.broker_extras`.
* **fast lanes**, each optional on its own; without them the kernel uses the core ``enqueue`` / ``ack`` + ``fetch``:

  - ``enqueue_sync(envelopes, *, generated_ids=())`` (:class:`SupportsEnqueueSync`): ``enqueue`` blocking
    the calling thread, with no event loop. Thread-safe; raises :class:`~bananas.errors.BrokerUnavailable` like
    ``enqueue``. The blocking producer calls (``app.enqueue``, ``app.enqueue_many``) use it.
  - ``async enqueue_with_hints(envelopes, *, generated_ids=())`` (:class:`SupportsEnqueueWithHints`):
    ``enqueue``; used by ``app.enqueue_async`` / ``app.enqueue_many_async`` when the kernel generated some ids.
  - ``async ack_and_fetch(deliveries, queues, limit) -> tuple[list[bool], list[Delivery]]``
    (:class:`SupportsAckAndFetch`): ``ack``, then take up to ``limit`` ready jobs from ``queues`` without blocking
    (priority order as in ``fetch``), in one round trip where the backend allows. The worker runtime sends the acks
    of finished jobs along with its next fetch.
* **worker_registry** (:class:`SupportsWorkerRegistry`: ``publish_worker``, ``remove_worker``, ``list_workers``): the
  live worker registry (``bananas workers``, ``bananas status``, ``bananas_workers_alive``). Records are opaque
  bytes with a time to live, measured with ``options.clock()``.

**Typed fetches** (:mod:`bananas.broker_types`): a broker whose ``fetch`` (and ``ack_and_fetch``) take ``job_types``
hands out only jobs of those types (``Envelope.job_type``), never popping or reordering others.

A capability counts only when *every* method of it is present; a broker with some of them is reported as partial
(:attr:`BrokerCapabilities.partial`) and treated as not having it.

``generated_ids`` names the envelopes whose id the kernel generated for this call (a fresh ``uuid4`` hex, never one
the producer gave): no copy of such an id can exist in any queue, so a broker may skip its cross-queue uniqueness
work for them. Explicit ids never appear there and keep the full "one live copy per id" check, including an
explicit re-enqueue of an id the kernel generated earlier. See ``docs/PLUGINS.md`` (Broker protocol 0.2).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from bananas.broker_extras import Progress, SupportsCancellation, SupportsProgress, SupportsWorkerRegistry
from bananas.broker_schedules import SCHEDULE_METHODS, SCHEDULES, LeaderLease, SupportsSchedules
from bananas.broker_types import accepts_job_types
from bananas.errors import UsageError

__all__ = [
    "ADMIN",
    "CAPABILITIES",
    "MAINTENANCE",
    "Broker",
    "BrokerCapabilities",
    "BrokerOptions",
    "BrokerSpec",
    "DeadLetter",
    "Delivery",
    "Envelope",
    "JobRecord",
    "Progress",
    "LeaderLease",
    "QueueDepth",
    "RecordState",
    "SupportsAckAndFetch",
    "SupportsAdmin",
    "SupportsCancellation",
    "SupportsEnqueueSync",
    "SupportsEnqueueWithHints",
    "SupportsMaintenance",
    "SupportsProgress",
    "SupportsSchedules",
    "SupportsWorkerRegistry",
    "capabilities",
    "require_admin",
    "require_maintenance",
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
        job_type: The job's name, which typed fetches select on (``""``: unknown; see :mod:`bananas.broker_types`).
    """

    id: str
    queue: str
    body: bytes
    eta: float | None = None
    job_type: str = ""


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


class RecordState(enum.StrEnum):
    """The state of a :class:`JobRecord`. A ``StrEnum``: ``RecordState.READY == "ready"`` and it prints as
    ``ready``, so code comparing with plain strings keeps working."""

    READY = "ready"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETED = "completed"
    DEAD = "dead"
    CANCELLED = "cancelled"  # capability cancellation: stopped by a cancel (kept completed_ttl)
    EXPIRED = "expired"  # capability cancellation: not started before its expiry (kept completed_ttl)


@attrs.frozen
class JobRecord:
    """What the broker knows of one job id."""

    id: str
    queue: str
    state: RecordState = attrs.field(converter=RecordState)
    body: bytes
    deliveries: int
    crashes: int
    reason: str | None
    updated_at: float
    started_at: float | None = None
    """When the last hand-out began (kept when the job completes); ``None`` from brokers that do not track it."""


@attrs.frozen
class QueueDepth:
    """Counts for one queue."""

    ready: int = 0
    scheduled: int = 0
    running: int = 0
    dead: int = 0


@runtime_checkable
class Broker(Protocol):
    """The core protocol every broker implements (0.2). One instance belongs to one event loop; the kernel builds
    one per loop it uses. Optional capabilities (:class:`SupportsMaintenance`, :class:`SupportsAdmin`, the fast
    lanes) are separate protocols, resolved once by :func:`capabilities`."""

    options: BrokerOptions

    async def connect(self) -> None:
        """Open connections. Raise :class:`~bananas.errors.BrokerUnavailable` if the broker cannot be reached."""
        ...

    async def close(self) -> None:
        """Close connections; calling it twice is harmless."""
        ...

    async def enqueue(self, envelopes: Sequence[Envelope]) -> list[bool] | None:
        """Store every envelope (one round trip where the backend allows). Ready ones go to the tail of their
        queue, future ones to the scheduled set. Returns a flag per envelope (``False``: not stored, a live copy of
        the id exists) or ``None``."""
        ...

    async def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        """Lease up to ``limit`` ready jobs from ``queues`` (highest priority first). A broker may also take a
        keyword ``job_types`` (typed fetches, :mod:`bananas.broker_types`).

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

    async def depths(self, queues: Sequence[str] | None = None) -> dict[str, QueueDepth]:
        """Counts per queue; all known queues when ``queues`` is ``None``."""
        ...


@runtime_checkable
class SupportsMaintenance(Protocol):
    """Capability ``maintenance``: delayed jobs and crash recovery (the worker's scheduler and reaper loop)."""

    async def move_due(self, limit: int = 1000) -> int:
        """Move up to ``limit`` scheduled jobs whose time has come to their queues; return how many moved."""
        ...

    async def reap(self) -> int:
        """Recover jobs whose lease expired (see the module docstring); return how many were recovered."""
        ...


@runtime_checkable
class SupportsAdmin(Protocol):
    """Capability ``admin``: inspection and dead-letter handling (``app.get_job``, the CLI)."""

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


@runtime_checkable
class SupportsEnqueueSync(Protocol):
    """Fast lane ``enqueue_sync``: :meth:`Broker.enqueue` from a plain thread, without an event loop."""

    def enqueue_sync(self, envelopes: Sequence[Envelope], *, generated_ids: Collection[str] = ()) -> list[bool] | None:
        """Store every envelope like ``enqueue`` (same return); thread-safe, blocks the calling thread."""
        ...


@runtime_checkable
class SupportsEnqueueWithHints(Protocol):
    """Fast lane ``enqueue_with_hints``: :meth:`Broker.enqueue` told which ids the kernel generated."""

    async def enqueue_with_hints(
        self, envelopes: Sequence[Envelope], *, generated_ids: Collection[str] = ()
    ) -> list[bool] | None:
        """Store every envelope like ``enqueue`` (same return); ids in ``generated_ids`` cannot exist yet anywhere."""
        ...


@runtime_checkable
class SupportsAckAndFetch(Protocol):
    """Fast lane ``ack_and_fetch``: settle finished jobs and take new ones in one round trip."""

    async def ack_and_fetch(
        self, deliveries: Sequence[Delivery], queues: Sequence[str], limit: int
    ) -> tuple[list[bool], list[Delivery]]:
        """``ack(deliveries)``, then take up to ``limit`` ready jobs from ``queues`` without blocking."""
        ...


MAINTENANCE = "maintenance"
ADMIN = "admin"
CAPABILITIES: dict[str, tuple[str, ...]] = {
    MAINTENANCE: ("reap", "move_due"),
    ADMIN: ("known_queues", "lookup", "dead_letters", "requeue_dead", "purge_dead"),
    SCHEDULES: SCHEDULE_METHODS,
    "enqueue_sync": ("enqueue_sync",),
    "enqueue_with_hints": ("enqueue_with_hints",),
    "ack_and_fetch": ("ack_and_fetch",),
    "worker_registry": ("publish_worker", "remove_worker", "list_workers"),
    "progress": ("set_progress", "progress"),
    "cancellation": ("cancel", "cancel_requested", "finish"),
    "ready_types": ("ready_types",),
}
"""Every optional capability by name, with the methods it takes (all of them)."""


@attrs.frozen
class BrokerCapabilities:
    """The optional capabilities of one broker instance, resolved once by :func:`capabilities`.

    Each fast-lane field holds the bound method (or ``None``), so callers use it without a per-call ``getattr``;
    ``maintenance``, ``admin``, ``schedules`` and ``worker_registry`` hold the broker itself, typed as that
    capability (or ``None``).

    Attributes:
        maintenance: ``reap`` and ``move_due``.
        admin: ``known_queues``, ``lookup``, ``dead_letters``, ``requeue_dead``, ``purge_dead``.
        schedules: The leader lease, tick guard and schedule state (:mod:`bananas.broker_schedules`).
        enqueue_sync: The bound ``enqueue_sync``.
        enqueue_with_hints: The bound ``enqueue_with_hints``.
        ack_and_fetch: The bound ``ack_and_fetch``.
        worker_registry: ``publish_worker``, ``remove_worker``, ``list_workers``.
        progress: ``set_progress`` and ``progress`` (:class:`SupportsProgress`).
        cancellation: ``cancel``, ``cancel_requested``, ``finish`` (:class:`SupportsCancellation`).
        typed_fetch: ``fetch`` (and ``ack_and_fetch``) take ``job_types`` (:mod:`bananas.broker_types`).
        ready_types: The bound ``ready_types``: job types waiting in a queue (:mod:`bananas.broker_types`).
        partial: Capabilities the broker has only some methods of, with the missing ones (treated as absent).
    """

    maintenance: SupportsMaintenance | None = None
    admin: SupportsAdmin | None = None
    schedules: SupportsSchedules | None = None
    enqueue_sync: Callable[..., None] | None = attrs.field(default=None, eq=False)
    enqueue_with_hints: Callable[..., Any] | None = attrs.field(default=None, eq=False)
    ack_and_fetch: Callable[..., Any] | None = attrs.field(default=None, eq=False)
    worker_registry: SupportsWorkerRegistry | None = None
    progress: SupportsProgress | None = None
    cancellation: SupportsCancellation | None = None
    ready_types: Callable[..., Any] | None = attrs.field(default=None, eq=False)
    typed_fetch: bool = False
    partial: dict[str, tuple[str, ...]] = attrs.field(factory=dict)

    @property
    def names(self) -> frozenset[str]:
        """The names (keys of :data:`CAPABILITIES`) of every capability present, and ``typed_fetch`` if so."""
        found = frozenset(name for name in CAPABILITIES if getattr(self, name) is not None)
        return found | {"typed_fetch"} if self.typed_fetch else found

    def has(self, name: str) -> bool:
        if name not in CAPABILITIES:
            raise ValueError(f"unknown broker capability {name!r}; known: {', '.join(CAPABILITIES)}")
        return getattr(self, name) is not None


def capabilities(broker: object) -> BrokerCapabilities:
    """Resolve the optional capabilities of ``broker`` (see the module docstring); the kernel calls it once per
    broker it builds and keeps the result. A capability counts only when every one of its methods is callable."""
    found: dict[str, Any] = {}
    partial: dict[str, tuple[str, ...]] = {}
    for name, methods in CAPABILITIES.items():
        missing = tuple(m for m in methods if not callable(getattr(broker, m, None)))
        if not missing:
            found[name] = broker if len(methods) > 1 else getattr(broker, methods[0])
        elif len(missing) < len(methods):
            partial[name] = missing
    return BrokerCapabilities(**found, typed_fetch=accepts_job_types(broker), partial=partial)


def _require(broker: object, name: str, caps: BrokerCapabilities | None, what: str) -> Any:
    resolved = getattr(caps or capabilities(broker), name)
    if resolved is None:
        methods = ", ".join(CAPABILITIES[name])
        raise UsageError(
            f"{what} needs the broker capability {name!r} ({methods}), which {type(broker).__name__} does not "
            "implement (see docs/PLUGINS.md, Broker protocol 0.2)"
        )
    return resolved


def require_admin(
    broker: object, caps: BrokerCapabilities | None = None, what: str = "this command"
) -> SupportsAdmin:
    """``broker`` typed as :class:`SupportsAdmin`, or :class:`~bananas.errors.UsageError` naming the missing
    capability (for inspection and dead-letter commands). Pass the resolved ``caps`` when you have them."""
    result: SupportsAdmin = _require(broker, ADMIN, caps, what)
    return result


def require_maintenance(
    broker: object, caps: BrokerCapabilities | None = None, what: str = "this command"
) -> SupportsMaintenance:
    """``broker`` typed as :class:`SupportsMaintenance`, or :class:`~bananas.errors.UsageError` naming it."""
    result: SupportsMaintenance = _require(broker, MAINTENANCE, caps, what)
    return result


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
