"""The Redis broker on a real 3-master Redis Cluster (``redis+cluster://``): the kernel's conformance suite and state
machine, routing by slot, blocking fetch across shards, MOVED after a resharding. One cluster per session, started by
:class:`bananas_redis.testing_ha.LocalCluster` on loopback and stopped by pid."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from bananas_redis import RedisClusterBroker, RedisOptions, RedisResultBackend
from bananas_redis.testing import find_redis_servers
from bananas_redis.testing_ha import LocalCluster, redis_cli
from hypothesis import settings

from bananas.broker import Broker
from bananas.testing import BrokerConformance, ResultBackendConformance, make_broker_machine
from bananas.testing.conformance import ALL_CAPABILITIES

_BINARY = next((path for label, path in find_redis_servers() if label.startswith("redis-7")), None)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_BINARY is None or not redis_cli(_BINARY or ""), reason="needs redis-server 7 and redis-cli"),
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
    made: list[RedisClusterBroker] = []
    prefix = f"c{uuid.uuid4().hex[:8]}"
    url = (await asyncio.to_thread(cluster)).url

    async def make(**overrides: object) -> RedisClusterBroker:
        overrides.setdefault("prefix", prefix)
        broker = RedisClusterBroker(url, RedisOptions(**overrides))
        await broker.connect()
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.close()


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
        made: list[RedisResultBackend] = []
        prefix = f"r{uuid.uuid4().hex[:8]}"
        url = (await asyncio.to_thread(cluster)).url

        async def make(**options: object) -> RedisResultBackend:
            backend = RedisResultBackend(url, {"prefix": prefix, **options})
            await backend.connect()
            made.append(backend)
            return backend

        yield make
        for backend in made:
            await backend.close()
