"""The optional broker capability ``schedules`` (:class:`SupportsSchedules`): the scheduler's leader lease, the
per-tick guard of periodic jobs and their stored state. Resolved like every capability by
:func:`bananas.broker.capabilities`; the conformance kit checks it (``bananas.testing.conformance``).

Semantics (all times from ``options.clock()``, like every lease of the broker):

* **Leader lease.** ``acquire_leader(candidate, ttl)`` gives the lease to ``candidate`` when nobody holds a live
  one, with a new *fencing token* (strictly greater than every token before it), and returns it; it returns the
  same token when ``candidate`` already holds the live lease (and extends it), and ``None`` when another candidate
  does. ``renew_leader`` extends a live lease held by ``candidate`` with ``token`` and returns ``False`` otherwise
  (expired, taken over, released): the holder must then stop acting as the leader. ``release_leader`` gives up a
  lease at once (graceful shutdown), so another candidate takes over without waiting for the expiry.
* **Fencing.** ``claim_tick`` and ``save_schedule_state`` act only for the token of the live lease: a leader that
  lost its lease (a pause, a partition) cannot claim ticks or write state any more, even before it notices.
* **Per-tick guard.** ``claim_tick(schedule, tick, token)`` succeeds once per tick: it keeps, per schedule, the
  newest tick claimed and claims only a newer one (compare-and-set in one atomic step with the fencing check). So
  several schedulers, even two that both believe they lead for a moment, never enqueue one tick twice.
  ``unclaim_tick`` takes a claim back when the enqueue that followed it failed, so the tick is tried again.
* **State.** ``schedule_states()`` returns every stored state (schedule name → opaque text the kernel writes as
  JSON); ``save_schedule_state`` replaces one. States of schedules that no longer exist are kept and ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import attrs

__all__ = ["SCHEDULES", "SCHEDULE_METHODS", "LeaderLease", "SupportsSchedules"]

SCHEDULES = "schedules"
"""The capability's name in :data:`bananas.broker.CAPABILITIES`."""

SCHEDULE_METHODS: tuple[str, ...] = (
    "acquire_leader", "renew_leader", "release_leader", "current_leader", "claim_tick", "unclaim_tick",
    "schedule_states", "save_schedule_state",
)


@attrs.frozen
class LeaderLease:
    """The live leader lease: who holds it, its fencing token and when it ends (Unix time, broker clock)."""

    holder: str
    token: int
    expires_at: float


@runtime_checkable
class SupportsSchedules(Protocol):
    """Capability ``schedules``: leader election, exactly-once ticks and schedule state (see the module docstring)."""

    async def acquire_leader(self, candidate: str, ttl: float) -> int | None:
        """Take (or keep) the leader lease for ``ttl`` seconds; its fencing token, or ``None`` if another holds it."""
        ...

    async def renew_leader(self, candidate: str, token: int, ttl: float) -> bool:
        """Extend the live lease of ``candidate``/``token`` to ``now + ttl``; ``False`` if it is not live any more."""
        ...

    async def release_leader(self, candidate: str, token: int) -> bool:
        """End the lease of ``candidate``/``token`` now; ``False`` if it was not the live one."""
        ...

    async def current_leader(self) -> LeaderLease | None:
        """The live lease, or ``None`` when nobody leads."""
        ...

    async def claim_tick(self, schedule: str, tick: float, token: int) -> bool:
        """Claim ``tick`` of ``schedule`` for the leader with ``token``: ``True`` once, for a tick newer than every
        tick claimed before, and only while ``token`` is the live lease's."""
        ...

    async def unclaim_tick(self, schedule: str, tick: float, previous: float | None, token: int) -> bool:
        """Undo the claim of ``tick`` (back to ``previous``) if it is still the newest; fenced like ``claim_tick``."""
        ...

    async def schedule_states(self, names: Sequence[str] | None = None) -> dict[str, str]:
        """Stored states by schedule name (only ``names`` when given; a name without state is left out)."""
        ...

    async def save_schedule_state(self, schedule: str, state: str, token: int) -> bool:
        """Store ``state`` for ``schedule``; ``False`` (nothing written) unless ``token`` is the live lease's."""
        ...
