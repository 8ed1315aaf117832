"""``WORKER_MODE=job-specialized``: only the job types in ``WORKER_JOB_TYPES`` (required).

Such a worker must never take another type's job, and it must not pop a job and push it back either (that
reorders queues and burns a delivery). So its job types must live in queues of their own: the ``job-type``
router's ``[routes] generate_report = "cpu"`` puts ``generate_report`` jobs in ``cpu.high``, ``cpu.normal`` and
``cpu.low``, and this mode reads exactly the queues its types are routed to. The plan is refused, with the type
and the ``[routes]`` key named, when a listed type is not routed (its jobs would sit in the shared default queues)
or when one of its queues also receives a type that is not listed (the worker could fetch a job it must not run).
"""

from __future__ import annotations

from collections.abc import Iterable

from bananas.plugin_api import (
    ConfigError,
    Job,
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

__all__ = ["JobSpecializedMode"]

UNROUTED_PROBE = "__bananas_unrouted_job_type__"
"""A job name no ``[routes]`` table mentions: where the router sends it is where unrouted types go."""


def _queues_of(router: Router, name: str, priorities: Iterable[Priority]) -> set[str]:
    return {router.route(Job(name=name, priority=priority)) for priority in priorities}


class JobSpecializedMode:
    """One pool of ``WORKER_CONCURRENCY`` slots over the routed queues of ``WORKER_JOB_TYPES``."""

    def plan(self, settings: Settings, router: Router) -> WorkerPlan:
        types = tuple(dict.fromkeys(settings["worker.job_types"]))
        key, source = "worker.job_types", settings.source("worker.job_types")
        if not types:
            raise ConfigError(
                key,
                "",
                source,
                "job-specialized mode needs the job types this worker runs, such as "
                "WORKER_JOB_TYPES=generate_report,process_analytics, each routed to its own queue with "
                'router = "job-type" and [routes] generate_report = "cpu"',
            )
        if settings["worker.queues"]:
            raise ConfigError(
                "worker.queues",
                ",".join(settings["worker.queues"]),
                settings.source("worker.queues"),
                "job-specialized mode reads the queues its job types are routed to ([routes]); leave it empty",
            )
        priorities = sorted(set(settings["worker.priorities"]), key=lambda p: p.rank)
        queues = router.queues(priorities=priorities, job_types=types)
        shown = ",".join(types)
        router_name = settings["router"]
        hint = "" if router_name == "job-type" else f' and set router = "job-type" (router is {router_name!r})'

        default_queues = _queues_of(router, UNROUTED_PROBE, Priority)
        expected: set[str] = set()
        for name in types:
            mine = _queues_of(router, name, priorities)
            if mine & default_queues:
                raise ConfigError(
                    key,
                    shown,
                    source,
                    f"job type {name!r} is not routed to a queue of its own, so its jobs share the default queues "
                    f'with every other type; add [routes] {name} = "<queue>"{hint}',
                )
            missing = mine - set(queues)
            if missing:  # a router whose queues() disagrees with its route(): refuse rather than lose jobs
                raise ConfigError(
                    key,
                    shown,
                    source,
                    f"router {router_name!r} routes {name!r} to {sorted(missing)} but does not list those "
                    "queues for it",
                )
            expected |= mine
        extra = [queue for queue in queues if queue not in expected]
        if extra:
            raise ConfigError(
                key, shown, source, f"router {router_name!r} lists queues {extra} that none of these types use"
            )
        for other in settings.table("routes"):
            if other in types:
                continue
            shared = _queues_of(router, other, Priority) & expected
            if shared:
                raise ConfigError(
                    f"routes.{other}",
                    settings.table("routes")[other],
                    settings.source(f"routes.{other}"),
                    f"job type {other!r} shares queue {sorted(shared)[0]!r} with {shown}, but this job-specialized "
                    f"worker does not run it and would take its jobs; add {other} to WORKER_JOB_TYPES or route it "
                    "to another queue",
                )
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
