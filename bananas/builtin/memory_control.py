"""The ``cancellation`` capability of the memory broker (:class:`bananas.broker.SupportsCancellation`): cancel a
job, tell its worker, end it ``cancelled`` or ``expired``. A mixin of :class:`~bananas.builtin.memory_broker.
MemoryBroker`, working on its records under its one lock (kept here so the broker module stays small)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bananas.broker import Delivery
from bananas.broker_extras import CANCEL_STATES

__all__ = ["MemoryControl"]


class MemoryControl:
    """``cancel``, ``cancel_requested`` and ``finish`` on the shared state of a memory broker."""

    if TYPE_CHECKING:  # provided by MemoryBroker
        _s: Any
        options: Any

        def _now(self) -> float: ...

        def _live(self, delivery: Delivery) -> Any: ...

        def _retain(self, rec: Any, until: float) -> None: ...

        def _expire(self, now: float) -> None: ...

    async def cancel(self, job_id: str) -> str | None:
        with self._s.lock:
            now = self._now()
            self._expire(now)
            rec = self._s.records.get(job_id)
            if rec is None:
                return None
            before: str = rec.state
            if before in ("ready", "scheduled"):  # take and move_due skip a record that is no longer in that state
                self._end(rec, "cancelled", now)
            elif before == "running":
                rec.cancel_requested = True
            return before

    async def cancel_requested(self, deliveries: Sequence[Delivery]) -> list[bool]:
        with self._s.lock:
            out = []
            for d in deliveries:
                rec = self._live(d)
                out.append(rec is not None and rec.cancel_requested)
            return out

    async def finish(self, delivery: Delivery, *, body: bytes, state: str) -> bool:
        if state not in CANCEL_STATES:
            raise ValueError(f"finish: state must be one of {', '.join(CANCEL_STATES)}, got {state!r}")
        with self._s.lock:
            rec = self._live(delivery)
            if rec is None:
                return False
            rec.body = body
            self._end(rec, state, self._now())
            return True

    def _end(self, rec: Any, state: str, now: float) -> None:
        rec.state = state
        rec.updated_at = now
        rec.cancel_requested = False
        self._retain(rec, now + self.options.completed_ttl)
