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
        name: Pool name, also the prefix of its pool id (``high`` → ``high-1``).
        concurrency: Job slots.
        queues: Queues it reads, highest priority first.
        job_types: Job names it may run (``None``: every registered one).
        worker_id: The pool id as the mode sets it (``high-1``); read it as :attr:`pool_id`. The field keeps its
            0.1 name so modes and ``--dry-run`` output stay as they are.

    The pool id (:attr:`pool_id`) names the pool inside its process and is unique in a plan (:class:`WorkerPlan`
    checks it). It is not the process id (``host-pid``, ``WorkerInfo.process_id``): ``bananas_job_started`` gets
    both.
    """

    name: str
    concurrency: int
    queues: tuple[str, ...] = attrs.field(converter=tuple)
    job_types: tuple[str, ...] | None = None
    worker_id: str = ""

    @property
    def pool_id(self) -> str:
        """The pool's unique id in its plan: ``worker_id``, else the pool's name."""
        return self.worker_id or self.name


def _unique_pool_ids(instance: object, attribute: object, pools: tuple[PoolPlan, ...]) -> None:
    ids = [pool.pool_id for pool in pools]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ValueError(f"pools: pool ids must be unique in a plan; used more than once: {', '.join(twice)}")


@attrs.frozen
class WorkerPlan:
    """What one worker process runs: its pools (unique pool ids) and whether the scheduler runs in it (the
    duties that need a leader, such as move-due, run only where ``scheduler`` is true)."""

    mode: str
    pools: tuple[PoolPlan, ...] = attrs.field(converter=tuple, validator=_unique_pool_ids)
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
