"""``WORKER_MODE=scaled``: several pools per priority in one process, each with its own slots and worker id.

``WORKER_HIGH_COUNT`` pools of ``WORKER_HIGH_CONCURRENCY`` slots read only the high queues (worker ids ``high-1``,
``high-2`` …); likewise ``normal-N`` and ``low-N``. ``WORKER_SCHEDULED_COUNT`` pools of
``WORKER_SCHEDULED_CONCURRENCY`` slots read ``WORKER_SCHEDULED_QUEUES`` (see ``thin_plus`` for what a scheduled
pool is in Bananas). A count of 0 drops that priority. The scheduler loop runs per ``ENABLE_SCHEDULER``.
"""

from __future__ import annotations

from bananas.plugin_api import (
    ConfigError,
    KeySpec,
    PoolPlan,
    Priority,
    Register,
    Router,
    Settings,
    WorkerModeSpec,
    WorkerPlan,
    hookimpl,
    setting,
)

__all__ = ["ScaledMode"]


class ScaledMode:
    """``high-1..N``, ``normal-1..N``, ``low-1..N`` and ``scheduled-1..N`` pools."""

    def plan(self, settings: Settings, router: Router) -> WorkerPlan:
        if settings["worker.queues"]:
            raise ConfigError(
                "worker.queues",
                ",".join(settings["worker.queues"]),
                settings.source("worker.queues"),
                "scaled mode gives each priority its own pools; leave it empty",
            )
        scheduled_count = settings["worker.scheduled_count"]
        scheduled = router.queues(priorities=list(Priority), queues=settings["worker.scheduled_queues"])
        pools: list[PoolPlan] = []
        for priority in Priority:
            count = settings[f"worker.{priority.value}_count"]
            queues = router.queues(priorities=[priority])
            if scheduled_count:
                queues = [queue for queue in queues if queue not in scheduled]
            concurrency = settings[f"worker.{priority.value}_concurrency"]
            pools += [
                PoolPlan(priority.value, concurrency, queues, worker_id=f"{priority.value}-{n}")
                for n in range(1, count + 1)
            ]
        concurrency = settings["worker.scheduled_concurrency"]
        pools += [
            PoolPlan("scheduled", concurrency, scheduled, worker_id=f"scheduled-{n}")
            for n in range(1, scheduled_count + 1)
        ]
        if not pools:
            raise ConfigError(
                "worker.high_count",
                0,
                settings.source("worker.high_count"),
                "scaled mode needs at least one pool: WORKER_HIGH_COUNT, WORKER_NORMAL_COUNT, WORKER_LOW_COUNT and "
                "WORKER_SCHEDULED_COUNT are all 0",
            )
        return WorkerPlan(
            mode="scaled",
            pools=pools,
            scheduler=settings["worker.enable_scheduler"],
            scheduler_interval=settings["worker.scheduler_interval"],
        )


@hookimpl
def bananas_register_worker_modes(register: Register[WorkerModeSpec]) -> None:
    register(WorkerModeSpec(name="scaled", factory=ScaledMode, summary="N pools per priority, ids high-1, high-2"))


SETTINGS: tuple[KeySpec, ...] = (
    setting("worker.high_concurrency", "int", 10, "Slots per high pool (scaled).", "WORKER_HIGH_CONCURRENCY",
            minimum=1, maximum=1000),
    setting("worker.normal_concurrency", "int", 10, "Slots per normal pool (scaled).", "WORKER_NORMAL_CONCURRENCY",
            minimum=1, maximum=1000),
    setting("worker.low_concurrency", "int", 5, "Slots per low pool (scaled).", "WORKER_LOW_CONCURRENCY",
            minimum=1, maximum=1000),
    setting("worker.high_count", "int", 3, "Number of high pools (scaled).", "WORKER_HIGH_COUNT", minimum=0),
    setting("worker.normal_count", "int", 2, "Number of normal pools (scaled).", "WORKER_NORMAL_COUNT", minimum=0),
    setting("worker.low_count", "int", 1, "Number of low pools (scaled).", "WORKER_LOW_COUNT", minimum=0),
    setting("worker.scheduled_count", "int", 1, "Number of scheduled pools (scaled).", "WORKER_SCHEDULED_COUNT",
            minimum=0),
    setting("worker.scheduled_concurrency", "int", 5, "Slots per scheduled pool (thin_plus, scaled).",
            "WORKER_SCHEDULED_CONCURRENCY", minimum=1, maximum=1000),
    setting("worker.scheduled_queues", "list", ("scheduled",), "Queues of the scheduled pool (thin_plus, scaled).",
            "WORKER_SCHEDULED_QUEUES"),
)
"""The settings scaled reads besides the kernel's (documented in this package's README)."""


@hookimpl
def bananas_register_settings(register: Register[KeySpec]) -> None:
    for spec in SETTINGS:
        register(spec)
