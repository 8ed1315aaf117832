"""The live worker registry: what each worker process publishes about itself through the broker.

A worker publishes a :class:`WorkerRecord` every :data:`HEARTBEAT` seconds through the broker's optional
``worker_registry`` capability (:class:`bananas.broker.SupportsWorkerRegistry`), with a time to live of
:data:`TTL` seconds, and removes it when it stops. A process that dies without stopping (``SIGKILL``, the OOM
killer, a lost node) stops refreshing it, and the broker drops it once its time to live has passed. The broker
stores the record as opaque bytes (JSON, made here), like job bodies.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import attrs

__all__ = ["HEARTBEAT", "TTL", "PoolRecord", "WorkerRecord", "bananas_version", "decode_records"]

HEARTBEAT = 2.0
"""Seconds between two publications of a worker's record (also the readiness probe of the broker)."""
TTL = 3 * HEARTBEAT
"""Seconds a record lives without a refresh: a dead worker leaves the registry within three heartbeats."""


def bananas_version() -> str:
    """The kernel distribution's version (``bananas-queue``), as ``bananas.__version__`` gives it."""
    from bananas.config_kernel import KERNEL

    try:
        return version(KERNEL)
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without an install
        return "unknown"


@attrs.frozen
class PoolRecord:
    """One pool of a live worker: id, queues, slots, jobs running now and utilization (0-1, last 10 s)."""

    pool_id: str
    queues: tuple[str, ...] = attrs.field(converter=tuple)
    concurrency: int
    busy: int = 0
    utilization: float = 0.0


@attrs.frozen
class WorkerRecord:
    """One live worker process, as ``bananas workers`` and ``bananas status`` show it.

    Attributes:
        id: The process id ``host-pid`` (``WorkerInfo.process_id``).
        host: The host name.
        pid: The process id.
        mode: Its worker mode.
        pools: Its pools.
        jobs_running: Jobs running now, all pools.
        utilization: Busy / offered slot-seconds of all pools over the last 10 s (0-1).
        started_at: Unix time it started.
        heartbeat_at: Unix time of this publication.
        version: The bananas version it runs.
        jobs_processed: Jobs it settled since it started.
        throughput: Jobs it settled over the last minute.
        scheduler: Its plan runs the scheduler.
        job_types: The job types its pools fetch (``None``: every type; see :mod:`bananas.broker_types`).
    """

    id: str
    host: str
    pid: int
    mode: str
    pools: tuple[PoolRecord, ...] = attrs.field(converter=tuple)
    jobs_running: int = 0
    utilization: float = 0.0
    started_at: float = 0.0
    heartbeat_at: float = 0.0
    version: str = ""
    jobs_processed: int = 0
    throughput: int = 0
    scheduler: bool = False
    job_types: tuple[str, ...] | None = attrs.field(default=None, converter=lambda v: None if v is None else tuple(v))

    def takes(self, queue: str, job_type: str) -> bool:
        """Whether one of its pools reads ``queue`` and fetches jobs of ``job_type``."""
        reads = any(queue in pool.queues for pool in self.pools)
        return reads and (self.job_types is None or job_type in self.job_types)

    def encode(self) -> bytes:
        return json.dumps(attrs.asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, body: bytes) -> WorkerRecord:
        data: dict[str, Any] = json.loads(body)
        known = {field.name for field in attrs.fields(cls)}
        data = {key: value for key, value in data.items() if key in known}  # newer workers may add fields
        data["pools"] = tuple(PoolRecord(**pool) for pool in data.get("pools", ()))
        return cls(**data)

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def decode_records(bodies: list[bytes]) -> list[WorkerRecord]:
    """The records of ``bodies`` that decode, sorted by id (a record from an incompatible writer is skipped)."""
    out = []
    for body in bodies:
        try:
            out.append(WorkerRecord.decode(body))
        except (ValueError, TypeError, KeyError):
            continue
    return sorted(out, key=lambda record: record.id)
