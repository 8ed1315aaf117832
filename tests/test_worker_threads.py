"""The sync handlers' job threads (:mod:`bananas.worker.threads`): bounded, timed from the start, interruptible."""

from __future__ import annotations

import asyncio
import threading
import time

from bananas.broker import Delivery
from bananas.job import Job
from bananas.job_context import JobContext
from bananas.worker.interrupt import JobTimeout
from bananas.worker.state import _Slot
from bananas.worker.threads import SyncThreads


def _slot(n: int) -> tuple[_Slot, JobContext]:
    job = Job(name="work", payload={}, id=f"j{n}")
    return _Slot(Delivery(job.id, "normal", b"", n, 1, 1), job), JobContext(job)


def _job_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("bananas-job-") and t.is_alive()]


async def test_never_more_threads_than_slots_and_every_outcome_comes_back() -> None:
    threads = SyncThreads(asyncio.get_running_loop(), 3)
    try:
        def work(n: int) -> int:
            if n == 7:
                raise ValueError("seven")
            return n * 2

        runs = [threads.run(work, {"n": n}, *_slot(n), 5.0, "work") for n in range(40)]
        outcomes = await asyncio.gather(*runs)
        assert len(_job_threads()) == 3
        assert [o for o in outcomes if o[0]] == [(True, n * 2) for n in range(40) if n != 7]
        (failed,) = [value for ok, value in outcomes if not ok]
        assert isinstance(failed, ValueError) and str(failed) == "seven"
    finally:
        threads.close()


async def test_a_job_waiting_for_a_thread_is_timed_from_when_it_starts() -> None:
    # Given one thread and two jobs of 0.3 s with a 0.45 s timeout each
    threads = SyncThreads(asyncio.get_running_loop(), 1)
    try:
        def work() -> str:
            time.sleep(0.3)
            return "ok"

        t0 = time.monotonic()
        first, second = await asyncio.gather(threads.run(work, {}, *_slot(1), 0.45, "work"),
                                             threads.run(work, {}, *_slot(2), 0.45, "work"))
        # Then the second, which waited 0.3 s for the thread, still finishes (0.6 s after both were submitted)
        assert (first, second) == ((True, "ok"), (True, "ok"))
        assert time.monotonic() - t0 >= 0.55
    finally:
        threads.close()


async def test_a_timeout_interrupts_the_handler_and_frees_its_thread() -> None:
    threads = SyncThreads(asyncio.get_running_loop(), 1)
    stopped = threading.Event()
    try:
        def spin() -> None:
            try:
                while True:  # pure Python: the interrupt lands at the next bytecode
                    time.sleep(0.01)
            finally:
                stopped.set()

        t0 = time.monotonic()
        ok, error = await threads.run(spin, {}, *_slot(1), 0.2, "spin")
        assert not ok and isinstance(error, JobTimeout), error
        assert "job spin timed out after 0.2s" in str(error)
        assert 0.2 <= time.monotonic() - t0 < 1.0
        assert await asyncio.to_thread(stopped.wait, 2.0), "the handler was not interrupted"
        assert await threads.run(lambda: "next", {}, *_slot(2), 1.0, "next") == (True, "next")
    finally:
        threads.close()
