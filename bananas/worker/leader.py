"""Leader election among the processes that run the scheduler: a renewed, fenced lease in the broker.

Every worker whose plan runs the scheduler (``WorkerPlan.scheduler``: ``ENABLE_SCHEDULER``, the ``thin`` and
``scheduler-only`` modes) is a candidate. Every third of ``worker.scheduler_lease`` each candidate asks the broker
(``acquire_leader``; the holder ``renew_leader``s): one holds the lease, with a fencing token. Only the holder runs
the duties that need a leader (move-due, periodic ticks). It stops acting on its own once its last successful
renewal is two thirds of a lease old (a slow or lost broker), before the broker lets another candidate take over;
the broker also refuses tick claims and state writes with a stale token. After a SIGKILL (or a partition) another
candidate takes over within one lease plus one renewal interval; a stopping leader releases the lease at once.

Needs the broker's ``schedules`` capability (:mod:`bananas.broker_schedules`); without it there is no election and
every candidate runs the leader duties (as before this module existed).
"""

from __future__ import annotations

import time

from loguru import logger

from bananas.broker import Broker
from bananas.broker_schedules import SupportsSchedules
from bananas.worker.context import Duty

__all__ = ["Leadership"]

log = logger.bind(component="scheduler", log_source="bananas_internal")


class Leadership:
    """This process's side of the election: :meth:`beat` is its duty, :meth:`holds` gates the leader duties."""

    def __init__(self, schedules: SupportsSchedules, candidate: str, ttl: float, worker_id: str | None = None) -> None:
        self.schedules = schedules
        self.candidate = candidate
        self.log = log.bind(worker_id=worker_id) if worker_id else log
        self.ttl = ttl
        self.token: int | None = None
        self._valid_until = 0.0  # monotonic: act as leader until then (2/3 of a lease after the last renewal)

    def holds(self) -> bool:
        """This process leads now (it holds a lease it renewed recently enough)."""
        return self.token is not None and time.monotonic() < self._valid_until

    def fence(self) -> int | None:
        """The fencing token to send with leader-only writes, or ``None`` when this process does not lead."""
        return self.token if self.holds() else None

    def duty(self) -> Duty:
        """The election duty: runs at start, then every third of the lease."""
        return Duty("leader-election", self.ttl / 3, self.beat)

    async def beat(self, _: Broker) -> None:
        """Renew the lease if held, else try to take it."""
        started = time.monotonic()
        if self.token is not None:
            if await self.schedules.renew_leader(self.candidate, self.token, self.ttl):
                self._valid_until = started + self.ttl * 2 / 3
                return
            self.log.bind(event="leadership_lost", candidate=self.candidate, token=self.token).warning(
                "{} lost the scheduler leadership (token {})", self.candidate, self.token)
            self.token = None
        token = await self.schedules.acquire_leader(self.candidate, self.ttl)
        if token is not None:
            self.token, self._valid_until = token, started + self.ttl * 2 / 3
            self.log.bind(event="leadership_won", candidate=self.candidate, token=token).info(
                "{} is the scheduler leader now (token {})", self.candidate, token)

    async def resign(self) -> None:
        """Give the lease up (a stopping worker): another candidate takes over at its next beat."""
        token, self.token = self.token, None
        if token is not None:
            try:
                await self.schedules.release_leader(self.candidate, token)
            except Exception as exc:  # noqa: BLE001 - stopping anyway; the lease then simply expires
                self.log.bind(event="leadership_release_failed", error=str(exc)).warning(
                    "could not release the scheduler leadership ({}); it expires by itself", exc)
