"""``WORKER_MODE=scheduler-only``: zero job slots; the process runs only the scheduler loop (and the reaper).

Every ``SCHEDULER_INTERVAL`` it moves due delayed and retrying jobs to their ready queues and enqueues the due
periodic jobs, so the job workers can run with ``ENABLE_SCHEDULER=false``. Several of them (and workers with the
scheduler on) elect one leader through a fenced lease in the broker; only the leader acts, and each periodic tick
is enqueued once (see docs/PERIODIC.md).
"""

from __future__ import annotations

from bananas.plugin_api import ConfigError, Register, Router, Settings, WorkerModeSpec, WorkerPlan, hookimpl

__all__ = ["SchedulerOnlyMode"]


class SchedulerOnlyMode:
    """No pools, scheduler on. ``ENABLE_SCHEDULER=false`` would leave nothing to run and is refused."""

    def plan(self, settings: Settings, router: Router) -> WorkerPlan:
        if not settings["worker.enable_scheduler"]:
            raise ConfigError(
                "worker.enable_scheduler",
                False,
                settings.source("worker.enable_scheduler"),
                "scheduler-only mode runs nothing but the scheduler; unset ENABLE_SCHEDULER for this process",
            )
        return WorkerPlan(
            mode="scheduler-only", pools=(), scheduler=True, scheduler_interval=settings["worker.scheduler_interval"]
        )


@hookimpl
def bananas_register_worker_modes(register: Register[WorkerModeSpec]) -> None:
    register(
        WorkerModeSpec(name="scheduler-only", factory=SchedulerOnlyMode, summary="no job slots, only the scheduler")
    )
