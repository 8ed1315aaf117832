"""Producer figures on a local Redis (printed, never asserted): issue 17 point 4.

    .venv/bin/python benchmarks/bench_enqueue.py [--n 10000] [--batches 30] [--batch 1000] [--repeat 3]
                                                 [--spin 0,50,200] [--url redis://...] [--serializer orjson]

Starts its own redis-server on a free loopback port (``bananas_redis.testing.RedisServer``) unless ``--url`` names
one, and measures, one producer thread, with the Redis broker's defaults (home keys, job records):

* ``single``: ``app.enqueue("noop", {})`` N times, one at a time;
* ``async``: ``await app.enqueue_async("noop", {})`` N times on one event loop (what an ASGI handler does);
* ``many``: ``app.enqueue_many`` of ``--batch`` jobs, ``--batches`` times;
* ``many_async`` (only when named in ``--parts``): ``await app.enqueue_many_async`` of the same batches on one loop.

Each row gives the rate (jobs/s, wall clock), the client's CPU per job (``time.process_time``), Redis's CPU per job
(``INFO cpu``, user + sys of the server process), Redis's own accounting per job (``INFO commandstats``: the usec of
the commands a client sends, ``EVALSHA`` and the like; the commands scripts run inside are left out) and round trips
per job (calls of the broker's ``_send_sync`` / ``_send``, each one write and its replies).

``--spin 0,50,200`` repeats the sync rows once per ``[broker_options] reply_spin_us`` value, interleaved (A, B, A, B).
To compare with another source tree of the kernel and the plugin (the "before" of docs/PERFORMANCE.md), put it first
on ``PYTHONPATH``:
``PYTHONPATH=/path/to/old:/path/to/old/plugins/bananas-redis/src .venv/bin/python benchmarks/bench_enqueue.py``
(``--spin`` is then ignored: the option does not exist there). On a shared machine compare CPU per job rather than
rates, and repeat (``--repeat``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import redis
from bananas_redis.testing import RedisServer, find_redis_servers

from bananas import Bananas

_CLIENT_COMMANDS = ("evalsha", "eval", "rpush", "ltrim", "hmget", "incr", "hsetnx", "hkeys", "ping", "script")


def _redis_figures(r: redis.Redis) -> tuple[float, float]:
    """(Redis CPU seconds, usec of the commands clients send) so far."""
    cpu = r.info("cpu")
    stats = r.info("commandstats")
    usec = sum(v["usec"] for k, v in stats.items() if k.removeprefix("cmdstat_").split("|")[0] in _CLIENT_COMMANDS)
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"], float(usec)


class _Counter:
    """Counts round trips: wraps one method of the broker instance."""

    def __init__(self, broker: Any, name: str) -> None:
        self.calls = 0
        inner = getattr(broker, name)
        if asyncio.iscoroutinefunction(inner):
            async def counted_async(*args: Any, **kwargs: Any) -> Any:
                self.calls += 1
                return await inner(*args, **kwargs)

            setattr(broker, name, counted_async)
        else:
            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls += 1
                return inner(*args, **kwargs)

            setattr(broker, name, counted)


def _row(label: str, jobs: int, r: redis.Redis, run: Callable[[], None], counter: _Counter) -> dict[str, float]:
    r.config_resetstat()
    cpu0, usec0 = _redis_figures(r)
    calls0 = counter.calls
    t0, c0 = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    cpu1, usec1 = _redis_figures(r)
    row = {
        "rate": jobs / wall,
        "client_us": cpu / jobs * 1e6,
        "redis_us": (cpu1 - cpu0) / jobs * 1e6,
        "cmd_us": (usec1 - usec0) / jobs,
        "trips": (counter.calls - calls0) / jobs,
    }
    print(f"{label:<22} {row['rate']:>10,.0f} jobs/s  client {row['client_us']:7.1f} us/job  redis cpu "
          f"{row['redis_us']:6.1f} us/job  commandstats {row['cmd_us']:6.1f} us/job  "
          f"round trips/job {row['trips']:.3f}", flush=True)
    return row


_SERIALIZER: str | None = None  # --serializer


def _app(url: str, spin: int | None) -> Bananas:
    overrides = {"broker_options": {"reply_spin_us": spin}} if spin is not None else None
    return Bananas(broker=url, overrides=overrides, serializer=_SERIALIZER)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="single and async enqueues per row")
    parser.add_argument("--batches", type=int, default=30, help="enqueue_many calls per row")
    parser.add_argument("--batch", type=int, default=1000, help="jobs per enqueue_many call")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--spin", default="", help="reply_spin_us values to compare, e.g. 0,50,200")
    parser.add_argument("--url", default="", help="an existing Redis (else one is started)")
    parser.add_argument("--parts", default="single,async,many")
    parser.add_argument("--serializer", default=None, help="e.g. orjson (BANANAS_LOAD_PLUGINS must load bananas-json)")
    args = parser.parse_args()
    global _SERIALIZER
    _SERIALIZER = args.serializer
    parts = set(args.parts.split(","))

    server = None if args.url else RedisServer(find_redis_servers()[0][1]).start()
    url = args.url or server.url  # type: ignore[union-attr]
    try:
        import bananas
        print(f"kernel {os.path.dirname(bananas.__file__)}; redis {url}; pid {os.getpid()}")
        r = redis.Redis.from_url(url)
        spins: list[int | None] = [int(s) for s in args.spin.split(",") if s] or [None]
        try:
            from bananas_redis.options import RedisOptions
            if "reply_spin_us" not in {f.name for f in __import__("attrs").fields(RedisOptions)}:
                spins = [None]
        except ImportError:
            spins = [None]
        apps = {spin: _app(url, spin) for spin in spins}
        rows: dict[str, list[dict[str, float]]] = {}
        specs = [{"name": "noop", "payload": {}} for _ in range(args.batch)]
        for _ in range(args.repeat):
            for spin, app in apps.items():
                tag = "" if spin is None else f" spin={spin}"
                app.enqueue("noop", {})  # connect, load the scripts, register the queue
                broker = app._sync_broker()
                sync = _Counter(broker, "_send_sync")
                if "single" in parts:
                    rows.setdefault("single" + tag, []).append(_row(
                        "single" + tag, args.n, r, lambda app=app: [app.enqueue("noop", {}) for _ in range(args.n)],
                        sync))
                if "many" in parts:
                    total = args.batch * args.batches
                    rows.setdefault("many" + tag, []).append(_row(
                        f"many x{args.batch}" + tag, total, r,
                        lambda app=app: [app.enqueue_many(specs) for _ in range(args.batches)], sync))
                del broker._send_sync  # the instance attribute: the class's method again
                r.flushdb()
            if "async" in parts:
                rows.setdefault("async", []).append(_async_row(url, args.n, r))
                r.flushdb()
            if "many_async" in parts:
                rows.setdefault("many_async", []).append(_async_row(url, args.batches, r, batch=args.batch))
                r.flushdb()
        if args.repeat > 1:
            print("medians:")
            for label, found in rows.items():
                med = {k: statistics.median(x[k] for x in found) for k in found[0]}
                print(f"  {label:<20} {med['rate']:>10,.0f} jobs/s  client {med['client_us']:7.1f} us/job  redis cpu "
                      f"{med['redis_us']:6.1f} us/job  commandstats {med['cmd_us']:6.1f} us/job  "
                      f"round trips/job {med['trips']:.3f}")
    finally:
        if server is not None:
            server.stop()


def _async_row(url: str, n: int, r: redis.Redis, batch: int = 0) -> dict[str, float]:
    """The ``async`` row: ``n`` single ``enqueue_async`` calls; with ``batch``, the ``many_async`` row: ``n``
    ``enqueue_many_async`` calls of ``batch`` jobs."""
    app = _app(url, None)
    specs = [{"name": "noop", "payload": {}} for _ in range(batch)]

    async def go() -> dict[str, float]:
        await app.enqueue_async("noop", {})
        broker = await app.broker()
        counter = _Counter(broker, "_send")
        loop = asyncio.get_running_loop()
        done: dict[str, float] = {}

        def run() -> None:
            async def many() -> None:
                for _ in range(n):
                    if batch:
                        await app.enqueue_many_async(specs)
                    else:
                        await app.enqueue_async("noop", {})
            fut = asyncio.run_coroutine_threadsafe(many(), loop)
            fut.result()

        # the loop must keep running while _row measures: run the measured part in a thread that waits on it
        label, jobs = (f"many_async x{batch}", n * batch) if batch else ("async", n)
        done.update(await asyncio.to_thread(_row, label, jobs, r, run, counter))
        await app.aclose()
        return done

    return asyncio.run(go())


if __name__ == "__main__":
    main()
