"""Built-in ``WORKER_MODE=thin``: one pool, all priorities and job types, built-in scheduler, concurrency 5 by
default. For development, tests and very low traffic."""

from __future__ import annotations

from bananas.config import Settings
from bananas.hookspecs import hookimpl
from bananas.job import Priority
from bananas.registry import Register
from bananas.router import Router
from bananas.worker_mode import PoolPlan, WorkerModeSpec, WorkerPlan

__all__ = ["ThinMode"]

THIN_CONCURRENCY = 5


class ThinMode:
    """Everything in one small pool; ``WORKER_CONCURRENCY`` overrides the default of 5."""

    def plan(self, settings: Settings, router: Router) -> WorkerPlan:
        explicit = settings.source("worker.concurrency") != "default"
        concurrency = settings["worker.concurrency"] if explicit else THIN_CONCURRENCY
        queues = router.queues(priorities=list(Priority), queues=settings["worker.queues"] or None)
        pool = PoolPlan(name="thin", concurrency=concurrency, queues=queues, worker_id="thin-1")
        return WorkerPlan(
            mode="thin", pools=(pool,), scheduler=True, scheduler_interval=settings["worker.scheduler_interval"]
        )


@hookimpl
def bananas_register_worker_modes(register: Register[WorkerModeSpec]) -> None:
    register(WorkerModeSpec(name="thin", factory=ThinMode, summary="one small pool for everything + scheduler"))
