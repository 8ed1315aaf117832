"""The pytest fixtures of the worker-mode end-to-end tests (see :mod:`bananas_redis.e2e`), shared by the Redis
plugin's and the mode plugins' test modules::

    # conftest.py of a test directory:
    from bananas_redis.e2e_fixtures import app_dir, fleet, producer, redis_server  # noqa: F401 - fixtures

``redis_server`` is one throwaway redis-server per test module; ``fleet`` an empty db, the recording app and a
:class:`~bananas_redis.e2e.Fleet` stopped by pid at the end of the test; ``producer()`` an app on that Redis;
``app_dir`` a directory holding the recording app (for dry runs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bananas.plugin_api import Bananas
from bananas_redis.e2e import Fleet, e2e_fleet, e2e_producer, e2e_server, write_app
from bananas_redis.testing import RedisServer

__all__ = ["app_dir", "fleet", "producer", "redis_server"]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with e2e_server() as server:
        yield server


@pytest.fixture
def fleet(redis_server: RedisServer, tmp_path: Path) -> Iterator[Fleet]:
    with e2e_fleet(redis_server, tmp_path) as made:
        yield made


@pytest.fixture
def producer(fleet: Fleet) -> Iterator[Callable[[], Bananas]]:
    with e2e_producer(fleet) as make:
        yield make


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    write_app(tmp_path)
    return tmp_path
