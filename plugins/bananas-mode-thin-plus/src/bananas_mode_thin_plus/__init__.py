"""``WORKER_MODE=thin_plus``: thin plus a second pool, so scheduled work cannot block priority processing.

Two pools in one process, and the scheduler loop always on (as in ``thin``):

- ``priority``: ``WORKER_PRIORITY_CONCURRENCY`` slots over ``WORKER_PRIORITY_QUEUES``. When that lists priorities
  only (the default ``high,normal,low``), the pool reads every queue of those priorities the router knows (routed
  ones such as ``cpu.high`` included) except the scheduled pool's queues; other names are read as queue names.
- ``scheduled``: ``WORKER_SCHEDULED_CONCURRENCY`` slots over ``WORKER_SCHEDULED_QUEUES`` (default ``scheduled``).

In Bananas a delayed or retrying job has no queue of its own: it waits in the scheduled set of the queue it was
routed to, and the scheduler loop moves it back to that queue when it is due, where the ``priority`` pool runs it.
The ``scheduled`` pool is reserved capacity for the jobs routed to its queues: with the ``job-type`` router,
``[routes] nightly_report = "scheduled"`` sends those jobs to ``scheduled.high/normal/low``. With the ``priority``
router nothing is routed there and the pool idles (one blocking fetch at a time).
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

__all__ = ["ThinPlusMode"]

_PRIORITY_NAMES = {priority.value for priority in Priority}


class ThinPlusMode:
    """A ``priority`` pool and a ``scheduled`` pool; the scheduler always runs."""

    def plan(self, settings: Settings, router: Router) -> WorkerPlan:
        if settings["worker.queues"]:
            raise ConfigError(
                "worker.queues",
                ",".join(settings["worker.queues"]),
                settings.source("worker.queues"),
                "thin_plus reads WORKER_PRIORITY_QUEUES and WORKER_SCHEDULED_QUEUES; leave it empty",
            )
        every = list(Priority)
        scheduled = router.queues(priorities=every, queues=settings["worker.scheduled_queues"])
        names = settings["worker.priority_queues"]
        if all(name in _PRIORITY_NAMES for name in names):  # priorities: every queue of theirs but the scheduled ones
            wanted = [Priority(name) for name in names]
            priority = [queue for queue in router.queues(priorities=wanted) if queue not in scheduled]
        else:  # queue names, read as the router resolves them
            priority = router.queues(priorities=every, queues=names)
            shared = [queue for queue in priority if queue in scheduled]
            if shared:
                raise ConfigError(
                    "worker.priority_queues",
                    ",".join(names),
                    settings.source("worker.priority_queues"),
                    f"queue {shared[0]!r} is also read by the scheduled pool (WORKER_SCHEDULED_QUEUES); "
                    "a queue belongs to one pool",
                )
        if not priority:
            raise ConfigError(
                "worker.priority_queues",
                ",".join(names),
                settings.source("worker.priority_queues"),
                "the priority pool has no queue left once the scheduled pool's queues are taken out",
            )
        pools = (
            PoolPlan("priority", settings["worker.priority_concurrency"], priority, worker_id="priority-1"),
            PoolPlan("scheduled", settings["worker.scheduled_concurrency"], scheduled, worker_id="scheduled-1"),
        )
        return WorkerPlan(
            mode="thin_plus", pools=pools, scheduler=True, scheduler_interval=settings["worker.scheduler_interval"]
        )


@hookimpl
def bananas_register_worker_modes(register: Register[WorkerModeSpec]) -> None:
    register(
        WorkerModeSpec(name="thin_plus", factory=ThinPlusMode, summary="priority pool + scheduled pool + scheduler")
    )


SETTINGS: tuple[KeySpec, ...] = (
    setting("worker.priority_concurrency", "int", 10, "Slots of the priority pool (thin_plus).",
            "WORKER_PRIORITY_CONCURRENCY", minimum=1, maximum=1000),
    setting("worker.priority_queues", "list", ("high", "normal", "low"), "Queues of the priority pool (thin_plus).",
            "WORKER_PRIORITY_QUEUES"),
    setting("worker.scheduled_concurrency", "int", 5, "Slots per scheduled pool (thin_plus, scaled).",
            "WORKER_SCHEDULED_CONCURRENCY", minimum=1, maximum=1000),
    setting("worker.scheduled_queues", "list", ("scheduled",), "Queues of the scheduled pool (thin_plus, scaled).",
            "WORKER_SCHEDULED_QUEUES"),
)
"""The settings thin_plus reads besides the kernel's (documented in this package's README)."""


@hookimpl
def bananas_register_settings(register: Register[KeySpec]) -> None:
    for spec in SETTINGS:
        register(spec)
