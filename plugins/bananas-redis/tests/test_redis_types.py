"""Type-aware queues on a real redis-server (issue 15): the key layout, one script call per fetch batch, blocking
typed fetches without polling, the wake-up repair, and jobs left in the 0.1 ready list by an older version."""

from __future__ import annotations

import asyncio
import time

import redis
from bananas_redis.keys import queue_keys

from bananas.broker import Envelope


def _typed(job_id: str, job_type: str, queue: str = "q") -> Envelope:
    return Envelope(job_id, queue, job_id.encode(), None, job_type)


def _stats(url: str) -> dict[str, int]:
    client = redis.Redis.from_url(url)
    try:
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in client.info("commandstats").items()}
    finally:
        client.close()


def _plant_01_job(client: redis.Redis, prefix: str, job_id: str, queue: str = "q") -> None:
    """A job as bananas-redis 0.1 leaves it: a record without a type, its id in the single ready list, a token."""
    qk = queue_keys(prefix, queue)
    client.hset(qk.job(job_id), mapping={"state": "ready", "body": job_id, "updated_at": "1700000000"})
    client.rpush(qk.ready, job_id)
    client.rpush(qk.signal, "1")


async def test_every_key_of_a_typed_queue_shares_its_hash_tag(make_broker, redis_url, prefix):
    # Given jobs of two types (one with an awkward name) in one queue
    broker = await make_broker()
    await broker.enqueue([_typed("a1", "send_email"), _typed("b1", "odd {name}:x")])

    # Then every key of the queue starts with its hash tag (one cluster slot), per-type keys included
    client = redis.Redis.from_url(redis_url)
    keys = sorted(k.decode() for k in client.keys(f"{{{prefix}:q}}*"))
    assert all(k.startswith(f"{{{prefix}:q}}:") for k in keys)
    qk = queue_keys(prefix, "q")
    assert {qk.type_ready("send_email"), qk.type_ready("odd {name}:x"), qk.types, qk.count, qk.wake} <= set(keys)
    assert client.zrange(qk.types, 0, -1) == [b"send_email", b"odd {name}:x"]  # by head position
    assert int(client.get(qk.count)) == 2 and client.llen(qk.wake) == 2
    assert not client.exists(qk.ready)  # the 0.1 list is never written
    client.close()


async def test_a_typed_fetch_of_a_batch_across_interleaved_types_is_one_script_call(make_broker, redis_url):
    # Given 100 jobs of 10 types, interleaved, and a broker that already knows the queue
    broker = await make_broker()
    types = [f"t{k}" for k in range(10)]
    await broker.enqueue([_typed(f"j{i}", types[i % 10]) for i in range(100)])
    await broker.ack(await broker.fetch(["q"], 1, 0, job_types=types))

    # When a worker of all ten types (and a catch-all) fetches 50
    before = _stats(redis_url)
    got = await broker.fetch(["q"], 50, 0, job_types=set(types))
    after = _stats(redis_url)

    # Then it got the next 50 in enqueue order with one EVALSHA
    assert [d.id for d in got] == [f"j{i}" for i in range(1, 51)]
    assert after.get("evalsha", 0) - before.get("evalsha", 0) == 1


async def test_a_blocked_typed_fetch_costs_one_command_per_timeout_while_other_types_wait(make_broker, redis_url):
    # Given many ready jobs of another type, and a typed fetcher that found nothing before
    broker = await make_broker()
    await broker.enqueue([_typed(f"o{i}", "other") for i in range(50)])
    assert await broker.fetch(["q"], 4, 0.05, job_types={"mine"}) == []

    # When it waits for two seconds
    probe = ("info", "hello", "client")  # what the probe's own connections send
    before = sum(n for k, n in _stats(redis_url).items() if not k.startswith(probe))
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        assert await broker.fetch(["q"], 4, 1.0, job_types={"mine"}) == []
    spent = sum(n for k, n in _stats(redis_url).items() if not k.startswith(probe)) - before

    # Then it blocked instead of polling (the other type's wake-up tokens are not its own)
    assert spent <= 4, f"{spent} commands in 2 s of waiting"


async def test_reap_repairs_a_typed_wake_up_lost_with_a_dead_fetcher(make_broker, redis_url, prefix):
    # Given a ready job whose type's wake-up token was consumed by a fetcher that died before taking it
    consumer = await make_broker()
    assert await consumer.fetch(["q"], 1, 0.05, job_types={"a"}) == []
    producer = await make_broker()
    await producer.enqueue([_typed("a1", "a")])
    client = redis.Redis.from_url(redis_url)
    client.delete(queue_keys(prefix, "q").type_signal("a"))
    client.close()
    waiting = asyncio.create_task(consumer.fetch(["q"], 1, 5.0, job_types={"a"}))
    await asyncio.sleep(0.2)
    assert not waiting.done()

    # When any worker's reaper runs, then the blocked typed fetch wakes and gets the job
    await producer.reap()
    got = await asyncio.wait_for(waiting, 5.0)
    assert [d.id for d in got] == ["a1"]


