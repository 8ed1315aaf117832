"""What logging costs (issue 12, point 8, kernel tiers): printed, never asserted.

    .venv/bin/python benchmarks/bench_logging.py [--calls 50000] [--drain] [--n 20000] [--repeat 2]

Per call, at the call site (the emitting thread; the console's own writer thread is not counted):

* a disabled level: the worker's per-job DEBUG event (``bananas.worker.events.succeeded``) with DEBUG off, and a
  handler's ``job_logger.debug`` / stdlib ``logging`` debug call below the configured level;
* the console tier on: the same event written as JSON (``json_line`` → :class:`ConsoleWriter`) and as text; a
  handler's ``job_logger.info`` and stdlib ``logging.info`` inside a job, with the JSON console through the kernel's
  direct route (``bananas.log_route``, installed as ``configure_logging`` installs it) and, for comparison, through
  loguru (the route off), and with the text console (always loguru);
* for the choice of the console's writer: loguru's own ``enqueue=True`` (pickles each record into a pipe for a
  writer thread) with the same JSON, and a plain synchronous write to the stream.

The console writes to ``/dev/null`` (the cost of a real terminal is what the writer thread keeps off the caller).

``--drain`` then runs ``benchmarks/bench_redis_e2e.py --parts drain --logging warning,info:json,debug:json`` (the Redis
end-to-end drain, thin mode, a local redis-server): the drain rate with ``LOG_LEVEL=info`` and the JSON console against
``LOG_LEVEL=warning`` in the same run (and ``debug``, three lines per job, as the worst case).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from loguru import logger

from bananas import log_route
from bananas.builtin.stdout_logsink import console_sink
from bananas.job import Job
from bananas.log_context import CURRENT_JOB, InterceptHandler, JobScope, job_logger, set_min_level
from bananas.log_record import json_line
from bananas.worker import events

HERE = os.path.dirname(os.path.abspath(__file__))


def per_call(fn: Callable[[], Any], calls: int) -> float:
    """Microseconds per call of ``fn`` (best of three rounds)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - started) / calls)
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=50_000)
    ap.add_argument("--drain", action="store_true", help="also run the Redis end-to-end drain per logging profile")
    ap.add_argument("--n", type=int, default=20_000, help="jobs per drain")
    ap.add_argument("--repeat", type=int, default=2, help="drains per profile (interleaved)")
    args = ap.parse_args()

    state = SimpleNamespace(id="bench-1", plan=SimpleNamespace(mode="thin"))
    job = Job(name="send_mail", payload={"to": "a@example.com"}, queue="normal", attempts=1)
    succeeded = lambda: events.succeeded(state, job, "thin-1", 0.0123)  # noqa: E731 - the measured call
    rows: list[tuple[str, float]] = []
    devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run

    logger.remove()
    root = logging.getLogger()
    root.addHandler(InterceptHandler())
    root.setLevel(logging.INFO)
    stdlib = logging.getLogger("bench.lib")

    def with_sink(options: dict[str, Any], stream: io.TextIOBase | Any = devnull) -> Callable[[], None]:
        config = console_sink(options, stream=stream)
        handler = logger.add(config.sink, level=config.level, **dict(config.options))
        set_min_level(config.level)
        route = None
        if config.record_sink is not None:  # as configure_logging: records go straight to the JSON console
            route = log_route.install([(logger.level(config.level).no, config.record_sink)])

        def remove() -> None:
            log_route.clear(route)
            logger.remove(handler)
            if config.close is not None:
                config.close()

        return remove

    # -- disabled level -------------------------------------------------------------------------------------------
    remove = with_sink({"format": "json", "level": "INFO"})
    rows.append(("disabled: per-job DEBUG event (events.succeeded), DEBUG off", per_call(succeeded, args.calls)))
    rows.append(("disabled: job_logger.debug('sent {}', n) below INFO",
                 per_call(lambda: job_logger.debug("sent {}", 3), args.calls)))
    rows.append(("disabled: stdlib logger.debug('sent %s', n) below INFO",
                 per_call(lambda: stdlib.debug("sent %s", 3), args.calls)))
    remove()

    # -- console on ---------------------------------------------------------------------------------------------
    for fmt in ("json", "text"):
        remove = with_sink({"format": fmt, "level": "DEBUG", "color": False})
        rows.append((f"console {fmt}: per-job DEBUG event (events.succeeded)", per_call(succeeded, args.calls)))
        scope = JobScope(job, "thin-1", "bench-1", "thin")
        token = CURRENT_JOB.set(scope)
        paths = ["route", "loguru"] if fmt == "json" else ["loguru"]
        for path in paths:
            aside = logger.add(lambda m: None, level="CRITICAL") if path == "loguru" and fmt == "json" else None
            rows.append((f"console {fmt}: job_logger.info inside a job ({path})",
                         per_call(lambda: job_logger.info("sent {}", 3), args.calls)))
            rows.append((f"console {fmt}: stdlib logging.info inside a job ({path})",
                         per_call(lambda: stdlib.info("sent %s", 3), args.calls)))
            if aside is not None:
                logger.remove(aside)
        CURRENT_JOB.reset(token)
        remove()

    # -- how the console could write --------------------------------------------------------------------------------
    set_min_level("DEBUG")
    handler = logger.add(lambda m: None, level="DEBUG", format="{message}")
    rows.append(("baseline: the same event to a sink that drops it (loguru's share)", per_call(succeeded, args.calls)))
    logger.remove(handler)
    handler = logger.add(lambda m: devnull.write(json_line(m.record) + "\n"), level="DEBUG", format="{message}")
    rows.append(("alternative: synchronous JSON write to the stream", per_call(succeeded, args.calls)))
    logger.remove(handler)
    handler = logger.add(lambda m: devnull.write(json_line(m.record) + "\n"), level="DEBUG", format="{message}",
                         enqueue=True)
    rows.append(("alternative: loguru enqueue=True, JSON", per_call(succeeded, args.calls // 5)))
    logger.remove(handler)

    width = max(len(k) for k, _ in rows)
    print(f"| {'call site':<{width}} | µs per call |")
    print(f"|{'-' * (width + 2)}|-------------|")
    for key, value in rows:
        print(f"| {key:<{width}} | {value:11.2f} |")
    sys.stdout.flush()

    if args.drain:
        print("\nRedis end-to-end drain per logging profile (benchmarks/bench_redis_e2e.py):", flush=True)
        subprocess.run(
            [sys.executable, os.path.join(HERE, "bench_redis_e2e.py"), "--parts", "drain", "--modes", "thin",
             "--n", str(args.n), "--repeat", str(args.repeat), "--logging", "warning,info:json,debug:json"],
            check=True,
        )


if __name__ == "__main__":
    main()
