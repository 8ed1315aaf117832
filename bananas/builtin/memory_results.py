"""``result_backend = "memory://"``: results kept in process, shared by every app of the same URL.

``[result_backend_options] ttl`` (a duration; default 24 h, ``0`` stores nothing) is the default lifetime of a
result. Waiters are futures woken by ``store`` (thread-safe: a worker thread may store while another thread's
event loop waits), never a polling loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping

from bananas.errors import ConfigError
from bananas.hookspecs import hookimpl
from bananas.registry import Register
from bananas.result_backend import DEFAULT_RESULT_TTL, ResultBackendSpec, parse_ttl

__all__ = ["DEFAULT_TTL", "MemoryResultBackend"]

DEFAULT_TTL = DEFAULT_RESULT_TTL


class _Store:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[str, tuple[bytes, float]] = {}
        self.waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}


_STORES: dict[str, _Store] = {}
_STORES_LOCK = threading.Lock()


def _default_ttl(options: Mapping[str, object] | None) -> float:
    options = dict(options or {})
    unknown = sorted(set(options) - {"ttl"})
    if unknown:
        key = f"result_backend_options.{unknown[0]}"
        raise ConfigError(key, options[unknown[0]], "memory result backend", "unknown option; allowed: ttl")
    if "ttl" not in options:
        return DEFAULT_TTL
    try:
        return parse_ttl(options["ttl"], "ttl")
    except ValueError as exc:
        raise ConfigError("result_backend_options.ttl", options["ttl"], "memory result backend", str(exc)) from None


class MemoryResultBackend:
    """Results in a dict with expiry; waiters are woken, never polled."""

    def __init__(self, url: str = "memory://", options: Mapping[str, object] | None = None) -> None:
        self.ttl = _default_ttl(options)
        with _STORES_LOCK:
            self._s = _STORES.setdefault(url, _Store())
        self.clock: Callable[[], float] = time.time

    @staticmethod
    def reset(url: str) -> None:
        """Forget every result stored under ``url`` (tests)."""
        with _STORES_LOCK:
            _STORES.pop(url, None)

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def store(self, job_id: str, body: bytes, ttl: float | None) -> None:
        ttl = self.ttl if ttl is None else ttl
        if ttl <= 0:
            return
        with self._s.lock:
            self._s.values[job_id] = (body, self.clock() + ttl)
            waiters = self._s.waiters.pop(job_id, [])
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # that waiter's loop is closed: nobody is waiting there any more
                pass

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
            if body is not None or not wait or wait <= 0:
                return body
            fut: asyncio.Future[None] = loop.create_future()
            self._s.waiters.setdefault(job_id, []).append((loop, fut))
        try:
            await asyncio.wait_for(fut, wait)
        except TimeoutError:
            pass
        finally:
            with self._s.lock:
                waiters = self._s.waiters.get(job_id)
                if waiters is not None and (loop, fut) in waiters:
                    waiters.remove((loop, fut))
                    if not waiters:
                        del self._s.waiters[job_id]
        with self._s.lock:
            return self._read(job_id)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


@hookimpl
def bananas_register_result_backends(register: Register[ResultBackendSpec]) -> None:
    register(
        ResultBackendSpec(
            schemes=("memory",), factory=MemoryResultBackend, summary="in-process results with TTL (built in)"
        )
    )
