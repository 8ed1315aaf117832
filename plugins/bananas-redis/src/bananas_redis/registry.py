"""The worker registry of the Redis broker (optional capability ``worker_registry``, see
:class:`bananas.plugin_api.SupportsWorkerRegistry`).

Two kinds of keys, all under the hash tag ``{<prefix>:workers}`` (one Cluster slot, so the ``MGET`` of
:meth:`WorkerRegistry.list_workers` is allowed there):

==================================  ======  ==============================================================
key                                 type    contents
==================================  ======  ==============================================================
``{bananas:workers}:index``         ZSET    worker id -> expiry (``options.clock()`` + ttl) of its record
``{bananas:workers}:w:<id>``        STRING  the record (opaque bytes), with a Redis ``PX`` expiry of ttl
==================================  ======  ==============================================================

A record is live while its index score lies in the future by ``options.clock()``: a worker that stops publishing
(SIGKILL) drops out of :meth:`~WorkerRegistry.list_workers` once its ttl has passed. The record key's own ``PX``
expiry frees the memory even when nobody lists; index entries of expired records are pruned by every publish and
every listing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from bananas_redis.options import RedisOptions

__all__ = ["WorkerRegistry", "worker_key", "workers_index_key"]

T = TypeVar("T")


def workers_index_key(prefix: str) -> str:
    """The ZSET worker id -> record expiry."""
    return "{" + prefix + ":workers}:index"


def worker_key(prefix: str, worker_id: str) -> str:
    """The STRING holding one worker's record."""
    return "{" + prefix + ":workers}:w:" + worker_id


class WorkerRegistry:
    """The ``worker_registry`` methods of :class:`~bananas_redis.broker.RedisBroker` (a mixin: it uses the broker's
    ``options``, ``_call`` and ``_produce``)."""

    options: RedisOptions

    async def _call(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:  # pragma: no cover - the broker's
        raise NotImplementedError

    async def _produce(self, what: str, call: Callable[[], Awaitable[T]], jobs: int = 0) -> T:  # pragma: no cover
        raise NotImplementedError

    async def publish_worker(self, worker_id: str, record: bytes, ttl: float) -> None:
        prefix, now = self.options.prefix, self.options.clock()
        index = workers_index_key(prefix)

        async def run() -> None:
            await self._call([
                ("SET", worker_key(prefix, worker_id), bytes(record), "PX", max(1, int(ttl * 1000))),
                ("ZADD", index, repr(float(now + ttl)), worker_id),
                ("ZREMRANGEBYSCORE", index, "-inf", repr(float(now))),
            ])

        await self._produce("publish_worker", run)

    async def remove_worker(self, worker_id: str) -> None:
        prefix = self.options.prefix

        async def run() -> None:
            await self._call([("DEL", worker_key(prefix, worker_id)), ("ZREM", workers_index_key(prefix), worker_id)])

        await self._produce("remove_worker", run)

    async def list_workers(self) -> list[bytes]:
        prefix, now = self.options.prefix, self.options.clock()
        index = workers_index_key(prefix)

        async def run() -> list[bytes]:
            _, ids = await self._call([
                ("ZREMRANGEBYSCORE", index, "-inf", repr(float(now))),
                ("ZRANGEBYSCORE", index, "(" + repr(float(now)), "+inf"),
            ])
            if not ids:
                return []
            names = [name.decode() if isinstance(name, bytes) else str(name) for name in ids]
            (records,) = await self._call([("MGET", *(worker_key(prefix, name) for name in names))])
            return [bytes(record) for record in records if record is not None]

        return await self._produce("list_workers", run)
