"""Routing strategies decide which queue a job goes to and which queues a worker reads, in priority order."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

import attrs

from bananas.job import Job, Priority

__all__ = ["Router", "RouterSpec"]


@runtime_checkable
class Router(Protocol):
    """Maps jobs to queue names and worker selections to ordered queue lists."""

    def route(self, job: Job) -> str:
        """The queue for ``job``."""
        ...

    def queues(
        self,
        *,
        priorities: Sequence[Priority],
        job_types: Sequence[str] | None = None,
        queues: Sequence[str] | None = None,
    ) -> list[str]:
        """Queues a worker reads, highest priority first.

        :param priorities: The priorities the worker handles, highest first.
        :param job_types: Only these job types (``None``: all).
        :param queues: Only these named queues (``None``: the default ones).
        """
        ...


@attrs.frozen
class RouterSpec:
    """A named routing strategy; ``factory(routes)`` gets the ``[routes]`` table (job name → queue name)."""

    name: str
    factory: Callable[[Mapping[str, str]], Router] = attrs.field(eq=False)
    summary: str = ""
