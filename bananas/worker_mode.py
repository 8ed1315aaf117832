"""Worker modes turn configuration into a plan; the runtime executes plans."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    from bananas.config import Settings
    from bananas.router import Router

__all__ = ["PoolPlan", "WorkerMode", "WorkerModeSpec", "WorkerPlan"]


@attrs.frozen
class PoolPlan:
    """One pool of job slots.

    Attributes:
        name: Pool name, also the prefix of its worker ids (``high`` → ``high-1``).
        concurrency: Job slots.
        queues: Queues it reads, highest priority first.
        job_types: Job names it may run (``None``: every registered one).
        worker_id: Id recorded on jobs it runs and in logs.
    """

    name: str
    concurrency: int
    queues: tuple[str, ...] = attrs.field(converter=tuple)
    job_types: tuple[str, ...] | None = None
    worker_id: str = ""


@attrs.frozen
class WorkerPlan:
    """What one worker process runs: its pools and whether the scheduler loop runs in it."""

    mode: str
    pools: tuple[PoolPlan, ...] = attrs.field(converter=tuple)
    scheduler: bool = True
    scheduler_interval: float = 1.0

    def describe(self) -> dict[str, object]:
        """JSON-compatible form for ``bananas worker --dry-run``."""
        return {
            "mode": self.mode,
            "scheduler": self.scheduler,
            "scheduler_interval": self.scheduler_interval,
            "pools": [attrs.asdict(pool) for pool in self.pools],
        }


@runtime_checkable
class WorkerMode(Protocol):
    """A worker mode: ``plan(settings, router)`` returns the :class:`WorkerPlan` for this process."""

    def plan(self, settings: Settings, router: Router) -> WorkerPlan:
        """Build the plan; raise :class:`bananas.errors.ConfigError` naming the key for bad settings."""
        ...


@attrs.frozen
class WorkerModeSpec:
    """A named worker mode; ``factory()`` returns the :class:`WorkerMode`."""

    name: str
    factory: Callable[[], WorkerMode] = attrs.field(eq=False)
    summary: str = ""
