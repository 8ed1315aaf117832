"""Two optional broker capabilities beside the ones in :mod:`bananas.broker`: the worker registry
(:class:`SupportsWorkerRegistry`, ``bananas workers`` and ``bananas status``) and job progress
(:class:`SupportsProgress`, ``current_job().report_progress``). Resolved like every capability by
:func:`bananas.broker.capabilities`, which re-exports these names; the conformance kit checks both."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import attrs

__all__ = ["Progress", "SupportsProgress", "SupportsWorkerRegistry"]


@runtime_checkable
class SupportsWorkerRegistry(Protocol):
    """Capability ``worker_registry``: each worker process's heartbeat record, gone ``ttl`` seconds after its last
    publication (a SIGKILLed worker leaves by itself). Records are opaque bytes (the kernel's JSON)."""

    async def publish_worker(self, worker_id: str, record: bytes, ttl: float) -> None:
        """Store (or replace) the record of ``worker_id``, live until ``options.clock() + ttl``."""
        ...

    async def remove_worker(self, worker_id: str) -> None:
        """Drop the record of ``worker_id`` (a worker that stops); unknown ids are ignored."""
        ...

    async def list_workers(self) -> list[bytes]:
        """Every live record (any order); expired ones are never returned."""


@attrs.frozen
class Progress:
    """What a handler last reported (``current_job().report_progress(value, message)``): ``value`` (the handler's
    scale, e.g. 0–1 or items done), ``message`` and the Unix time it was stored."""

    value: float
    message: str | None = None
    updated_at: float = 0.0


@runtime_checkable
class SupportsProgress(Protocol):
    """Capability ``progress``: the last progress of a job, kept at least as long as its record."""

    async def set_progress(self, job_id: str, value: float, message: str | None = None, *,
                           queue: str | None = None) -> None:
        """Store ``value`` / ``message`` as the job's progress (stamped with ``options.clock()``); ``queue`` is the
        job's queue when the caller knows it (a hint; the worker passes it). Unknown jobs keep nothing."""
        ...

    async def progress(self, job_id: str) -> Progress | None:
        """The last stored progress of the job, ``None`` if none."""
        ...
