"""Handler-API figures (printed, never asserted): the worker's payload check per job (set fast path vs. a full
``inspect`` bind), and jobs per second through an in-process thin worker on the memory broker for a plain handler and
one that reports progress once per job.

    .venv/bin/python benchmarks/bench_handler_api.py
"""

from __future__ import annotations

import time
import timeit
import uuid

from loguru import logger

from bananas import Bananas, current_job
from bananas.control import payload_mismatch
from bananas.handlers import HandlerSpec


def payload_check() -> None:
    def send_email(to: str, subject: str, cc: str | None = None) -> None: ...

    spec = HandlerSpec("send_email", send_email, False)
    payload = {"to": "a@example.com", "subject": "hi"}
    n = 200_000
    fast = timeit.timeit(lambda: spec.mismatch(payload), number=n) / n
    assert spec.signature is not None
    full = timeit.timeit(lambda: payload_mismatch("send_email", spec.signature, payload), number=n) / n  # type: ignore[arg-type]
    print(f"payload check per job: {fast * 1e6:6.2f} µs (set fast path)   {full * 1e6:6.2f} µs (inspect bind)")


def throughput(progress: bool, jobs: int = 3000) -> float:
    url = f"memory://bench-handler-{uuid.uuid4().hex[:8]}"
    app = Bananas(url, result_backend="none", overrides={"worker.mode": "thin"}, env={}, entrypoints=False)

    @app.job()
    def work(n: int) -> int:
        if progress:
            current_job().report_progress(n, "step")
        return n

    app.enqueue_many([{"name": "work", "payload": {"n": i}} for i in range(jobs)])
    worker = app.worker()
    worker.fetch_wait = 0.05
    started = time.perf_counter()
    thread = worker.start_in_thread()
    while worker.processed < jobs:
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    worker.request_stop()
    thread.join(timeout=15)
    app.close()
    return jobs / elapsed


def main() -> None:
    logger.remove()
    payload_check()
    for progress in (False, True):
        label = "report_progress once per job" if progress else "plain handler"
        print(f"thin worker, memory broker, sync handler, {label:<30}: {throughput(progress):8.0f} jobs/s")


if __name__ == "__main__":
    main()
