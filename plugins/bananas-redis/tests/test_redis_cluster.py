"""The Redis broker on a real 3-master Redis Cluster (``redis+cluster://``): the kernel's conformance suite and state
machine, routing by slot, blocking fetch across shards, MOVED after a resharding. One cluster per session, started by
:class:`bananas_redis.testing_ha.LocalCluster` on loopback and stopped by pid."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from bananas_redis import RedisClusterBroker, RedisOptions, RedisResultBackend
from bananas_redis.testing import connected_backends, connected_brokers, make_certificates
from bananas_redis.testing_ha import LocalCluster, command, ha_binary
from hypothesis import settings
from redis.crc import key_slot

from bananas.broker import Broker
from bananas.plugin_api import BrokerUnavailable, Envelope
from bananas.testing import BrokerConformance, ResultBackendConformance, make_broker_machine
from bananas.testing.conformance import ALL_CAPABILITIES

_BINARY = ha_binary()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_BINARY is None, reason="needs redis-server 7+ and redis-cli"),
]
_CLUSTER: LocalCluster | None = None


def cluster() -> LocalCluster:
    """The session's cluster, started on first use (also by the hypothesis machine, which cannot use fixtures)."""
    global _CLUSTER
    if _CLUSTER is None:
        assert _BINARY is not None
        _CLUSTER = LocalCluster(_BINARY).start()
    return _CLUSTER


@pytest.fixture(scope="module", autouse=True)
def _stop_cluster() -> Iterator[None]:
    yield
    global _CLUSTER
    if _CLUSTER is not None:
        _CLUSTER.cleanup()
        _CLUSTER = None


@pytest_asyncio.fixture
async def make_cluster_broker() -> AsyncIterator:
    """``await make_cluster_broker(**options)``: a connected cluster broker with a fresh key prefix."""
    url = (await asyncio.to_thread(cluster)).url
    async with connected_brokers(RedisClusterBroker, url, f"c{uuid.uuid4().hex[:8]}") as make:
        yield make


class TestRedisClusterBroker(BrokerConformance):
    claims = ALL_CAPABILITIES

    @pytest_asyncio.fixture
    async def broker_factory(self, make_cluster_broker):
        return make_cluster_broker


async def _machine_broker(**overrides: object) -> Broker:
    url = (await asyncio.to_thread(cluster)).url
    broker = RedisClusterBroker(url, RedisOptions(prefix=f"m{uuid.uuid4().hex[:10]}", **overrides))
    await broker.connect()
    return broker


TestRedisClusterMachine = make_broker_machine(_machine_broker).TestCase
TestRedisClusterMachine.settings = settings(deadline=None, max_examples=8, stateful_step_count=25)


class TestRedisClusterResults(ResultBackendConformance):
    @pytest_asyncio.fixture
    async def backend_factory(self) -> AsyncIterator:
        url = (await asyncio.to_thread(cluster)).url
        async with connected_backends(url, f"r{uuid.uuid4().hex[:8]}") as make:
            yield make


def _queues_on_three_shards(c: LocalCluster, prefix: str) -> list[str]:
    """Three queue names whose slots live on three different nodes."""
    chosen: dict[int, str] = {}
    n = 0
    while len(chosen) < 3:
        name = f"q{n}"
        chosen.setdefault(c.owner(f"{{{prefix}:{name}}}").port, name)
        n += 1
    return list(chosen.values())


async def test_a_fetch_on_three_shards_blocks_without_polling_and_keeps_priority_order(make_cluster_broker) -> None:
    # Given three queues on three shards, highest priority first, and an idle fetcher blocked on all three
    producer = await make_cluster_broker()
    consumer = await make_cluster_broker()
    c = await asyncio.to_thread(cluster)
    high, mid, low = _queues_on_three_shards(c, producer.options.prefix)
    assert len({c.owner(f"{{{producer.options.prefix}:{q}}}").port for q in (high, mid, low)}) == 3
    assert await consumer.fetch([high, mid, low], 1, 0.05) == []  # idle: the next fetch blocks at once
    started = asyncio.get_running_loop().time()
    fetch = asyncio.create_task(consumer.fetch([high, mid, low], 1, 5.0))
    await asyncio.sleep(0.3)
    assert not fetch.done()  # blocked, not returning empty

    # When a job arrives on the lowest-priority shard, it wakes the fetch at once
    await producer.enqueue([Envelope("l1", low, b"x")])
    (got,) = await asyncio.wait_for(fetch, 2.0)
    assert got.id == "l1"
    assert asyncio.get_running_loop().time() - started < 1.5

    # And with jobs on every shard (one batch: one script call per queue, grouped by node) priority order holds
    await producer.enqueue([Envelope("l2", low, b"x"), Envelope("m1", mid, b"x"), Envelope("h1", high, b"x")])
    order = [d.id for d in await consumer.fetch([high, mid, low], 3, 1.0)]
    assert order == ["h1", "m1", "l2"]


