"""Job-control figures (printed, never asserted): how long a cancel of a running job takes to end it (sync and async
handler, memory broker, in-process thin worker: the heartbeat asks about once a second), and what an enqueue with an
explicit ``job_id`` costs against a generated one (the broker's stored flags make duplicate detection free unless an
id was live).

    .venv/bin/python benchmarks/bench_job_control.py
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
import uuid

from loguru import logger

from bananas import Bananas, Status


def _app() -> Bananas:
    url = f"memory://bench-control-{uuid.uuid4().hex[:8]}"
    return Bananas(url, result_backend=url, overrides={"worker.mode": "thin"}, env={}, entrypoints=False)


def cancel_latency(kind: str, rounds: int = 5) -> list[float]:
    app = _app()
    started = threading.Event()

    if kind == "sync":
        @app.job()
        def slow() -> None:
            started.set()
            for _ in range(10_000):
                time.sleep(0.01)
    else:
        @app.job()
        async def slow() -> None:
            started.set()
            await asyncio.sleep(100)

    worker = app.worker()
    worker.fetch_wait = 0.05
    thread = worker.start_in_thread()
    out = []
    for _ in range(rounds):
        started.clear()
        handle = slow.enqueue()
        started.wait(10)
        began = time.perf_counter()
        handle.cancel()
        while app.get_job(handle.id).status is not Status.CANCELLED:
            time.sleep(0.005)
        out.append(time.perf_counter() - began)
    worker.request_stop()
    thread.join(timeout=15)
    app.close()
    return out


def enqueue_cost(explicit: bool, jobs: int = 20_000) -> float:
    app = _app()

    @app.job()
    def work(n: int) -> None: ...

    started = time.perf_counter()
    for i in range(jobs):
        if explicit:
            work.options(job_id=f"id-{i}").enqueue(n=i)
        else:
            work.enqueue(n=i)
    elapsed = time.perf_counter() - started
    app.close()
    return elapsed / jobs


def main() -> None:
    logger.remove()
    for kind in ("sync", "async"):
        figures = cancel_latency(kind)
        median = statistics.median(figures)
        print(f"cancel of a running {kind:<5} job until it shows 'cancelled': median {median:.3f} s, "
              f"max {max(figures):.3f} s over {len(figures)}")
    for explicit in (False, True):
        label = "explicit job_id" if explicit else "generated id"
        print(f"enqueue (memory broker, {label:<15}): {enqueue_cost(explicit) * 1e6:7.1f} µs per job")


if __name__ == "__main__":
    main()
