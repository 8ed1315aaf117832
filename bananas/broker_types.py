"""Type-aware queues (broker protocol 0.2): fetching only the jobs of some job types, with no pop-and-skip.

Every :class:`~bananas.broker.Envelope` carries the job's name as ``job_type`` (``""`` when the producer did not set
one). A broker that supports typed fetches takes a keyword ``job_types`` in ``fetch`` and, when it has the
``ack_and_fetch`` fast lane, in ``ack_and_fetch`` too:

* ``job_types=None`` (the default) takes every type, exactly as before: priority order across ``queues``, FIFO
  within a queue *across all types* (the order the jobs were made ready in; a job released or recovered by ``reap``
  goes back to the head).
* ``job_types={"a", "b"}`` takes only jobs of those types, in the same order restricted to them: the oldest ready job
  of these types, by priority. It never hands out, pops, pushes back or reorders a job of another type, so jobs of
  other types keep their place and their delivery counts. ``job_types=set()`` takes nothing.
* The type ``""`` stands for jobs whose type the broker does not know (an envelope without ``job_type``, or a job
  made ready by an older broker version; see the broker's docs): a fetch takes them only when ``""`` is in
  ``job_types`` or ``job_types`` is ``None``.
* A blocked typed fetch wakes only for jobs it may take (no polling, no busy loop on other types' jobs), and a
  typed fetcher never starves a type it asks for: each take picks the oldest head among its types.

The kernel finds out once, when it builds the broker (:func:`bananas.broker.capabilities`), whether ``fetch``
accepts ``job_types`` (:func:`accepts_job_types`). With such a broker a worker fetches only the types it has
handlers for (:func:`fetch_types`), so a job whose type no live worker runs waits in its queue instead of being
dead-lettered by a worker that does not know it (a rolling deploy that adds a job type loses nothing). The setting
``worker.unknown_job_types = "dead-letter"`` keeps the 0.1 behaviour: a catch-all worker fetches every type and
dead-letters the ones it has no handler for. A broker without typed fetches gets untyped ones, and a job-specialized
worker then refuses to start (it would take other types' jobs).

The optional capability ``ready_types`` (:class:`SupportsReadyTypes`) tells which job types wait in a queue, how many
and since when: ``bananas queues`` and ``bananas status`` show it, so a type no running worker handles is visible.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection
from typing import Protocol, runtime_checkable

import attrs

__all__ = ["UNKNOWN_TYPES_CHOICES", "UNTYPED", "ReadyType", "SupportsReadyTypes", "accepts_job_types", "fetch_types"]

UNTYPED = ""
"""The job type of an envelope whose producer gave none (and of jobs made ready by an older broker)."""

UNKNOWN_TYPES_CHOICES = ("wait", "dead-letter")
"""Values of ``worker.unknown_job_types``: a catch-all worker leaves jobs of types it has no handler for in their
queue (``wait``), or fetches them too and dead-letters them (``dead-letter``, the 0.1 behaviour)."""


def _takes_job_types(method: object) -> bool:
    if not callable(method):
        return False
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    return "job_types" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def accepts_job_types(broker: object) -> bool:
    """Whether ``broker.fetch`` takes ``job_types`` (and ``ack_and_fetch`` too, where the broker has it)."""
    if not _takes_job_types(getattr(broker, "fetch", None)):
        return False
    combined = getattr(broker, "ack_and_fetch", None)
    return combined is None or _takes_job_types(combined)


def fetch_types(
    pool_types: Collection[str] | None, handlers: Collection[str], unknown: str = "wait"
) -> frozenset[str] | None:
    """The ``job_types`` a pool fetches: its own types (job-specialized), else every type it has a handler for
    plus :data:`UNTYPED` (a catch-all), else ``None`` (every type) when ``unknown`` is ``"dead-letter"``."""
    if pool_types is not None:
        return frozenset(pool_types)
    if unknown == "dead-letter":
        return None
    return frozenset(handlers) | {UNTYPED}


@attrs.frozen
class ReadyType:
    """The ready jobs of one job type in one queue (capability ``ready_types``).

    Attributes:
        job_type: The type (:data:`UNTYPED` for jobs without one).
        ready: How many are ready.
        oldest_at: When the oldest of them became ready (broker clock, Unix seconds); ``None`` if unknown.
    """

    job_type: str
    ready: int
    oldest_at: float | None = None


@runtime_checkable
class SupportsReadyTypes(Protocol):
    """Capability ``ready_types``: which job types wait in a queue (``bananas queues``, ``bananas status``)."""

    async def ready_types(self, queue: str) -> list[ReadyType]:
        """The job types with ready jobs in ``queue``, oldest first."""
        ...
