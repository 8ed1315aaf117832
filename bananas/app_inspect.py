"""The inspecting half of the producer API (``get_job``, ``get_result``, ``get_progress``) and job control
(``cancel``), mixed into :class:`bananas.app.Bananas` (kept here so the app module stays small)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bananas.broker import Broker, BrokerCapabilities, JobRecord, Progress, SupportsAdmin, require_admin
from bananas.errors import JobNotFound, UsageError
from bananas.inspection import job_from_record, wait_for_result
from bananas.job import Job
from bananas.result_backend import result_worker

if TYPE_CHECKING:
    from bananas.result_backend import ResultBackend
    from bananas.serializer import JobCodec

__all__ = ["Inspecting"]


class Inspecting:
    """``get_job``, ``get_result``, ``get_progress`` and ``cancel`` (sync and async) of a
    :class:`~bananas.app.Bananas`."""

    codec: JobCodec

    if TYPE_CHECKING:  # provided by Bananas
        async def broker(self) -> Broker: ...

        async def results(self) -> ResultBackend | None: ...

        def capabilities(self, broker: Broker) -> BrokerCapabilities: ...

        def run_sync(self, factory: Any) -> Any: ...

    async def get_job_async(self, job_id: str) -> Job:
        """The job as the broker last stored it, with its current status, attempts, timestamps and last error
        (and its attempt history: :attr:`Job.extra` ``["history"]``, see docs/HANDLERS.md).

        Raises :class:`JobNotFound` when the broker has no record of ``job_id`` (never enqueued, or its record
        expired: ``completed_ttl`` / ``dead_ttl``).
        """
        record = await self._admin(await self.broker(), "get_job").lookup(job_id)
        if record is None:
            raise JobNotFound(f"no job with id {job_id!r} (never enqueued here, or its record expired)")
        worker = None
        if record.state == "completed":  # the worker of the last run is kept with its stored result, if any
            backend = await self.results()
            body = await backend.get(job_id) if backend is not None else None
            worker = result_worker(self.codec, body) if body is not None else None
        return job_from_record(self.codec, record, worker=worker)

    async def cancel_async(self, job_id: str) -> bool:
        """Cancel job ``job_id``: ``True`` if it was pending, scheduled or running (it will not run, or its run is
        being stopped: it ends with status ``cancelled``), ``False`` if it had finished already (completed, dead,
        cancelled or expired: nothing changes). Raises :class:`JobNotFound` for an unknown (or expired) id.

        Needs the broker capability ``cancellation`` (:class:`bananas.broker.SupportsCancellation`); see
        docs/HANDLERS.md ("Cancelling a job")."""
        return (await self.cancel_job_async(job_id)) in ("ready", "scheduled", "running")

    async def cancel_job_async(self, job_id: str) -> str:
        """:meth:`cancel_async`, returning the state the broker's record was in before (``ready``, ``scheduled``,
        ``running``, ``completed``, ``dead``, ``cancelled``, ``expired``); the CLI words its answer with it."""
        if not isinstance(job_id, str) or not job_id:
            raise ValueError(f"job_id: expected a non-empty string, got {job_id!r}")
        broker = await self.broker()
        control = self.capabilities(broker).cancellation
        if control is None:
            raise UsageError(f"cancel needs the broker capability 'cancellation' (cancel, cancel_requested, finish), "
                             f"which {type(broker).__name__} does not implement")
        before = await control.cancel(job_id)
        if before is None:
            raise JobNotFound(f"no job with id {job_id!r} (never enqueued here, or its record expired)")
        return str(before)

    def cancel(self, job_id: str) -> bool:
        return self.run_sync(lambda: self.cancel_async(job_id))  # type: ignore[no-any-return]

    def _admin(self, broker: Broker, what: str) -> SupportsAdmin:
        """``broker`` as :class:`SupportsAdmin`; :class:`UsageError` naming the capability if it has none."""
        return require_admin(broker, self.capabilities(broker), what)

    def _job_from_record(self, record: JobRecord) -> Job:
        return job_from_record(self.codec, record)

    def get_job(self, job_id: str) -> Job:
        return self.run_sync(lambda: self.get_job_async(job_id))  # type: ignore[no-any-return]

    async def get_progress_async(self, job_id: str) -> Progress | None:
        """The last progress the job's handler reported (``current_job().report_progress``), ``None`` if none.

        Needs the broker capability ``progress`` (:class:`bananas.broker.SupportsProgress`)."""
        broker = await self.broker()
        store = self.capabilities(broker).progress
        if store is None:
            raise UsageError(f"progress needs the broker capability 'progress' (set_progress, progress), which "
                             f"{type(broker).__name__} does not implement")
        return await store.progress(job_id)

    def get_progress(self, job_id: str) -> Progress | None:
        return self.run_sync(lambda: self.get_progress_async(job_id))  # type: ignore[no-any-return]

    async def get_result_async(self, job_id: str, wait: str | float | None = None) -> Any:
        """The handler's return value, waiting up to ``wait`` seconds (``"10s"`` works too) for it.

        Raises :class:`JobFailed` (the job is dead: remote error type, message, traceback),
        :class:`ResultTimeout` (no result yet, or none within ``wait``; the job keeps running) or
        :class:`JobNotFound` (unknown id, or a finished job whose result was not kept: ``result_ttl=0``, expired).
        Both carry ``job_id``. Waiting blocks on the backend's completion signal; it never polls.
        """
        backend = await self.results()
        if backend is None:
            raise UsageError("no result backend configured; set result_backend (e.g. 'memory://' or 'redis://…')")
        admin = self.capabilities
        return await wait_for_result(self.codec, self.broker, lambda b: admin(b).admin, backend, job_id, wait)

    def get_result(self, job_id: str, wait: str | float | None = None) -> Any:
        return self.run_sync(lambda: self.get_result_async(job_id, wait))
