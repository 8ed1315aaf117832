"""The threads sync handlers run on: one per job slot, fed by a queue, reporting completions to the loop in batches.

``loop.run_in_executor`` + ``asyncio.wait_for`` cost each sync job an executor future chained to a loop future, a
``call_soon_threadsafe`` wake-up, a shielded wait task and a rescheduled timeout: about a fifth of the worker's CPU
per job with a no-op handler. Here a job is one loop future and one timer handle:

* :meth:`SyncThreads.submit` puts the call on a :class:`queue.SimpleQueue`; one of ``slots`` daemon threads (never
  more: the thread count is bounded by the worker's concurrency) takes it and runs it;
* the thread appends ``(future, outcome)`` to a completion list and wakes the loop only if the list was empty, so
  jobs that finish while the loop is busy are delivered by one wake-up;
* the caller's timer (:meth:`SyncThreads.run`) fires only for a job that is late: if the job waited for a thread
  (every thread busy with a handler stuck past its own timeout), its clock starts when a thread took it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

from bananas.job_context import JobContext
from bananas.log_context import CURRENT_JOB
from bananas.worker.interrupt import JobInterrupt, JobTimeout, interrupt_thread
from bananas.worker.state import _Slot

__all__ = ["SyncThreads"]

Result = tuple[bool, Any]
_Item = tuple[Callable[..., Any], dict[str, Any], _Slot, JobContext, "asyncio.Future[Result]", list[float]]


class SyncThreads:
    """``slots`` threads running sync handlers for one event loop (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, slots: int) -> None:
        self.loop = loop
        self._queue: SimpleQueue[_Item | None] = SimpleQueue()
        self._done: list[tuple[asyncio.Future[Result], Result]] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._serve, name=f"bananas-job-{i}", daemon=True)
                         for i in range(max(1, slots))]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Let every thread end once its current job returns (jobs not taken yet are dropped: their tasks are
        cancelled by the worker's shutdown, and their leases bring them back)."""
        for _ in self._threads:
            self._queue.put(None)

    async def run(self, func: Callable[..., Any], payload: dict[str, Any], slot: _Slot, scope: JobContext,
                  timeout: float, name: str) -> Result:
        """Run ``func(**payload)`` on a job thread; ``(False, JobTimeout)`` once it has run ``timeout`` seconds (its
        thread is interrupted: a thread blocked in C code sees it when that call returns)."""
        loop = self.loop
        future: asyncio.Future[Result] = loop.create_future()
        started: list[float] = []  # the thread writes its start (monotonic) here
        self._queue.put((func, payload, slot, scope, future, started))
        handle = loop.call_at(loop.time() + timeout, self._late, future, slot, started, timeout, name)
        try:
            return await future
        finally:
            handle.cancel()

    def _late(self, future: asyncio.Future[Result], slot: _Slot, started: list[float], timeout: float,
              name: str) -> None:
        if future.done():
            return
        if not started:  # still waiting for a free thread: its time has not started
            self.loop.call_at(self.loop.time() + timeout, self._late, future, slot, started, timeout, name)
            return
        ran = time.monotonic() - started[0]
        if ran < timeout:  # it waited for a thread first: wait for the rest of its time
            self.loop.call_at(self.loop.time() + (timeout - ran), self._late, future, slot, started, timeout, name)
            return
        if slot.thread_id is not None:
            interrupt_thread(slot.thread_id)
        future.set_result((False, JobTimeout(f"job {name} timed out after {timeout:g}s")))

    def _deliver(self) -> None:
        with self._lock:
            done, self._done = self._done, []
        for future, result in done:
            if not future.done():  # a job that timed out (or whose task was cancelled) was answered already
                future.set_result(result)

    def _serve(self) -> None:
        queue, lock = self._queue, self._lock
        while True:
            try:
                item = queue.get()
                if item is None:
                    return
                func, payload, slot, scope, future, started = item
                result = _call(func, payload, slot, scope, started)
                with lock:
                    wake = not self._done
                    self._done.append((future, result))
                if wake:
                    with contextlib.suppress(RuntimeError):  # the loop closed while a handler ran on
                        self.loop.call_soon_threadsafe(self._deliver)
            except JobInterrupt:  # an interrupt meant for a job that had just returned: not for this thread
                continue


def _call(func: Callable[..., Any], payload: dict[str, Any], slot: _Slot, scope: JobContext,
          started: list[float]) -> Result:
    slot.thread_id = threading.get_ident()
    started.append(time.monotonic())
    token = CURRENT_JOB.set(scope)  # job threads do not inherit the loop's context
    try:
        return True, func(**payload)
    except JobInterrupt:
        return False, JobTimeout("interrupted")
    except BaseException as exc:  # noqa: BLE001 - SystemExit/KeyboardInterrupt from a handler fail only the job
        return False, exc
    finally:
        CURRENT_JOB.reset(token)
        slot.thread_id = None
