"""``router = "job-type"``: ``[routes]`` sends job types to named queues; priorities are kept inside each queue.

``[routes] generate_report = "cpu"`` routes a high ``generate_report`` job to ``cpu.high``, a low one to ``cpu.low``.
Job types not in ``[routes]`` go to the default queues ``high``, ``normal`` and ``low``, exactly as with the
``priority`` router, so producers and workers that do not route anything keep working unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bananas.plugin_api import Job, Priority, Register, RouterSpec, hookimpl

__all__ = ["JobTypeRouter", "queue_name", "split_queue"]

def queue_name(base: str | None, priority: Priority) -> str:
    """``cpu`` + high → ``cpu.high``; no base → the default queue ``high``."""
    return priority.value if base is None else f"{base}.{priority.value}"


def split_queue(name: str) -> tuple[str | None, Priority | None]:
    """``cpu.high`` → (``cpu``, high); ``high`` → (None, high); ``cpu`` → (``cpu``, None): a base name."""
    try:
        return None, Priority(name)
    except ValueError:
        pass
    base, dot, last = name.rpartition(".")
    if dot and base:
        try:
            return base, Priority(last)
        except ValueError:
            pass
    return name, None


class JobTypeRouter:
    """Queue = ``<route>.<priority>`` for routed job types, ``<priority>`` for the rest.

    :param routes: The ``[routes]`` table: job name → queue base name.
    """

    def __init__(self, routes: Mapping[str, str] | None = None) -> None:
        self.routes: dict[str, str] = {str(name): str(base).strip() for name, base in (routes or {}).items()}
        self.bases: tuple[str, ...] = tuple(dict.fromkeys(self.routes.values()))
        """Routed queue base names, in the order ``[routes]`` first names them."""

    def route(self, job: Job) -> str:
        return queue_name(self.routes.get(job.name), job.priority)

    def queues(
        self,
        *,
        priorities: Sequence[Priority],
        job_types: Sequence[str] | None = None,
        queues: Sequence[str] | None = None,
    ) -> list[str]:
        """Queues to read, every ``.high`` queue first, then every ``.normal``, then every ``.low``.

        - ``queues`` given: a name that is a priority (``high``) or ends in one (``cpu.high``) is read as is; any
          other name (``cpu``) stands for ``cpu.<p>`` for each of ``priorities``.
        - ``job_types`` given: the queues those types are routed to (an unrouted type: the default queues).
        - neither: the catch-all set, i.e. the default queues plus every routed queue.
        """
        ordered = sorted({Priority.parse(p) for p in priorities}, key=lambda p: p.rank)
        if queues:
            return self._expand(queues, ordered)
        if job_types is None:
            bases: list[str | None] = [None, *self.bases]
        else:
            bases = list(dict.fromkeys(self.routes.get(name) for name in job_types))
        return [queue_name(base, priority) for priority in ordered for base in bases]

    def _expand(self, names: Sequence[str], priorities: Sequence[Priority]) -> list[str]:
        ranked: list[tuple[int, str]] = []
        for name in dict.fromkeys(n.strip() for n in names if n.strip()):
            base, priority = split_queue(name)
            if priority is not None:
                ranked.append((priority.rank, name))
            elif base is not None:
                ranked.extend((p.rank, queue_name(base, p)) for p in priorities)
        ranked.sort(key=lambda item: item[0])  # stable: the given order is kept within one priority
        return list(dict.fromkeys(name for _, name in ranked))


@hookimpl
def bananas_register_routers(register: Register[RouterSpec]) -> None:
    register(
        RouterSpec(name="job-type", factory=JobTypeRouter, summary="[routes] job type -> <queue>.<priority> queues")
    )
