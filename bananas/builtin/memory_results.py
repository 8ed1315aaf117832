"""``result_backend = "memory://"``: results kept in process, shared by every app of the same URL."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from bananas.hookspecs import hookimpl
from bananas.registry import Register
from bananas.result_backend import ResultBackendSpec

__all__ = ["MemoryResultBackend"]

DEFAULT_TTL = 24 * 3600.0


class _Store:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[str, tuple[bytes, float]] = {}
        self.waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}


_STORES: dict[str, _Store] = {}
_STORES_LOCK = threading.Lock()


class MemoryResultBackend:
    """Results in a dict with expiry; waiters are woken, never polled."""

    def __init__(self, url: str = "memory://", options: dict[str, object] | None = None) -> None:
        with _STORES_LOCK:
            self._s = _STORES.setdefault(url, _Store())
        self.clock: Callable[[], float] = time.time

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def store(self, job_id: str, body: bytes, ttl: float | None) -> None:
        ttl = DEFAULT_TTL if ttl is None else ttl
        if ttl <= 0:
            return
        with self._s.lock:
            self._s.values[job_id] = (body, self.clock() + ttl)
            for loop, fut in self._s.waiters.pop(job_id, []):
                loop.call_soon_threadsafe(_resolve, fut)

    def _read(self, job_id: str) -> bytes | None:
        item = self._s.values.get(job_id)
        if item is None:
            return None
        if item[1] <= self.clock():
            del self._s.values[job_id]
            return None
        return item[0]

    async def get(self, job_id: str, wait: float | None = None) -> bytes | None:
        loop = asyncio.get_running_loop()
        with self._s.lock:
            body = self._read(job_id)
            if body is not None or not wait:
                return body
            fut: asyncio.Future[None] = loop.create_future()
            self._s.waiters.setdefault(job_id, []).append((loop, fut))
        try:
            await asyncio.wait_for(fut, wait)
        except TimeoutError:
            pass
        with self._s.lock:
            waiters = self._s.waiters.get(job_id, [])
            if (loop, fut) in waiters:
                waiters.remove((loop, fut))
            return self._read(job_id)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


@hookimpl
def bananas_register_result_backends(register: Register[ResultBackendSpec]) -> None:
    register(ResultBackendSpec(schemes=("memory",), factory=MemoryResultBackend, summary="in-process results"))
