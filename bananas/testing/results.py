"""The result-backend conformance kit: one test per semantic of :mod:`bananas.result_backend`.

Subclass :class:`ResultBackendConformance` and provide an async fixture ``backend_factory`` yielding
``make(**options) -> connected ResultBackend`` (``options`` is the ``[result_backend_options]`` dict, e.g.
``ttl=``); every backend one test makes shares one store, so a waiter on one sees a store through another. The
fixture closes what it made. TTLs are real time (a backend's own clock or server), so the expiry tests use short
TTLs with generous margins.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import ClassVar

import pytest

from bananas.result_backend import ResultBackend

__all__ = ["MakeBackend", "ResultBackendConformance"]

MakeBackend = Callable[..., Awaitable[ResultBackend]]


class ResultBackendConformance:
    """Checks store/get/wait/ttl/missing semantics of a result backend. Subclass it; see the module docstring."""

    #: Seconds a short TTL lives in the expiry tests; the test waits three times as long.
    short_ttl: ClassVar[float] = 0.3
    #: Upper bound for a wake-up that should be immediate.
    prompt: ClassVar[float] = 2.0

    @pytest.fixture
    def backend_factory(self) -> MakeBackend:
        pytest.fail(f"{type(self).__name__} must define an async fixture 'backend_factory' (bananas.testing.results)")

    @pytest.mark.asyncio
    async def test_backend_satisfies_the_protocol_and_closes_twice(self, backend_factory: MakeBackend) -> None:
        backend = await backend_factory()
        assert isinstance(backend, ResultBackend)
        await backend.close()
        await backend.close()

    @pytest.mark.asyncio
    async def test_store_then_get_returns_the_body(self, backend_factory: MakeBackend) -> None:
        backend = await backend_factory()
        await backend.store("a", b"body-a", None)
        assert await backend.get("a") == b"body-a"
        assert await backend.get("a", wait=1.0) == b"body-a"  # a stored body is found by the first check

    @pytest.mark.asyncio
    async def test_missing_id_is_none_at_once(self, backend_factory: MakeBackend) -> None:
        backend = await backend_factory()
        started = time.monotonic()
        assert await backend.get("nope") is None
        assert await backend.get("nope", wait=0) is None
        assert time.monotonic() - started < self.prompt

    @pytest.mark.asyncio
    async def test_a_later_store_replaces_the_body(self, backend_factory: MakeBackend) -> None:
        backend = await backend_factory()
        await backend.store("a", b"first", None)
        await backend.store("a", b"second", None)
        assert await backend.get("a") == b"second"

    @pytest.mark.asyncio
    async def test_ttl_zero_stores_nothing(self, backend_factory: MakeBackend) -> None:
        backend = await backend_factory()
        await backend.store("a", b"body", 0)
        assert await backend.get("a") is None

    @pytest.mark.asyncio
    async def test_body_expires_after_its_ttl(self, backend_factory: MakeBackend) -> None:
        backend = await backend_factory()
        await backend.store("short", b"s", self.short_ttl)
        await backend.store("long", b"l", 3600)
        assert await backend.get("short") == b"s"
        await asyncio.sleep(self.short_ttl * 3)
        assert await backend.get("short") is None
        assert await backend.get("long") == b"l"

    @pytest.mark.asyncio
    async def test_ttl_none_uses_the_configured_default(self, backend_factory: MakeBackend) -> None:
        backend = await backend_factory(ttl=self.short_ttl)
        await backend.store("a", b"body", None)
        assert await backend.get("a") == b"body"
        await asyncio.sleep(self.short_ttl * 3)
        assert await backend.get("a") is None

    @pytest.mark.asyncio
    async def test_configured_default_ttl_zero_stores_nothing(self, backend_factory: MakeBackend) -> None:
        backend = await backend_factory(ttl=0)
        await backend.store("a", b"body", None)
        assert await backend.get("a") is None
        await backend.store("b", b"kept", 60)  # the job's own TTL still wins
        assert await backend.get("b") == b"kept"

    @pytest.mark.asyncio
    async def test_wait_times_out_with_none(self, backend_factory: MakeBackend) -> None:
        backend = await backend_factory()
        started = time.monotonic()
        assert await backend.get("nope", wait=0.3) is None
        elapsed = time.monotonic() - started
        assert 0.25 <= elapsed < 0.3 + self.prompt

    @pytest.mark.asyncio
    async def test_store_wakes_every_waiter_promptly(self, backend_factory: MakeBackend) -> None:
        producer, waiter_a, waiter_b = [await backend_factory() for _ in range(3)]
        waits = [asyncio.create_task(w.get("job", wait=30)) for w in (waiter_a, waiter_b, waiter_a)]
        await asyncio.sleep(0.2)
        assert not any(w.done() for w in waits), "a waiter returned before anything was stored"
        started = time.monotonic()
        await producer.store("job", b"done", None)
        got = await asyncio.wait_for(asyncio.gather(*waits), 30)
        assert got == [b"done"] * 3
        assert time.monotonic() - started < self.prompt, "waiters were not woken by the store (polling?)"

    @pytest.mark.asyncio
    async def test_ttl_zero_wakes_nobody(self, backend_factory: MakeBackend) -> None:
        backend = await backend_factory()
        waiting = asyncio.create_task(backend.get("job", wait=0.5))
        await asyncio.sleep(0.1)
        await backend.store("job", b"x", 0)
        assert await asyncio.wait_for(waiting, 10) is None
