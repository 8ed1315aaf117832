"""``WORKER_MODE=specialized``: only the priorities in ``WORKER_PRIORITIES`` (priority isolation).

A ``WORKER_PRIORITIES=high`` worker reads only high queues, so it never takes a normal or low job however many of
those wait, and a flood of low jobs never delays it. It runs every job type of its priorities: with the
``job-type`` router that means the default ``high`` queue and every routed ``<queue>.high`` queue;
``WORKER_QUEUES=high`` keeps it on the default queue alone.
"""

from __future__ import annotations

from bananas.plugin_api import ConfigError, PoolPlan, Register, Router, Settings, WorkerModeSpec, WorkerPlan, hookimpl

__all__ = ["SpecializedMode"]


class SpecializedMode:
    """One pool of ``WORKER_CONCURRENCY`` slots over the queues of ``WORKER_PRIORITIES`` (required)."""

    def plan(self, settings: Settings, router: Router) -> WorkerPlan:
        if settings.source("worker.priorities") == "default":
            raise ConfigError(
                "worker.priorities",
                ",".join(p.value for p in settings["worker.priorities"]),
                "default",
                "specialized mode needs the priorities this worker runs, such as WORKER_PRIORITIES=high "
                '(or [worker] priorities = ["high"]); for all of them use WORKER_MODE=default',
            )
        priorities = sorted(set(settings["worker.priorities"]), key=lambda p: p.rank)
        queues = router.queues(priorities=priorities, queues=settings["worker.queues"] or None)
        name = "-".join(p.value for p in priorities)
        pool = PoolPlan(name=name, concurrency=settings["worker.concurrency"], queues=queues, worker_id=f"{name}-1")
        return WorkerPlan(
            mode="specialized",
            pools=(pool,),
            scheduler=settings["worker.enable_scheduler"],
            scheduler_interval=settings["worker.scheduler_interval"],
        )


@hookimpl
def bananas_register_worker_modes(register: Register[WorkerModeSpec]) -> None:
    register(
        WorkerModeSpec(name="specialized", factory=SpecializedMode, summary="only the priorities in WORKER_PRIORITIES")
    )