async def test_cancelling_a_ready_job_keeps_the_type_index_count_and_wake_up_lists(make_broker, redis_url, prefix):
    # Given three ready jobs of two types
    broker = await make_broker()
    await broker.enqueue([_typed("a1", "a"), _typed("b1", "b"), _typed("b2", "b")])

    # When the only job of type a and one of type b are cancelled
    assert await broker.cancel("a1") == "ready"
    assert await broker.cancel("b2") == "ready"

    # Then from that moment type a has no ready jobs, b has one, and the queue counts one
    assert [(t.job_type, t.ready) for t in await broker.ready_types("q")] == [("b", 1)]
    assert (await broker.depths(["q"]))["q"].ready == 1
    client = redis.Redis.from_url(redis_url)
    qk = queue_keys(prefix, "q")
    try:
        assert client.zrange(qk.types, 0, -1) == [b"b"]
        assert client.llen(qk.type_signal("a")) == 0  # no wake-up left for a fetcher of type a
        assert client.llen(qk.type_signal("b")) == 1
        assert client.llen(qk.wake) == 1
    finally:
        client.close()
    # And a fetcher of type a is not woken for nothing, while one of every type gets b1
    assert await broker.fetch(["q"], 1, 0.2, job_types={"a"}) == []
    assert [d.id for d in await broker.fetch(["q"], 10, 0)] == ["b1"]


async def test_jobs_left_in_the_01_ready_list_go_to_catch_alls_first_and_never_to_typed_workers(
    make_broker, redis_url, prefix
):
    # Given two jobs enqueued by 0.1 (single ready list, no type in the record) and a new one of type a
    broker = await make_broker()
    client = redis.Redis.from_url(redis_url)
    _plant_01_job(client, prefix, "old1")
    _plant_01_job(client, prefix, "old2")
    await broker.enqueue([_typed("new1", "a")])

    # When a job-specialized worker of type a fetches, it gets only the new job
    (typed,) = await broker.fetch(["q"], 10, 0, job_types={"a"})
    assert typed.id == "new1"

    # And a catch-all (its handlers' types plus the unknown type "") drains the 0.1 list, in its order
    (first,) = await broker.fetch(["q"], 1, 0, job_types={"a", ""})
    assert (first.id, first.body, first.deliveries) == ("old1", b"old1", 1)

    # A 0.1 job given back joins the ready jobs without a type (at the head), and the 0.1 list drains away
    assert await broker.release([first]) == [True]
    qk = queue_keys(prefix, "q")
    assert client.zrange(qk.type_ready(""), 0, -1) == [b"old1"]
    rest = await broker.fetch(["q"], 10, 0)  # an untyped fetch (unknown_job_types = "dead-letter") takes them too
    assert [d.id for d in rest] == ["old2", "old1"]
    assert client.llen(qk.ready) == 0 and not client.exists(qk.signal)
    assert (await broker.depths(["q"]))["q"].running == 3
    client.close()


async def test_a_blocked_catch_all_wakes_for_a_job_pushed_by_a_01_producer(make_broker, redis_url, prefix):
    # Given a catch-all fetcher blocked on an empty queue
    broker = await make_broker()
    assert await broker.fetch(["q"], 1, 0.05, job_types={"a", ""}) == []
    waiting = asyncio.create_task(broker.fetch(["q"], 1, 5.0, job_types={"a", ""}))
    await asyncio.sleep(0.2)

    # When a 0.1 producer (still running during a rolling deploy) pushes a job the 0.1 way
    client = redis.Redis.from_url(redis_url)
    _plant_01_job(client, prefix, "old1")
    client.close()

    # Then the fetcher wakes on the 0.1 wake-up list and takes it
    got = await asyncio.wait_for(waiting, 5.0)
    assert [d.id for d in got] == ["old1"]


async def test_depths_count_typed_and_01_ready_jobs(make_broker, redis_url, prefix):
    broker = await make_broker()
    await broker.enqueue([_typed("a1", "a"), _typed("b1", "b"), Envelope("u1", "q", b"u1")])
    client = redis.Redis.from_url(redis_url)
    _plant_01_job(client, prefix, "old1")
    client.close()
    assert (await broker.depths(["q"]))["q"].ready == 4
    types = {r.job_type: r.ready for r in await broker.ready_types("q")}
    assert types == {"a": 1, "b": 1, "": 2}


async def test_a_typed_job_a_01_process_put_in_the_01_list_moves_to_its_type_instead_of_a_catch_all(
    make_broker, redis_url, prefix
):
    # Given a job of type a enqueued by 0.2, that a 0.1 worker's reaper (rolling deploy) pushed into the 0.1 list
    broker = await make_broker()
    await broker.enqueue([_typed("a1", "a"), _typed("b1", "b")])
    client = redis.Redis.from_url(redis_url)
    qk = queue_keys(prefix, "q")
    client.zrem(qk.type_ready("a"), "a1")
    client.decr(qk.count)
    client.zrem(qk.types, "a")
    client.delete(qk.type_signal("a"))
    client.rpush(qk.ready, "a1")
    client.rpush(qk.signal, "1")

    # When a catch-all without a handler for a (types b and "") fetches
    got = await broker.fetch(["q"], 10, 0, job_types={"b", ""})

    # Then it gets only b1; a1 went to the head of its type, where a worker of type a takes it on its first delivery
    assert [d.id for d in got] == ["b1"]
    assert client.llen(qk.ready) == 0 and client.zrange(qk.type_ready("a"), 0, -1) == [b"a1"]
    (again,) = await broker.fetch(["q"], 10, 0, job_types={"a"})
    assert (again.id, again.deliveries) == ("a1", 1)
    client.close()
