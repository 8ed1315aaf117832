"""A batch enqueue in several script calls (``_ENQUEUE_CHUNK`` jobs per call, all in one round trip), against real
redis-servers: every job is stored exactly once and in order whatever the batch size, and when some of the calls
fail (a job key of another type, ``maxmemory``) the error names exactly the jobs that were not stored: the jobs of
the failed calls, none of which left a record, never a job that was stored (:mod:`bananas_redis.enqueue_rounds`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
import redis
from bananas_redis import RedisBroker, RedisOptions
from bananas_redis.broker import _ENQUEUE_CHUNK
from bananas_redis.keys import queue_keys
from bananas_redis.testing import RedisServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bananas.errors import BananasError, BrokerError, BrokerUnavailable
from bananas.plugin_api import Envelope

C = _ENQUEUE_CHUNK


def _envs(n: int, queue: str = "q", body: bytes = b"body", tag: str = "") -> list[Envelope]:
    tag = tag or uuid.uuid4().hex[:6]
    return [Envelope(f"{tag}-{i}", queue, body + b"-%d" % i, None, "t") for i in range(n)]


def _ready(client: redis.Redis, prefix: str, queue: str) -> list[str]:
    """The ready ids of ``queue`` (type ``t``), in the order fetches take them."""
    return [m.decode() for m in client.zrange(queue_keys(prefix, queue).type_ready("t"), 0, -1)]


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def sync_broker(redis_url: str, prefix: str) -> Iterator[RedisBroker]:
    broker = RedisBroker(redis_url, RedisOptions(prefix=prefix))
    yield broker
    asyncio.run(broker.close())


_sizes = st.one_of(st.integers(1, 3 * C + 2), st.sampled_from([C - 1, C, C + 1, 2 * C, 2 * C + 1, 4 * C]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=_sizes, other=st.integers(0, C + 1), generated=st.booleans())
def test_a_batch_is_stored_once_and_in_order_at_any_size(sync_broker, client, prefix, n, other, generated):
    # Given a batch of n jobs for one queue (one call per chunk) and `other` for a second queue, interleaved
    queue = f"q{uuid.uuid4().hex[:6]}"
    mine, theirs = _envs(n, queue), _envs(other, queue + "-b")
    batch = [e for i in range(max(n, other)) for e in (mine[i : i + 1] + theirs[i : i + 1])]
    ids = {e.id for e in batch} if generated else ()

    # When it is enqueued in one blocking call
    flags = sync_broker.enqueue_sync(batch, generated_ids=ids)

    # Then every job is stored, once, in the order of the call within its queue, with its own body
    assert flags == [True] * len(batch)
    assert _ready(client, prefix, queue) == [e.id for e in mine]
    assert _ready(client, prefix, queue + "-b") == [e.id for e in theirs]
    keys = queue_keys(prefix, queue)
    for e in (mine[0], mine[-1], mine[min(C, n - 1)]):
        assert client.hget(keys.job(e.id), "body") == e.body
    # and enqueuing the same batch again stores nothing (each id is live)
    assert sync_broker.enqueue_sync(batch) == [False] * len(batch)
    assert len(_ready(client, prefix, queue)) == n


async def test_the_async_enqueue_stores_a_chunked_batch_once_and_in_order(make_broker, client, prefix):
    broker = await make_broker()
    batch = _envs(2 * C + 7)
    assert await broker.enqueue(batch) == [True] * len(batch)
    assert _ready(client, prefix, "q") == [e.id for e in batch]
    taken = await broker.fetch(["q"], len(batch), 0)
    assert [d.id for d in taken] == [e.id for e in batch]


def _poison(client: redis.Redis, prefix: str, env: Envelope) -> None:
    """A string where ``env``'s job record would go: the script call holding it fails with WRONGTYPE."""
    client.set(queue_keys(prefix, env.queue).job(env.id), "not a hash")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(C + 1, 4 * C), data=st.data())
