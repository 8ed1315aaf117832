"""The ``progress`` capability of :class:`~bananas_redis.broker.RedisBroker` (see :class:`bananas.plugin_api.
SupportsProgress`): the last progress a handler reported, in the HASH ``{<prefix>:<queue>}:progress:<id>`` (fields
``value``, ``message``, ``at``), under the job's own hash tag, so a Redis Cluster keeps it on the job's slot.

A write is one round trip (``HSET`` + ``EXPIRE dead_ttl``, the longest retention of a record) when the caller names
the job's queue — the worker always does; without it the job's queue is found first among the known queues (one more
round trip). A read looks in every known queue in one round trip and takes the newest entry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bananas.plugin_api import BrokerOptions, Progress
from bananas_redis.keys import QueueKeys

__all__ = ["RedisProgress", "progress_key"]


def progress_key(keys: QueueKeys, job_id: str) -> str:
    """The progress HASH of ``job_id`` in the queue of ``keys`` (same hash tag as its record)."""
    return keys.tag + ":progress:" + job_id


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


class RedisProgress:
    """Mixin of :class:`~bananas_redis.broker.RedisBroker` (it provides ``options``, ``_call``, ``_keys``,
    ``_queues`` and ``_produce``)."""

    options: BrokerOptions
    _call: Callable[[Sequence[tuple[Any, ...]]], Awaitable[list[Any]]]
    _keys: Callable[[str], QueueKeys]
    _queues: Callable[[], Awaitable[list[str]]]
    _produce: Callable[..., Awaitable[Any]]

    async def set_progress(self, job_id: str, value: float, message: str | None = None, *,
                           queue: str | None = None) -> None:
        async def run() -> None:
            target = queue
            if target is None:
                names = await self._queues()
                found = await self._call([("EXISTS", self._keys(name).job(job_id)) for name in names]) if names else []
                target = next((name for name, n in zip(names, found, strict=True) if n), None)
                if target is None:  # no record of the job: nothing to keep the progress with
                    return
            key = progress_key(self._keys(target), job_id)
            await self._call([
                ("HSET", key, "value", repr(float(value)), "message", message if message is not None else "",
                 "has_message", "1" if message is not None else "0", "at", repr(float(self.options.clock()))),
                ("EXPIRE", key, max(1, int(self.options.dead_ttl))),
            ])

        await self._produce("set_progress", run)

    async def progress(self, job_id: str) -> Progress | None:
        async def run() -> Progress | None:
            names = await self._queues()
            if not names:
                return None
            rows = await self._call([("HMGET", progress_key(self._keys(name), job_id), "value", "message",
                                      "has_message", "at") for name in names])
            best: Progress | None = None
            for value, message, has_message, at in rows:
                if value is None:
                    continue
                found = Progress(float(value), _text(message) if _text(has_message) == "1" else None,
                                 float(at or 0.0))
                if best is None or found.updated_at > best.updated_at:
                    best = found
            return best

        result: Progress | None = await self._produce("progress", run)
        return result
