"""The circuit breaker in front of Elasticsearch: closed → open on a failure → half-open (one probe) → closed.

While open, batches are not sent at all (they go to the fallback at once), so an Elasticsearch that is down or
rejecting costs nothing per record. After ``first`` seconds one batch is let through as a probe; its success closes
the breaker, its failure opens it again for twice as long (up to ``longest``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    """Thread-safe; ``allow()`` before sending, then ``success()`` or ``failure()``."""

    def __init__(
        self, first: float = 1.0, longest: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.first, self.longest, self.clock = first, longest, clock
        self.cooldown = first
        self.opened_at: float | None = None
        self.trips = 0
        self._probing = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self._probing or self.clock() >= self.opened_at + self.cooldown else "open"

    def allow(self) -> bool:
        """May a batch be sent now? While open, no; once the cool-down is over, exactly one probe."""
        with self._lock:
            if self.opened_at is None:
                return True
            if self._probing or self.clock() < self.opened_at + self.cooldown:
                return False
            self._probing = True
            return True

    def success(self) -> bool:
        """Record a sent batch; return True when this closed an open breaker."""
        with self._lock:
            was_open = self.opened_at is not None
            self.opened_at, self.cooldown, self._probing = None, self.first, False
            return was_open

    def failure(self) -> bool:
        """Record a failed batch; return True when this opened a closed breaker."""
        with self._lock:
            was_closed = self.opened_at is None
            if not was_closed and self._probing:
                self.cooldown = min(self.longest, self.cooldown * 2)
            if was_closed:
                self.trips += 1
            self.opened_at, self._probing = self.clock(), False
            return was_closed
