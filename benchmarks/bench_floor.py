"""What this machine allows at all, with no task queue in the way (printed, never asserted): issue 17's floors.

    .venv/bin/python benchmarks/bench_floor.py [--seconds 3] [--lat-n 1000] [--rate 200] [--hops 1,2,3]

Starts its own redis-server on a free loopback port (``bananas_redis.testing.RedisServer``, persistence off) and
measures, from one Python thread:

* ``round trips``: back-to-back ``PING``s on a raw blocking socket (no client library), then with redis-py's
  blocking client: the most single ``app.enqueue`` calls per second one thread could ever do here, since each is
  one round trip;
* ``hops``: a producer ``RPUSH``-es its send time at ``--rate``/s; a consumer process (redis-py's asyncio client, as
  the worker) wakes from ``BLPOP`` and makes ``hops - 1`` more round trips (``INCR``) before it reads the clock.
  ``hops=1`` is the least any queue's enqueue → start can be here (enqueue, wake-up); a queue that takes its job
  after the wake-up in a second round trip starts at ``hops=2`` or later.

Compare Bananas's own figures (``bench_redis_e2e.py --parts latency``, ``bench_enqueue.py``) with these, in the
same minute: the machine's speed moves between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time

import redis
from bananas_redis.testing import RedisServer, find_redis_servers


def _raw_pings(port: int, seconds: float) -> float:
    """``PING`` round trips per second on a plain blocking socket."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        n, end = 0, time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < end:
            sock.sendall(b"PING\r\n")
            if sock.recv(64) != b"+PONG\r\n":
                raise RuntimeError("unexpected reply to PING")
            n += 1
        return n / (time.perf_counter() - started)


def _client_pings(url: str, seconds: float) -> float:
    client = redis.Redis.from_url(url)
    try:
        n, end = 0, time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < end:
            client.ping()
            n += 1
        return n / (time.perf_counter() - started)
    finally:
        client.close()


async def _consume(url: str, hops: int) -> None:
    import redis.asyncio as aredis

    client = aredis.Redis.from_url(url)
    delays: list[float] = []
    while True:
        _, value = await client.blpop(["floor:hop"], 5)
        if value == b"stop":
            break
        for _ in range(hops - 1):
            await client.incr("floor:count")
        delays.append(time.time() - float(value))
    await client.aclose()
    delays.sort()
    n = len(delays)
    print(f"{delays[n // 2] * 1e3:.2f} {delays[int(n * 0.95)] * 1e3:.2f} {delays[int(n * 0.99)] * 1e3:.2f} "
          f"{delays[-1] * 1e3:.1f}", flush=True)


def _hops(url: str, hops: int, n: int, rate: float) -> str:
    client = redis.Redis.from_url(url)
    consumer = subprocess.Popen([sys.executable, __file__, "--consume", url, "--hops", str(hops)],
                                stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # the consumer connects and blocks
        for _ in range(n):
            client.rpush("floor:hop", repr(time.time()))
            time.sleep(1.0 / rate)
        client.rpush("floor:hop", "stop")
        out, _ = consumer.communicate(timeout=30)
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
        client.close()
    p50, p95, p99, top = out.split()
    return f"{p50} / {p95} / {p99} ms  (max {top})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--lat-n", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--hops", default="1,2,3")
    parser.add_argument("--consume", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consume:
        asyncio.run(_consume(args.consume, int(args.hops)))
        return
    server = RedisServer(find_redis_servers()[0][1]).start()
    try:
        rows = [
            ("round trips/s, raw blocking socket", f"{_raw_pings(server.port, args.seconds):,.0f}"),
            ("round trips/s, redis-py blocking client", f"{_client_pings(server.url, args.seconds):,.0f}"),
        ]
        for hops in (int(h) for h in args.hops.split(",")):
            rows.append((f"hops={hops}: send → consumer p50/p95/p99 at {args.rate:g}/s",
                         _hops(server.url, hops, args.lat_n, args.rate)))
    finally:
        server.stop()
    print(f"\n{os.cpu_count()} cores, redis {find_redis_servers()[0][0]}")
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
