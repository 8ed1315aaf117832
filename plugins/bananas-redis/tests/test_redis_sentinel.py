"""The Redis broker on a Sentinel-managed master (``redis+sentinel://``): the conformance suite, a worker subprocess
that follows the master through ``SENTINEL FAILOVER`` and through a SIGKILL of the master without losing a job, and
producers that get ``BrokerUnavailable`` only when no master answers within their timeout. Every server and
sentinel is started by :class:`bananas_redis.testing_ha.LocalSentinels` on loopback and stopped by pid."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from bananas_redis import RedisOptions, RedisResultBackend, RedisSentinelBroker
from bananas_redis.testing import connected_backends, connected_brokers, make_certificates, sibling_module
from bananas_redis.testing_ha import LocalSentinels, command, ha_binary

from bananas.plugin_api import BrokerUnavailable, Envelope
from bananas.testing import BrokerConformance, ResultBackendConformance
from bananas.testing.conformance import ALL_CAPABILITIES

_BINARY = ha_binary()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_BINARY is None, reason="needs redis-server 7+ (and redis-cli)")]


_harness = sibling_module(__file__, "test_redis_worker.py")
Harness, wait_until = _harness.Harness, _harness.wait_until


def _group(**kwargs: object) -> LocalSentinels:
    assert _BINARY is not None
    return LocalSentinels(_BINARY, **kwargs).start()  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sentinels() -> Iterator[LocalSentinels]:
    with _group() as group:
        yield group


class TestRedisSentinelBroker(BrokerConformance):
    claims = ALL_CAPABILITIES

    @pytest_asyncio.fixture
    async def broker_factory(self, sentinels: LocalSentinels) -> AsyncIterator:
        async with connected_brokers(RedisSentinelBroker, sentinels.url, f"s{uuid.uuid4().hex[:8]}") as make:
            yield make


def _drain_through(group: LocalSentinels, tmp_path: Path, fault: str) -> None:
    """400 jobs of 50 ms (about 4 s for the worker's 5 slots), ``fault`` ("failover" or "kill") once 30 are done:
    every job succeeds."""
    h = Harness(tmp_path, group.url)
    try:
        keys = [f"job{i}" for i in range(400)]
        for key in keys:
            h.enqueue("work", key, payload={"secs": 0.05})
        worker = h.worker("a")
        wait_until(lambda: len(h.events.keys("succeeded")) >= 30, 20, "the drain to start")
        old = group.master()
        started = time.monotonic()
        if fault == "failover":
            group.failover()
        else:
            old.stop(kill=True)  # SIGKILL by pid: the sentinels see it down after 1 s and promote the replica
        assert len(h.events.keys("succeeded")) < len(keys), "the drain ended before the fault: no test"
        new = group.wait_new_master(old)
        switched = time.monotonic() - started
        assert new is not old

        # The worker resumes on the new master by itself: every job succeeds, none is lost
        wait_until(lambda: set(keys) <= set(h.events.keys("succeeded")), 60, "every job to succeed")
        starts = Counter(h.events.keys("start"))
        twice = sorted(k for k, n in starts.items() if n > 1)
        print(f"{fault}: new master after {switched:.1f}s, {len(keys)} jobs done, {len(twice)} ran twice")
        assert set(starts) == set(keys)
        assert worker.alive()
        # and a producer enqueues on the new master
        h.enqueue("work", "after")
        wait_until(lambda: "after" in h.events.keys("succeeded"), 20, "a job enqueued after the fault")
    finally:
        h.close()


def test_a_drain_follows_the_master_through_sentinel_failover(sentinels: LocalSentinels, tmp_path: Path) -> None:
    _drain_through(sentinels, tmp_path, "failover")


def test_a_drain_survives_a_sigkill_of_the_master(tmp_path: Path) -> None:
    with _group() as group:
        _drain_through(group, tmp_path, "kill")


async def test_a_producer_gets_broker_unavailable_only_when_no_master_answers_in_time() -> None:
    # Given a master without replicas, watched by one sentinel, and a producer with a 1 s timeout
    group = _group(replicas=0, sentinels=1)
    broker = RedisSentinelBroker(group.url, RedisOptions(prefix="p", timeout=1.0, connect_timeout=0.5))
    try:
        await broker.connect()
        await broker.enqueue([Envelope("a", "q", b"x")])

        # When the master dies and nothing can take over
        group.master().stop(kill=True)

        # Then an enqueue fails within about its timeout with BrokerUnavailable naming the URL
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match=r"redis\+sentinel://"):
            await broker.enqueue([Envelope("b", "q", b"x")])
        assert time.monotonic() - started < 3.0
    finally:
        await broker.close()
        group.cleanup()


class TestRedisSentinelResults(ResultBackendConformance):
    @pytest_asyncio.fixture
    async def backend_factory(self, sentinels: LocalSentinels) -> AsyncIterator:
        async with connected_backends(sentinels.url, f"r{uuid.uuid4().hex[:8]}") as make:
            yield make


async def _one_job_through(broker: RedisSentinelBroker, results: RedisResultBackend) -> None:
    """Connect both, enqueue job ``a``, fetch it and store its result: everything works as on one node."""
    await broker.connect()
    await results.connect()
    await broker.enqueue([Envelope("a", "q", b"x")])
    (got,) = await broker.fetch(["q"], 1, 1.0)
    await results.store("a", b"done", 60)
    assert got.id == "a" and await broker.ack([got]) == [True]
    assert await results.get("a") == b"done"


async def test_an_acl_user_in_the_sentinel_url_authenticates_to_the_master(sentinels: LocalSentinels) -> None:
    # Given an ACL user on every data node (ACLs are not replicated) and a URL naming it
    for node in sentinels.data:
        command(node.port, "ACL", "SETUSER", "app", "on", ">s3cret", "~*", "&*", "+@all")
    url = sentinels.url.replace("redis+sentinel://", "redis+sentinel://app:s3cret@")

    # When the broker and the result backend work through it
    broker = RedisSentinelBroker(url, RedisOptions(prefix=f"acl{uuid.uuid4().hex[:6]}"))
    results = RedisResultBackend(url, {"prefix": "acl"})
    try:
        await _one_job_through(broker, results)

        # Then the master sees that user
        assert "user=app" in str(command(sentinels.master().port, "CLIENT", "LIST"))
    finally:
        await broker.close()
        await results.close()

    # And a wrong password is a one-line error naming the URL without the password
    wrong = RedisSentinelBroker(url.replace("s3cret", "nope"), RedisOptions(prefix="acl", timeout=2.0))
    with pytest.raises(BrokerUnavailable) as caught:
        await wrong.connect()
    await wrong.close()
    assert "nope" not in str(caught.value) and "redis+sentinel://app:***@" in str(caught.value)


async def test_rediss_sentinel_reaches_the_master_over_tls(tmp_path: Path) -> None:
    # Given a master, a replica and three sentinels that all speak TLS (replication and sentinel links too)
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    certs = make_certificates(str(tmp_path))
    try:
        group = await asyncio.to_thread(_group, tls=certs)
    except RuntimeError as exc:
        pytest.skip(f"no TLS sentinel support: {exc}")
    try:
        assert group.url.startswith("rediss+sentinel://")
        broker = RedisSentinelBroker(group.url, RedisOptions(prefix="tls", ssl_ca_certs=certs["ca.crt"]))
        results = RedisResultBackend(group.url, {"ssl_ca_certs": certs["ca.crt"]})
        try:
            # When the broker and the result backend go through the sentinels, then they reach the master over TLS
            await _one_job_through(broker, results)
        finally:
            await broker.close()
            await results.close()
    finally:
        await asyncio.to_thread(group.cleanup)