def test_a_failed_call_names_exactly_its_jobs_and_never_a_stored_one(sync_broker, client, prefix, n, data):
    # Given a batch whose job at position `bad` has a key of another type in the way
    batch = _envs(n, queue=f"q{uuid.uuid4().hex[:6]}")
    bad = data.draw(st.integers(0, n - 1), label="bad")
    _poison(client, prefix, batch[bad])
    first, last = bad // C * C, min(n, bad // C * C + C) - 1  # the chunk of the bad job: its script call

    # When it is enqueued
    with pytest.raises(BrokerError) as info:
        sync_broker.enqueue_sync(batch, generated_ids={e.id for e in batch})

    # Then the error names that call's jobs, by position and id, and says the others were stored
    err = info.value
    assert not type(err).__module__.startswith("redis")
    assert err.not_enqueued == tuple(range(first, last + 1))  # type: ignore[attr-defined]
    assert err.not_enqueued_ids == tuple(e.id for e in batch[first : last + 1])  # type: ignore[attr-defined]
    assert "WRONGTYPE" in str(err)
    assert f"{last - first + 1} of {n} jobs were not enqueued (positions {first}-{last} of the call)" in str(err)
    # and exactly the others are stored, in order; the failed call wrote no record at all
    keys = queue_keys(prefix, batch[0].queue)
    assert _ready(client, prefix, batch[0].queue) == [e.id for e in batch[:first] + batch[last + 1 :]]
    assert [client.exists(keys.job(e.id)) for e in batch[first : last + 1]] == [
        int(i == bad) for i in range(first, last + 1)
    ]


async def test_the_async_enqueue_reports_a_failed_call_the_same_way(make_broker, client, prefix):
    broker = await make_broker()
    batch = _envs(3 * C)
    _poison(client, prefix, batch[C + 3])
    with pytest.raises(BrokerError) as info:
        await broker.enqueue(batch)  # explicit ids: the home claims go in the same round trip and succeed
    assert info.value.not_enqueued == tuple(range(C, 2 * C))  # type: ignore[attr-defined]
    assert _ready(client, prefix, "q") == [e.id for e in batch[:C] + batch[2 * C :]]
    # a stored job of the batch is live: enqueued again, it is not stored twice
    assert await broker.enqueue(batch[:1]) == [False]


def test_a_batch_that_fills_memory_half_way_names_the_jobs_not_stored(redis_server, prefix):
    # Given a server with little room, and a batch whose calls fill it: the first calls fit, the later ones are
    # refused at their first write
    server = RedisServer(redis_server.binary, extra=("--maxmemory", "4mb", "--maxmemory-policy", "noeviction"))
    server.start()
    broker = RedisBroker(server.url, RedisOptions(prefix=prefix))
    client = redis.Redis.from_url(server.url)
    try:
        batch = _envs(8 * C, body=b"x" * 4000)
        with pytest.raises(BrokerUnavailable, match="out of memory") as info:
            broker.enqueue_sync(batch, generated_ids={e.id for e in batch})
        lost = info.value.not_enqueued  # type: ignore[attr-defined]
        stored = _ready(client, prefix, "q")
        # Then the jobs named lost and the stored ones are the whole batch, split at a call boundary
        assert 0 < len(lost) < len(batch), "the batch should fill memory part of the way"
        assert lost[0] % C == 0 and lost == tuple(range(lost[0], len(batch)))
        assert stored == [e.id for e in batch[: lost[0]]]
        assert "jobs were not enqueued (positions" in str(info.value)
        assert isinstance(info.value, BananasError)
    finally:
        client.close()
        asyncio.run(broker.close())
        server.cleanup()


_bodies = st.one_of(st.binary(max_size=40), st.text(max_size=20))
_etas = st.one_of(st.none(), st.floats(0, 4e9, allow_nan=False))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=12), _bodies, _etas, st.sampled_from(["", "t", "résumé"])),
                min_size=1, max_size=12))
def test_the_enqueue_call_is_encoded_as_its_arguments_would_be(jobs):
    # The enqueue call carries its own RESP encoding (built per job in one format); it must be exactly what
    # packing its argument tuple writes, for ready and delayed jobs, any type, bytes or text bodies
    from bananas_redis.broker import _enqueue_command, _pack

    envs = [Envelope(i, "q", body, eta, t) for i, body, eta, t in jobs]
    command = _enqueue_command(queue_keys("p", "q"), "1700000000.5", envs)
    assert command.wire == _pack([tuple(command)])
    assert list(command[16:]) == [x for e in envs for x in (e.id, e.body if isinstance(e.body, bytes)
                                  else e.body.encode(), "" if e.eta is None else repr(float(e.eta)), e.job_type)]
