"""``WORKER_MODE=job-specialized``: only the job types in ``WORKER_JOB_TYPES`` (required).

As the user guide writes it, with environment variables alone::

    WORKER_MODE=job-specialized
    WORKER_JOB_TYPES=send_email,generate_report,process_analytics
    WORKER_CONCURRENCY=10

The worker reads the queues its types are routed to (the default ``priority`` router: ``high``, ``normal``, ``low``)
and fetches only jobs of its types from them (a typed fetch, :mod:`bananas.broker_types`): it never takes another
type's job, and never pops one and pushes it back either (that would reorder the queue and burn a delivery). Jobs of
other types stay where they are, for the workers that run them (a ``default`` catch-all beside it runs every type it
has a handler for).

With ``router = "job-type"`` and ``[routes] generate_report = "cpu"`` the two combine: a routed type is read from its
own queues (``cpu.high`` …), an unrouted one from the default queues, each by type. The worker refuses to start
when one of its types has no handler in its app (one line naming them), or when its broker cannot fetch by job type.
"""

from __future__ import annotations

from bananas.plugin_api import (
    ConfigError,
    KeySpec,
    PoolPlan,
    Register,
    Router,
    Settings,
    WorkerModeSpec,
    WorkerPlan,
    hookimpl,
    setting,
)

__all__ = ["JobSpecializedMode"]


class JobSpecializedMode:
    """One pool of ``WORKER_CONCURRENCY`` slots over the queues of ``WORKER_JOB_TYPES``, fetching those types only."""

    def plan(self, settings: Settings, router: Router) -> WorkerPlan:
        types = tuple(dict.fromkeys(settings["worker.job_types"]))
        key, source = "worker.job_types", settings.source("worker.job_types")
        if not types:
            raise ConfigError(
                key,
                "",
                source,
                "job-specialized mode needs the job types this worker runs, such as "
                "WORKER_JOB_TYPES=generate_report,process_analytics",
            )
        if settings["worker.queues"]:
            raise ConfigError(
                "worker.queues",
                ",".join(settings["worker.queues"]),
                settings.source("worker.queues"),
                "job-specialized mode reads the queues its job types are routed to; leave it empty",
            )
        priorities = sorted(set(settings["worker.priorities"]), key=lambda p: p.rank)
        queues = router.queues(priorities=priorities, job_types=types)
        if not queues:
            raise ConfigError(key, ",".join(types), source,
                              f"router {settings['router']!r} lists no queues for these job types")
        pool = PoolPlan(
            name="job-types",
            concurrency=settings["worker.concurrency"],
            queues=queues,
            job_types=types,
            worker_id="job-types-1",
        )
        return WorkerPlan(
            mode="job-specialized",
            pools=(pool,),
            scheduler=settings["worker.enable_scheduler"],
            scheduler_interval=settings["worker.scheduler_interval"],
        )


@hookimpl
def bananas_register_worker_modes(register: Register[WorkerModeSpec]) -> None:
    register(
        WorkerModeSpec(
            name="job-specialized", factory=JobSpecializedMode, summary="only the job types in WORKER_JOB_TYPES"
        )
    )


SETTINGS: tuple[KeySpec, ...] = (
    setting("worker.job_types", "list", (), "Job names this worker runs (job-specialized mode).",
            "WORKER_JOB_TYPES"),
)
"""The settings job-specialized reads besides the kernel's (documented in this package's README)."""


@hookimpl
def bananas_register_settings(register: Register[KeySpec]) -> None:
    for spec in SETTINGS:
        register(spec)
