"""``router = "priority"`` (the default): one queue per priority, named ``high``, ``normal`` and ``low``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bananas.hookspecs import hookimpl
from bananas.job import Job, Priority
from bananas.registry import Register
from bananas.router import RouterSpec

__all__ = ["PriorityRouter"]


class PriorityRouter:
    """Queue name = priority name. ``[routes]`` is ignored; use the ``job-type`` router for named queues."""

    def __init__(self, routes: Mapping[str, str] | None = None) -> None:
        self.routes = dict(routes or {})

    def route(self, job: Job) -> str:
        return job.priority.value

    def queues(
        self,
        *,
        priorities: Sequence[Priority],
        job_types: Sequence[str] | None = None,
        queues: Sequence[str] | None = None,
    ) -> list[str]:
        if queues:
            return list(queues)
        ordered = sorted((Priority.parse(p) for p in priorities), key=lambda p: p.rank)
        return [p.value for p in ordered]


@hookimpl
def bananas_register_routers(register: Register[RouterSpec]) -> None:
    register(RouterSpec(name="priority", factory=PriorityRouter, summary="one queue per priority (default)"))
