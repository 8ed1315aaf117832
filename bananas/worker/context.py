"""What the worker gets from the app (:class:`WorkerContext`) and what observers get about a worker
(:class:`WorkerInfo`).

The app builds the context (``Bananas.worker_context()``); the worker never sees the ``Bananas`` object, so
nothing under ``bananas.worker`` imports :mod:`bananas.app` (``tests/test_architecture.py`` checks it).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from bananas.broker import Broker, BrokerCapabilities
from bananas.handlers import HandlerSpec
from bananas.metrics.config import MetricsConfig
from bananas.result_backend import ResultBackend
from bananas.serializer import JobCodec
from bananas.worker_mode import WorkerPlan

__all__ = ["Duty", "ObserverCaller", "PoolInfo", "WorkerContext", "WorkerInfo", "process_id"]


class ObserverCaller(Protocol):
    """Calls the lifecycle observers (the app's ``plugins.observers``)."""

    def has(self, name: str) -> bool: ...

    def notify(self, name: str, **kwargs: Any) -> None: ...


def process_id(host: str | None = None, pid: int | None = None) -> str:
    """The id of a worker process: ``host-pid``."""
    return f"{host or socket.gethostname()}-{pid if pid is not None else os.getpid()}"


@attrs.frozen
class PoolInfo:
    """One pool of a running worker, as observers see it.

    Attributes:
        pool_id: Unique in the process (``thin-1``, ``high-2``): the plan's ``PoolPlan.pool_id``. It is not the
            process id: ``bananas_job_started`` gets both.
        name: The pool's name in the plan.
        queues: The queues it reads, highest priority first.
        concurrency: Its job slots.
        job_types: The job names it may run (``None``: every handler).
    """

    pool_id: str
    name: str
    queues: tuple[str, ...]
    concurrency: int
    job_types: tuple[str, ...] | None = None


@attrs.frozen
class WorkerInfo:
    """A frozen description of one worker process, passed to ``bananas_worker_started``/``_stopped`` and to
    ``bananas_worker_duties``.

    Attributes:
        process_id: ``host-pid``, the process's id in logs and hooks.
        host: The host name.
        pid: The process id.
        mode: The worker mode that made the plan.
        pools: The pools, with their ids, queues and concurrency.
        scheduler: Whether the plan runs the scheduler here (duties that need a leader run only then).
    """

    process_id: str
    host: str
    pid: int
    mode: str
    pools: tuple[PoolInfo, ...]
    scheduler: bool = True

    @classmethod
    def of(cls, plan: WorkerPlan) -> WorkerInfo:
        """The info of this process running ``plan``."""
        host, pid = socket.gethostname(), os.getpid()
        pools = tuple(PoolInfo(p.pool_id, p.name, p.queues, p.concurrency, p.job_types) for p in plan.pools)
        return cls(process_id(host, pid), host, pid, plan.mode, pools, plan.scheduler)

    @property
    def concurrency(self) -> int:
        """Job slots of all pools."""
        return sum(pool.concurrency for pool in self.pools)


@attrs.frozen
class Duty:
    """A named periodic task of a worker process (``reap`` and ``move_due`` are the kernel's own).

    Each duty runs in its own task: once as soon as the worker has started (``at_start``), then every ``interval``
    seconds until the worker stops. An exception is logged and the duty runs again at its next time. Plugins add
    duties with the ``bananas_worker_duties`` hook.

    Attributes:
        name: Shown in logs (``duty reap failed: …``).
        interval: Seconds between two runs (from the end of one run to the start of the next).
        run: ``await run(broker)`` with the worker's connected broker.
        needs_leader: The duty must run in one process of the deployment only: it runs where the plan runs the
            scheduler (``WorkerPlan.scheduler``, the ``ENABLE_SCHEDULER`` flag) and there only while this process
            holds the scheduler's leader lease (:mod:`bananas.worker.leader`; a broker without the ``schedules``
            capability has no election, and then every scheduler process runs it).
        at_start: Run once right at start-up, before the first interval.
    """

    name: str
    interval: float
    run: Callable[[Broker], Awaitable[object]] = attrs.field(eq=False)
    needs_leader: bool = False
    at_start: bool = True

    def __attrs_post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError(f"duty {self.name!r}: interval must be positive, got {self.interval!r}")


async def _no_results() -> ResultBackend | None:
    return None


def _no_duties(info: WorkerInfo) -> Sequence[Duty]:
    return ()


def _no_periodic(fence: Callable[[], int | None]) -> Sequence[Duty]:
    return ()


@attrs.frozen
class WorkerContext:
    """Everything a worker needs from the app, built by ``Bananas.worker_context()``.

    Attributes:
        codec: Encodes and decodes jobs.
        handlers: Job name → handler (the app's own mapping: handlers registered later are seen).
        broker: ``await broker()`` → the connected broker of the running loop (the app keeps one per loop).
        new_broker: A new, unconnected broker (the heartbeat's own connection).
        capabilities: The optional capabilities of a broker built by ``broker``/``new_broker``, resolved once.
        results: ``await results()`` → the connected result backend of the running loop, or ``None``.
        has_results: A result backend is configured (skips ``results()`` on the hot path otherwise).
        close: ``await close()`` closes the running loop's broker and result backend.
        observers: Calls the lifecycle observers.
        duties: ``duties(info)`` → the duties plugins add (``bananas_worker_duties``).
        periodic: ``periodic(fence)`` → the app's periodic-job duties (``needs_leader``); ``fence()`` is the leader
            lease's fencing token while this process leads, else ``None``.
        scheduler_lease: ``[worker] scheduler_lease``: seconds of the scheduler's leader lease.
        lease: The broker's lease in seconds (the heartbeat renews every third of it).
        default_timeout: ``[jobs] timeout``.
        shutdown_timeout: ``[worker] shutdown_timeout``.
        broker_wait: ``[worker] broker_wait`` (0: wait for the broker without a bound).
        event_loop: ``[worker] event_loop``: ``auto``, ``asyncio`` or ``uvloop`` (:func:`loop_factory`).
        backoff: ``(retry_backoff_base, retry_backoff_factor, retry_backoff_max)`` of ``[jobs]``.
        metrics: ``[metrics]`` (endpoint, ``System metrics`` interval); the default serves no endpoint.
        unknown_job_types: ``[worker] unknown_job_types``: ``wait`` (fetch only the types with a handler) or
            ``dead-letter`` (fetch every type; the 0.1 behaviour), see :mod:`bananas.broker_types`.
        prefetch_multiplier: ``[worker] prefetch_multiplier``: jobs a pool holds at most (running and
            prefetched) as a multiple of its slots (see :mod:`bananas.worker.pools`).
    """

    codec: JobCodec
    handlers: Mapping[str, HandlerSpec]
    broker: Callable[[], Awaitable[Broker]]
    new_broker: Callable[[], Broker]
    capabilities: Callable[[Broker], BrokerCapabilities]
    observers: ObserverCaller
    close: Callable[[], Awaitable[None]]
    results: Callable[[], Awaitable[ResultBackend | None]] = _no_results
    has_results: bool = False
    duties: Callable[[WorkerInfo], Sequence[Duty]] = _no_duties
    periodic: Callable[[Callable[[], int | None]], Sequence[Duty]] = _no_periodic
    scheduler_lease: float = 5.0
    lease: float = 30.0
    default_timeout: float = 300.0
    shutdown_timeout: float = 30.0
    broker_wait: float = 0.0
    event_loop: str = "auto"
    backoff: tuple[float, float, float] = (1.0, 2.0, 300.0)
    metrics: MetricsConfig = MetricsConfig()
    unknown_job_types: str = "wait"
    prefetch_multiplier: int = 2
