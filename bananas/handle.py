"""``JobHandle``: what ``Bananas.enqueue`` returns (the id, the job as sent, and ways to follow it)."""

from __future__ import annotations

from typing import Any, Protocol

import attrs

from bananas.broker import Progress
from bananas.job import Job, Status

__all__ = ["Inspector", "JobHandle"]


class Inspector(Protocol):
    """What a handle asks its app (:class:`bananas.app.Bananas` is one)."""

    def get_job(self, job_id: str) -> Job: ...

    async def get_job_async(self, job_id: str) -> Job: ...

    def get_result(self, job_id: str, wait: str | float | None = None) -> Any: ...

    async def get_result_async(self, job_id: str, wait: str | float | None = None) -> Any: ...

    def get_progress(self, job_id: str) -> Progress | None: ...

    async def get_progress_async(self, job_id: str) -> Progress | None: ...

    def cancel(self, job_id: str) -> bool: ...

    async def cancel_async(self, job_id: str) -> bool: ...


@attrs.define(eq=False)
class JobHandle:
    """What :meth:`Bananas.enqueue` returns: the id, the job as sent, and ways to follow it.

    ``status()`` and ``result()`` block (they run on the calling thread's private loop); inside an event loop use
    ``await handle.status_async()`` and ``await handle.result_async(timeout)``.
    """

    app: Inspector
    job: Job
    duplicate: bool = False
    """``True`` when the enqueue named a ``job_id`` that was still pending, scheduled or running: nothing was
    stored, and :attr:`job` is the existing job as the broker holds it (its payload, not the one just sent)."""

    @property
    def id(self) -> str:
        return self.job.id

    def status(self) -> Status:
        """The job's current status as the broker knows it."""
        return self.app.get_job(self.id).status

    async def status_async(self) -> Status:
        return (await self.app.get_job_async(self.id)).status

    def result(self, timeout: str | float | None = None) -> Any:
        """The result, waiting up to ``timeout`` seconds (``None``: do not wait); see :meth:`Bananas.get_result`."""
        return self.app.get_result(self.id, wait=timeout)

    async def result_async(self, timeout: str | float | None = None) -> Any:
        return await self.app.get_result_async(self.id, wait=timeout)

    def cancel(self) -> bool:
        """Cancel the job (see :meth:`Bananas.cancel`): ``True`` if it had not finished yet."""
        return self.app.cancel(self.id)

    async def cancel_async(self) -> bool:
        return await self.app.cancel_async(self.id)

    def progress(self) -> Progress | None:
        """The last progress the handler reported (``value``, ``message``, ``updated_at``), ``None`` if none yet."""
        return self.app.get_progress(self.id)

    async def progress_async(self) -> Progress | None:
        return await self.app.get_progress_async(self.id)

    def __repr__(self) -> str:
        return f"<JobHandle {self.job.name} {self.id}{' duplicate' if self.duplicate else ''}>"
