"""The kernel's result-backend conformance kit against ``memory://`` and every redis-server found."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from bananas_redis import RedisResultBackend
from bananas_redis.testing import connected, find_redis_servers, shared_server

from bananas.builtin.memory_results import MemoryResultBackend
from bananas.result_backend import ResultBackend
from bananas.testing import ResultBackendConformance

BACKENDS = ["memory"] + [f"redis:{label}" for label, _ in find_redis_servers()]


class TestResultBackends(ResultBackendConformance):
    @pytest_asyncio.fixture(params=BACKENDS)
    async def backend_factory(self, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
        memory_url = f"memory://results-{uuid.uuid4().hex[:12]}"
        prefix = f"rc{uuid.uuid4().hex[:10]}"
        kind, _, label = request.param.partition(":")

        def open_one(**options: Any) -> ResultBackend:
            if kind == "redis":
                return RedisResultBackend(shared_server(label).url, {"prefix": prefix, **options})
            return MemoryResultBackend(memory_url, options)

        async with connected(open_one) as make:
            yield make
        MemoryResultBackend.reset(memory_url)
