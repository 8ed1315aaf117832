"""Kernel figures (printed, never asserted): observer-hook cost on the hot path, the per-job cost of the metrics
counting (issue 13) and a memory-broker drain.

    .venv/bin/python benchmarks/bench_kernel.py
"""

from __future__ import annotations

import threading
import time
import timeit
import uuid

from bananas import Bananas, hookimpl


class Counter:
    __name__ = "counter"
    n = 0

    @hookimpl
    def bananas_job_started(self, job, pool_id) -> None:
        Counter.n += 1


def hook_costs() -> None:
    bare = Bananas(broker="memory://", entrypoints=False, env={})
    observed = Bananas(broker="memory://", entrypoints=False, env={}, plugins=[Counter()])
    n = 200_000
    for label, app in (("no implementation", bare), ("one implementation", observed)):
        obs = app.plugins.observers
        args = {"job": None, "process_id": "h", "pool_id": "w"}
        per = timeit.timeit(lambda obs=obs, args=args: obs.notify("bananas_job_started", **args), number=n) / n
        print(f"observer notify, {label:<20}: {per * 1e6:6.3f} µs per call")
    hook = bare.plugins.pm.hook.bananas_job_started
    pm_call = timeit.timeit(lambda: hook(job=None, process_id="h", pool_id="w"), number=n) / n
    print(f"pluggy hook call, no implementation  : {pm_call * 1e6:6.3f} µs per call (what the guard avoids)")


def metrics_cost(n: int = 200_000) -> None:
    """What settlement and the pools add per job for the metrics: one run observed (duration and wait histograms),
    one status counted, one slot taken and freed."""
    from bananas.job import Job
    from bananas.metrics.stats import COMPLETED, JobStats

    stats = JobStats({"p": 10})
    usage = stats.pools["p"]
    now = time.time()
    job = Job(name="noop", enqueued_at=now - 0.01, started_at=now)

    def one() -> None:
        usage.enter()
        stats.job_ran(job, "normal", 0.001)
        stats.count("noop", "normal", "normal", COMPLETED)
        usage.leave()

    per = timeit.timeit(one, number=n) / n
    print(f"metrics counting per job (histograms, counter, slot): {per * 1e6:6.3f} µs")


def drain(n: int = 20_000) -> None:
    url = f"memory://bench-{uuid.uuid4().hex[:6]}"
    app = Bananas(broker=url, overrides={"worker.mode": "thin", "worker.concurrency": 50}, env={})
    done = threading.Event()
    count = 0

    @app.job("noop")
    async def noop() -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    t0 = time.perf_counter()
    app.enqueue_many([{"name": "noop"} for _ in range(n)])
    t1 = time.perf_counter()
    from loguru import logger

    logger.remove()
    worker = app.worker()
    thread = worker.start_in_thread()
    t2 = time.perf_counter()
    done.wait(120)
    t3 = time.perf_counter()
    worker.request_stop()
    thread.join(10)
    print(f"memory broker: batch enqueue {n / (t1 - t0):,.0f} jobs/s; drain (async no-op, 50 slots) "
          f"{n / (t3 - t2):,.0f} jobs/s")


if __name__ == "__main__":
    hook_costs()
    metrics_cost()
    drain()
