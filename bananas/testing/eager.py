"""Eager mode: jobs run when they are enqueued, before ``enqueue`` returns (Celery's ``task_always_eager``).

``with bananas.testing.eager(app):`` starts the app's real worker in-process (see
:class:`~bananas.testing.drain.InProcessWorker`) and makes every enqueue of *this app object* (``enqueue``,
``enqueue_async``, ``enqueue_many``, ``enqueue_many_async`` and whatever is built on them) wait until the worker is
idle again. So when ``enqueue`` returns, the job has run — sync or async handler — and so has every job it
enqueued; its result is stored (``handle.result()`` answers at once) and its status is final.

The semantics, chosen to match a real worker rather than to differ from it:

- **Retries** follow the job's policy (``max_retries``, backoff), but time is fast-forwarded: a flaky handler that
  succeeds on its third attempt succeeds within the ``enqueue`` call. ``retries=False`` runs every job once
  (``max_retries=0`` unless the enqueue gives its own).
- **Delays** (``delay=``, ``at=``) are skipped the same way: the job runs at once.
- **Failures**: with ``propagate=True`` (the default) an enqueue during which a job failed for good raises that
  job's last exception (the handler's own exception object, with a note naming the job); a job that died without
  an exception (no handler registered for it) raises :class:`~bananas.errors.JobFailed`. With
  ``propagate=False`` the enqueue returns the handle as usual, and ``handle.result()`` raises ``JobFailed`` like
  it does for a dead job of a real worker.
- A job enqueued **from inside a job** does not wait (its handler would wait for itself): it runs right after, still
  before the outer ``enqueue`` returns.
- The eager block needs the ``memory://`` broker (use :func:`~bananas.testing.use_memory` or the
  ``bananas_memory_app`` fixture); other app objects (a ``bananas.Client``) are not affected.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from bananas.errors import JobFailed, UsageError
from bananas.log_context import CURRENT_JOB
from bananas.testing.apps import resolve_app
from bananas.testing.drain import IdleSummary, InProcessWorker

if TYPE_CHECKING:
    from bananas.app import Bananas
    from bananas.handle import JobHandle

__all__ = ["Eager", "eager"]

_SENDING: contextvars.ContextVar[bool] = contextvars.ContextVar("bananas_testing_eager_sending", default=False)
"""Set while a blocking eager enqueue sends: its inner async send (brokers without ``enqueue_sync``) must not wait."""


class Eager:
    """An active eager block (see the module docstring); :func:`eager` makes one.

    Attributes:
        last: What happened during the latest eager enqueue (an :class:`~bananas.testing.IdleSummary`).
    """

    def __init__(self, app: Bananas, *, propagate: bool = True, retries: bool = True, timeout: float = 10.0) -> None:
        self.app = app
        self.propagate = propagate
        self.retries = retries
        self.timeout = timeout
        self.worker = InProcessWorker(app, fast_forward=True)
        self.last = IdleSummary()

    def summary(self) -> IdleSummary:
        """Everything that happened since the block started."""
        return self.worker.recorder.summary()

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def __enter__(self) -> Eager:
        app = self.app
        if "enqueue_many" in vars(app):
            raise UsageError("this app is in an eager block already (or its enqueue_many is patched)")
        self.worker.start()
        send_many, send_many_async = app.enqueue_many, app.enqueue_many_async

        def enqueue_many(jobs: Sequence[Mapping[str, Any]]) -> list[JobHandle]:
            jobs = self._specs(jobs)
            if self._inside_job():
                return send_many(jobs)
            mark = self.worker.mark()
            token = _SENDING.set(True)
            try:
                handles = send_many(jobs)
            finally:
                _SENDING.reset(token)
            self._settled(self.worker.wait_idle(self.timeout, since=mark))
            return handles

        async def enqueue_many_async(jobs: Sequence[Mapping[str, Any]]) -> list[JobHandle]:
            jobs = self._specs(jobs)
            if _SENDING.get() or self._inside_job():
                return await send_many_async(jobs)
            mark = self.worker.mark()
            handles = await send_many_async(jobs)
            self._settled(await self.worker.wait_idle_async(self.timeout, since=mark))
            return handles

        vars(app)["enqueue_many"] = enqueue_many
        vars(app)["enqueue_many_async"] = enqueue_many_async
        return self

    def __exit__(self, *exc: object) -> None:
        vars(self.app).pop("enqueue_many", None)
        vars(self.app).pop("enqueue_many_async", None)
        self.worker.stop()

    # -- helpers ---------------------------------------------------------------------------------------------------
    def _specs(self, jobs: Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
        if self.retries:
            return jobs
        return [spec if spec.get("max_retries") is not None else {**spec, "max_retries": 0} for spec in jobs]

    def _inside_job(self) -> bool:
        """Called from a handler (or anything else on the worker's own loop): waiting would wait for itself."""
        if CURRENT_JOB.get() is not None:
            return True
        try:
            return asyncio.get_running_loop() is self.worker.loop
        except RuntimeError:
            return False

    def _settled(self, summary: IdleSummary) -> None:
        self.last = summary
        if not self.propagate or not summary.dead:
            return
        job_id = next(iter(summary.dead_reasons))
        job = summary.jobs[job_id]
        error = summary.errors.get(job_id)
        if error is None:
            raise JobFailed(job_id, "DeadLetter", summary.dead_reasons[job_id])
        error.add_note(f"bananas.testing.eager: job {job.name} ({job_id}) failed for good after {job.attempts} "
                       "attempt(s)")
        raise error


def eager(app: Bananas | ModuleType, *, propagate: bool = True, retries: bool = True,
          timeout: float = 10.0) -> Eager:
    """A ``with`` block in which the app's jobs run when they are enqueued (see the module docstring).

    ``propagate``: an enqueue whose job failed for good raises that job's exception. ``retries``: follow each
    job's retry policy (fast-forwarded) or run every job once. ``timeout``: seconds one enqueue may wait for its
    jobs (``TimeoutError`` after that).
    """
    return Eager(resolve_app(app), propagate=propagate, retries=retries, timeout=timeout)
