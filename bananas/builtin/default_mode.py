"""Built-in ``WORKER_MODE=default`` (the default): one pool over ``WORKER_PRIORITIES`` in order, every job type,
horizontally scalable."""

from __future__ import annotations

from bananas.config import Settings
from bananas.hookspecs import hookimpl
from bananas.registry import Register
from bananas.router import Router
from bananas.worker_mode import PoolPlan, WorkerModeSpec, WorkerPlan

__all__ = ["DefaultMode"]


class DefaultMode:
    """``WORKER_CONCURRENCY`` slots reading high → normal → low; scheduler per ``ENABLE_SCHEDULER``."""

    def plan(self, settings: Settings, router: Router) -> WorkerPlan:
        queues = router.queues(priorities=settings["worker.priorities"], queues=settings["worker.queues"] or None)
        pool = PoolPlan(
            name="default", concurrency=settings["worker.concurrency"], queues=queues, worker_id="default-1"
        )
        return WorkerPlan(
            mode="default",
            pools=(pool,),
            scheduler=settings["worker.enable_scheduler"],
            scheduler_interval=settings["worker.scheduler_interval"],
        )


@hookimpl
def bananas_register_worker_modes(register: Register[WorkerModeSpec]) -> None:
    register(WorkerModeSpec(name="default", factory=DefaultMode, summary="one pool, all priorities in order"))