async def test_the_broker_follows_moved_after_a_resharding(make_cluster_broker) -> None:
    # Given a broker whose slot map says where a queue lived before a resharding moved its slot
    broker = await make_cluster_broker()
    c = await asyncio.to_thread(cluster)
    prefix = broker.options.prefix
    queue = next(f"r{n}" for n in range(100000) if key_slot(f"{{{prefix}:r{n}}}".encode()) < 100
                 or 5461 <= key_slot(f"{{{prefix}:r{n}}}".encode()) < 5561
                 or 10923 <= key_slot(f"{{{prefix}:r{n}}}".encode()) < 11023)
    await broker.enqueue([Envelope("a", queue, b"x")])
    source = c.owner(f"{{{prefix}:{queue}}}")
    target = next(n for n in c.nodes if n is not source)
    slot = key_slot(f"{{{prefix}:{queue}}}".encode())
    before = broker._slots[slot]
    await asyncio.to_thread(c.reshard, source, target, 100)  # redis-cli moves the lowest slots first

    # When it enqueues and fetches again with the stale map
    await broker.enqueue([Envelope("b", queue, b"x")])
    got = await broker.fetch([queue], 10, 1.0)

    # Then MOVED sent it to the new owner: both jobs are there, and it learnt the new map
    assert sorted(d.id for d in got) == ["a", "b"]
    assert broker._slots[slot] != before and broker._slots[slot] == ("127.0.0.1", target.port)
    assert await broker.ack(got) == [True, True]


async def test_rediss_cluster_with_an_acl_user(tmp_path) -> None:
    # Given a TLS cluster (tls-cluster yes) with an ACL user on every node
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    assert _BINARY is not None
    certs = make_certificates(str(tmp_path))
    try:
        tls_cluster = await asyncio.to_thread(LocalCluster(_BINARY, tls=certs).start)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"{_BINARY} has no TLS cluster support: {exc}")
    try:
        for node in tls_cluster.nodes:
            command(node.port, "ACL", "SETUSER", "app", "on", ">s3cret", "~*", "&*", "+@all")
        url = tls_cluster.url.replace("rediss+cluster://", "rediss+cluster://app:s3cret@")
        options = RedisOptions(prefix="tls", ssl_ca_certs=certs["ca.crt"])
        queues = _queues_on_three_shards(tls_cluster, "tls")

        # When the broker and the result backend use it
        broker = RedisClusterBroker(url, options)
        results = RedisResultBackend(url, {"ssl_ca_certs": certs["ca.crt"]})
        try:
            await broker.connect()
            await results.connect()
            await broker.enqueue([Envelope(f"j{i}", q, b"x") for i, q in enumerate(queues)])
            got = await broker.fetch(queues, 10, 1.0)
            await results.store("j0", b"done", 60)

            # Then every shard answers over TLS as that user
            assert sorted(d.id for d in got) == ["j0", "j1", "j2"]
            assert await broker.ack(got) == [True] * 3
            assert await results.get("j0") == b"done"
            clients = str(command(tls_cluster.nodes[0].port, "CLIENT", "LIST"))
            assert "user=app" in clients
        finally:
            await broker.close()
            await results.close()

        # And a wrong password is a clear, one-line BrokerUnavailable naming the URL without the password
        wrong = RedisClusterBroker(url.replace("s3cret", "nope"), RedisOptions(prefix="tls", timeout=2.0,
                                                                              ssl_ca_certs=certs["ca.crt"]))
        with pytest.raises(BrokerUnavailable) as caught:
            await wrong.connect()
        await wrong.close()
        assert "nope" not in str(caught.value) and "rediss+cluster://app:***@" in str(caught.value)
    finally:
        await asyncio.to_thread(tls_cluster.cleanup)


async def test_ask_and_tryagain_while_a_queues_slot_migrates(make_cluster_broker) -> None:
    # Given a queue whose slot is being migrated (IMPORTING on the target, MIGRATING on the source, no key moved yet)
    broker = await make_cluster_broker()
    c = await asyncio.to_thread(cluster)
    queue = "migrating"
    tag = f"{{{broker.options.prefix}:{queue}}}"
    slot = key_slot(tag.encode())
    source = c.owner(tag)
    target = next(n for n in c.nodes if n is not source)
    command(target.port, "CLUSTER", "SETSLOT", slot, "IMPORTING", c.node_id(source))
    command(source.port, "CLUSTER", "SETSLOT", slot, "MIGRATING", c.node_id(target))
    try:
        # When a single-key read meets a key the source does not have: ASK, answered by the target after ASKING
        assert (await broker.depths([queue]))[queue].ready == 0

        # And the queue's script (several keys, some missing) gets TRYAGAIN: the enqueue waits for the migration
        enqueue = asyncio.create_task(broker.enqueue([Envelope("a", queue, b"x")]))
        await asyncio.sleep(0.3)
        assert not enqueue.done()
    finally:
        for node in (target, source, *(n for n in c.nodes if n not in (source, target))):
            command(node.port, "CLUSTER", "SETSLOT", slot, "NODE", c.node_id(target))

    # Then once the slot is the target's, the enqueue lands there (MOVED followed) and the job can be fetched
    await asyncio.wait_for(enqueue, 5.0)
    (got,) = await broker.fetch([queue], 1, 1.0)
    assert got.id == "a"
    assert broker._slots[slot] == ("127.0.0.1", target.port)
