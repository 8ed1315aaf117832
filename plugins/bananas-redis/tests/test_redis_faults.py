"""Fault drills against a real redis-server: malformed ready entries, outages, authentication, maxmemory, and the
dead-letter CLI when ``--limit`` cuts the list."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from bananas_redis import RedisBroker, RedisOptions
from bananas_redis.broker import _pack
from bananas_redis.keys import queue_keys
from bananas_redis.results import RedisResultBackend
from bananas_redis.testing import RedisServer
from loguru import logger

from bananas.broker import Envelope
from bananas.errors import BananasError, BrokerUnavailable
from bananas.plugin_api import flat_record


def _env(job_id: str, queue: str = "q", body: bytes | None = None) -> Envelope:
    return Envelope(job_id, queue, body if body is not None else job_id.encode(), None)


@pytest.fixture
def logs() -> Iterator[list[str]]:
    """Every loguru message (WARNING and up for fault logs, INFO for recoveries) logged during the test."""
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO")
    try:
        yield lines
    finally:
        logger.remove(sink)


# -- 1. take never fails half-way ---------------------------------------------------------------------------------
# kind -> what it does to the record key of an id (None: no record at all); the expected outcome
BAD_ENTRIES: dict[str, str] = {
    "nobody": "dead",  # hash, state ready, no body
    "string": "dead",  # a STRING where the hash should be
    "list": "dropped",  # keys of other types: dropped from ready, left alone
    "set": "dropped",
    "zset": "dropped",
    "stream": "dropped",
    "missing": "dropped",  # no record at all
    "running": "dropped",  # records in another state: stale ids
    "completed": "dropped",
    "dead": "dropped",
    "scheduled": "dropped",
    "weird": "dropped",  # an unknown state
    "stateless": "dropped",  # a hash without a state
}


def _plant(client: redis.Redis, key: str, kind: str) -> None:
    if kind == "nobody":
        client.hset(key, mapping={"state": "ready", "updated_at": "1"})
    elif kind == "string":
        client.set(key, b"payload of " + key.encode())
    elif kind == "list":
        client.rpush(key, "x")
    elif kind == "set":
        client.sadd(key, "x")
    elif kind == "zset":
        client.zadd(key, {"x": 1})
    elif kind == "stream":
        client.xadd(key, {"x": "1"})
    elif kind == "stateless":
        client.hset(key, mapping={"body": "b"})
    elif kind != "missing":
        client.hset(key, mapping={"state": kind, "body": "b", "updated_at": "1"})


def _plant_ready(client: redis.Redis, prefix: str, order: list[str], where: str) -> None:
    """Make ``order`` the queue's only ready entries: in the 0.1 list, or in the ready ZSET of the type ``""``
    (positions 1, 2, ... ; a ZSET holds an id once, so a repeated id keeps its first place)."""
    qk = queue_keys(prefix, "q")
    client.delete(qk.ready, qk.type_ready(""), qk.types, qk.count, qk.wake, qk.type_signal(""))
    if where == "legacy":
        client.rpush(qk.ready, *order)
        return
    positions: dict[str, int] = {}
    for job_id in order:
        positions.setdefault(job_id, len(positions) + 1)
    client.zadd(qk.type_ready(""), positions)
    client.zadd(qk.types, {"": 1})
    client.set(qk.count, len(positions))


def _ready_left(client: redis.Redis, prefix: str) -> int:
    qk = queue_keys(prefix, "q")
    return int(client.llen(qk.ready)) + int(client.zcard(qk.type_ready("")))


@pytest.mark.parametrize("where", ["legacy", "typed"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("batch", [1, 2, 3, 7, 100])
async def test_take_hands_out_every_good_job_once_and_buries_or_drops_every_bad_entry(
    make_broker, redis_url, prefix, logs, batch, seed, where
):
    # Given good jobs interleaved with every kind of bad entry (and, in the 0.1 list, a duplicate of a good id) in
    # the ready entries of the queue: the 0.1 list, or the ready ZSET of a job type
    broker = await make_broker()
    good = [f"good{i}" for i in range(12)]
    await broker.enqueue([_env(i) for i in good])
    qk = queue_keys(prefix, "q")
    client = redis.Redis.from_url(redis_url)
    rng = random.Random(seed)
    bad = {f"bad-{kind}": kind for kind in BAD_ENTRIES}
    for job_id, kind in bad.items():
        _plant(client, qk.job(job_id), kind)
    order = good + list(bad)
    rng.shuffle(order)
    dup = rng.choice(good)
    order.insert(order.index(dup) + rng.randint(1, 3), dup)
    _plant_ready(client, prefix, order, where)

    # When workers fetch (some with pipelined acks) until nothing is left
    handed: list[str] = []
    held = []
    for _ in range(len(order) + 5):
        if held and rng.random() < 0.5:
            flags, got = await broker.ack_and_fetch(held, ["q"], batch)
            assert all(flags)
        else:
            got = await broker.fetch(["q"], batch, 0)
            if held:
                assert all(await broker.ack(held))
        held = got
        handed += [d.id for d in got]
        assert all(d.body == d.id.encode() for d in got)
        if not got and not _ready_left(client, prefix):
            break

    # Then every good job was handed out exactly once, and the ready entries are all gone
    assert sorted(handed) == sorted(good)
    assert _ready_left(client, prefix) == 0
    assert int(client.get(qk.count) or 0) == 0 and not client.exists(qk.types, qk.wake)
    # malformed records are dead letters with a reason (a string loses nothing: its value is the body) ...
    letters = {d.id: d for d in await broker.dead_letters("q", 100)}
    assert set(letters) == {i for i, k in bad.items() if BAD_ENTRIES[k] == "dead"}
    assert letters["bad-nobody"].reason == "malformed record: no body"
    assert letters["bad-string"].reason == "malformed record: a string, not a hash"
    assert letters["bad-string"].body == b"payload of " + qk.job("bad-string").encode()
    assert client.type(qk.job("bad-string")) == b"hash"
    # ... keys of other types are left alone, and every bad entry (and the duplicate) got exactly one warning
    for kind in ("list", "set", "zset", "stream"):
        assert client.type(qk.job(f"bad-{kind}")) == kind.encode()
    assert not client.exists(qk.job("bad-missing"))
    for job_id in [*bad, dup] if where == "legacy" else bad:
        mine = [line for line in logs if f"ready entry {job_id} of queue 'q'" in line]
        assert len(mine) == 1, (job_id, logs)
        outcome = "dead-lettered" if job_id in letters else "dropped"
        assert outcome in mine[0], mine
    # and the dead letters can still be settled and listed: no None body anywhere
    assert await broker.requeue_dead("q", ["bad-nobody"]) == 0  # nothing to run: it stays dead
    assert await broker.requeue_dead("q", ["bad-string"]) == 1
    client.close()


async def test_a_take_after_a_wrongtype_entry_loses_no_id(make_broker, redis_url, prefix):
    # Given a string record at the head of the ready list, and good jobs behind it
    broker = await make_broker()
    await broker.enqueue([_env("a"), _env("b"), _env("c")])
    qk = queue_keys(prefix, "q")
    client = redis.Redis.from_url(redis_url)
    client.set(qk.job("s"), "x")
    client.lpush(qk.ready, "s")
    client.close()

    # When one fetch takes the whole batch, then every job is handed out and nothing is lost
    got = await broker.fetch(["q"], 10, 0)
    assert [d.id for d in got] == ["a", "b", "c"]
    assert [d.id for d in await broker.dead_letters("q")] == ["s"]


async def test_pack_rejects_none_and_dead_letter_stores_an_empty_body(make_broker):
    with pytest.raises(TypeError, match="None"):
        _pack([("HSET", "k", "f", None)])
    broker = await make_broker()
    await broker.enqueue([_env("a")])
    (d,) = await broker.fetch(["q"], 1, 0)
    assert await broker.dead_letter(d, body=None, reason="boom")  # type: ignore[arg-type]
    (letter,) = await broker.dead_letters("q")
    assert (letter.id, letter.body, letter.reason) == ("a", b"", "boom")


# -- 2. producers recover after an outage ---------------------------------------------------------------------------
async def test_enqueue_sync_and_enqueue_recover_after_more_failures_than_the_pool_size(redis_server, prefix):
    server = RedisServer(redis_server.binary).start()
    options = RedisOptions(prefix=prefix, pool_size=4, timeout=0.5, connect_timeout=0.5)
    broker = RedisBroker(server.url, options)
    try:
        await broker.connect()
        broker.enqueue_sync([_env("before")])

        # When Redis is down for many more calls than the pool has connections
        server.stop()
        for i in range(25):
            with pytest.raises(BrokerUnavailable):
                broker.enqueue_sync([_env(f"down{i}")])
            with pytest.raises(BrokerUnavailable):
                await broker.enqueue([_env(f"adown{i}")])

        # Then both lanes work again once it is back on the same port
        server.start()
        broker.enqueue_sync([_env("after")])
        await broker.enqueue([_env("after-async")])
        assert [d.id for d in await broker.fetch(["q"], 10, 0)] == ["after", "after-async"]  # no AOF: fresh
        # and neither lane piled up connections meanwhile
        assert len(broker._sync_all) <= options.pool_size
        assert broker._pool is not None and len(broker._pool._all) <= options.pool_size
    finally:
        await broker.close()
        server.cleanup()


# -- 3. a missing password is a clear error -----------------------------------------------------------------------
async def test_a_missing_or_wrong_password_gives_a_clear_error(redis_server, prefix):
    server = RedisServer(redis_server.binary, extra=("--requirepass", "s3cret")).start()
    try:
        bare = RedisBroker(server.url, RedisOptions(prefix=prefix, timeout=2.0))
        with pytest.raises(BrokerUnavailable, match="authentication required"):
            await bare.connect()
        with pytest.raises(BrokerUnavailable, match="authentication required"):
            bare.enqueue_sync([_env("a")])
        await bare.close()

        wrong = RedisBroker(f"redis://:n0pe-pw@127.0.0.1:{server.port}/0", RedisOptions(prefix=prefix))
        with pytest.raises(BrokerUnavailable, match="authentication failed: WRONGPASS") as info:
            await wrong.connect()
        assert "n0pe-pw" not in str(info.value)
        with pytest.raises(BrokerUnavailable, match="authentication failed: WRONGPASS") as info:
            wrong.enqueue_sync([_env("a")])
        assert "n0pe-pw" not in str(info.value)
        await wrong.close()

        results = RedisResultBackend(server.url)
        with pytest.raises(BrokerUnavailable, match="authentication required"):
            await results.connect()
        await results.close()
        results = RedisResultBackend(f"redis://:n0pe-pw@127.0.0.1:{server.port}/0")
        with pytest.raises(BrokerUnavailable, match="authentication failed: WRONGPASS") as info:
            await results.connect()
        assert "n0pe-pw" not in str(info.value)
        await results.close()

        good = RedisBroker(f"redis://:s3cret@127.0.0.1:{server.port}/0", RedisOptions(prefix=prefix))
        await good.connect()
        good.enqueue_sync([_env("a")])
        assert [d.id for d in await good.fetch(["q"], 1, 0)] == ["a"]
        await good.close()
    finally:
        server.cleanup()


# -- 5. honest log lines -------------------------------------------------------------------------------------------
async def test_an_outage_is_logged_once_and_its_end_only_when_redis_answers(redis_server, prefix, logs):
    server = RedisServer(redis_server.binary).start()
    options = RedisOptions(prefix=prefix, retry_backoff=0.1, retry_backoff_max=0.2, connect_timeout=0.5)
    broker = RedisBroker(server.url, options)
    events: list[dict] = []
    sink = logger.add(lambda message: events.append(flat_record(message.record)), level="INFO")
    try:
        await broker.connect()
        assert await broker.fetch(["q"], 1, 0.05) == []  # an empty fetch: the next one blocks first

        # When Redis goes away under several concurrent fetchers whose deadlines pass during the backoff
        server.stop()
        results = await asyncio.gather(*(broker.fetch(["q"], 1, 0.3) for _ in range(4)))
        assert results == [[]] * 4

        # Then the loss is logged once, and no recovery is claimed while Redis is still down
        lost = [line for line in logs if "connection lost" in line]
        assert len(lost) == 1, logs
        assert f"127.0.0.1:{server.port}" in lost[0], lost  # with the cause, whichever connection failed first
        assert "closed the connection" in lost[0] or "connection refused" in lost[0], lost
        assert not [line for line in logs if "connection back" in line], logs

        # When it is back, the first round trip with a reply logs the recovery, once
        server.start()
        assert await broker.fetch(["q"], 1, 0.05) == []
        await broker.enqueue([_env("a")])
        assert [d.id for d in await broker.fetch(["q"], 1, 0.05)] == ["a"]
        assert len([line for line in logs if "connection back" in line]) == 1, logs
        # and both records are the broker's events of component redis (docs/OBSERVABILITY.md)
        outage = [(e["component"], e["event"], e["level"]) for e in events if e.get("event", "").startswith("broker_")]
        assert outage == [("redis", "broker_connection_lost", "WARNING"), ("redis", "broker_connection_back", "INFO")]
    finally:
        logger.remove(sink)
        await broker.close()
        server.cleanup()


async def test_a_fetch_retried_through_an_outage_leases_from_when_redis_got_it(redis_server, prefix):
    # Given a ready job, a worker-side broker on a clock the test moves, and a lease of 5 s
    server = RedisServer(redis_server.binary, appendonly=True).start()
    clock = [1_000_000.0]
    options = RedisOptions(prefix=prefix, lease=5.0, retry_backoff=0.05, retry_backoff_max=0.1,
                           connect_timeout=0.5, socket_timeout=0.5, clock=lambda: clock[0])
    broker = RedisBroker(server.url, options)
    try:
        await broker.connect()
        await broker.enqueue([_env("a")])

        # When Redis is down as the fetch starts, and comes back 60 s of clock later (the outage outlasts the lease)
        server.stop()
        fetch = asyncio.ensure_future(broker.fetch(["q"], 1, 0))
        await asyncio.sleep(0.3)
        assert not fetch.done()
        clock[0] += 60.0
        server.start()
        (delivery,) = await asyncio.wait_for(fetch, 10)

        # Then the lease runs from the attempt that reached Redis: a reaper at the same moment recovers nothing,
        # and the worker's ack still holds the lease (a stale lease would be reaped at once and the job run twice)
        assert await broker.reap() == 0
        assert await broker.ack([delivery]) == [True]
    finally:
        await broker.close()
        server.cleanup()


def test_an_empty_timeout_or_reset_is_described_with_the_server_and_the_wait():
    broker = RedisBroker("redis://127.0.0.1:1/0", RedisOptions(socket_timeout=10.0))
    text = str(broker._unavailable("fetch", TimeoutError()))
    assert text.endswith("during fetch: connected to 127.0.0.1:1, but no reply within 10s"), text
    text = str(broker._unavailable("fetch", ConnectionResetError()))
    assert text.endswith("during fetch: the server at 127.0.0.1:1 closed the connection"), text


async def test_out_of_memory_is_broker_unavailable_and_never_a_redis_error(redis_server, prefix):
    server = RedisServer(redis_server.binary, extra=("--maxmemory", "1mb", "--maxmemory-policy", "noeviction"))
    server.start()
    broker = RedisBroker(server.url, RedisOptions(prefix=prefix))
    big = os.urandom(512 * 1024)
    try:
        await broker.connect()
        with pytest.raises(BrokerUnavailable) as info:  # noqa: PT012 - memory fills after a few jobs
            for i in range(20):
                await broker.enqueue([_env(f"big{i}", body=big)])
        text = str(info.value)
        assert "is out of memory (maxmemory reached)" in text and "the job was not enqueued" in text, text
        with pytest.raises(BrokerUnavailable, match="out of memory") as sync_info:
            broker.enqueue_sync([_env("one-more", body=big)])
        assert "the job was not enqueued" in str(sync_info.value)
        # never a redis-py type, even for a batch
        try:
            broker.enqueue_sync([_env(f"more{i}", body=big) for i in range(3)])
        except Exception as exc:  # noqa: BLE001 - the type is what is checked
            assert isinstance(exc, BananasError), repr(exc)
            assert not type(exc).__module__.startswith("redis")
    finally:
        await broker.close()
        server.cleanup()


# -- 6. dlq list says when --limit cut it --------------------------------------------------------------------------
def _dlq(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANANAS_", "WORKER_", "LOG_"))}
    env["BANANAS_LOAD_PLUGINS"] = "bananas-redis"
    return subprocess.run(
        [sys.executable, "-m", "bananas.cli", "dlq", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_dlq_list_says_how_many_letters_the_limit_hid(make_broker, redis_url, prefix, tmp_path):
    # Given 7 dead letters in "q" and 2 in "other"
    broker = await make_broker()
    await broker.enqueue([_env(f"j{i}") for i in range(7)] + [_env(f"o{i}", "other") for i in range(2)])
    for queue, count in (("q", 7), ("other", 2)):
        for d in await broker.fetch([queue], count, 0):
            assert await broker.dead_letter(d, body=d.body, reason="boom")
    (tmp_path / "bananas.toml").write_text(
        textwrap.dedent(
            f"""
            broker = "{redis_url}"

            [broker_options]
            prefix = "{prefix}"
            """
        )
    )

    # When the list is cut by --limit, a last line says how many of how many (per cut queue)
    out = await asyncio.to_thread(_dlq, tmp_path, "list", "--limit", "3")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1 + 3 + 2 + 1, out.stdout
    assert lines[-1] == "showing 3 of 7 dead letters in 'q' (use --limit N to see more)"

    # And when nothing was cut, no such line
    whole = await asyncio.to_thread(_dlq, tmp_path, "list", "--limit", "7")
    assert whole.returncode == 0, whole.stderr
    assert len(whole.stdout.splitlines()) == 1 + 9
    assert "showing" not in whole.stdout
