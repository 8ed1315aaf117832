"""The ``cancellation`` capability of :class:`~bananas_redis.broker.RedisBroker` (see :class:`bananas.plugin_api.
SupportsCancellation`): ``client.cancel``, ``bananas cancel`` and the terminal states ``cancelled`` / ``expired``.

Design:

* **cancel** finds the job's queue like ``lookup`` (one ``HGET state`` per known queue, one round trip), then runs
  ``lua/control.lua cancel`` on that queue's keys: a ``ready`` job leaves its type's ready set (the typed ready
  count, the index of type heads and the wake-up lists follow, so it is in no depth from that moment) or the 0.1
  ready list, a ``scheduled`` one the scheduled set, and the record becomes ``cancelled`` (kept ``completed_ttl``);
  a ``running`` job's record gets a ``cancel`` field. Should an entry stay in a ready list anyway (a layout the
  script does not know), dispatch.lua's ``take`` drops it: it hands out only records in state ``ready``.
* **cancel_requested** is one pipelined ``HMGET state token cancel`` per running job: the worker's lease heartbeat
  asks it about once a second for the jobs its process runs (no script, no write; nothing when it runs none).
* **finish** runs ``lua/control.lua finish``: fenced by the delivery's token like ``ack``.

Every key a call touches is under the job's queue hash tag (:mod:`bananas_redis.keys`), so it works on one Redis
Cluster slot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

from bananas.plugin_api import CANCEL_STATES, BrokerOptions, Delivery
from bananas_redis.keys import QueueKeys

__all__ = ["CONTROL_SCRIPT", "RedisControl"]

CONTROL_SCRIPT: bytes = resources.files("bananas_redis").joinpath("lua").joinpath("control.lua").read_bytes()
"""``lua/control.lua``: cancel and finish, on one queue's keys."""
_SHA = hashlib.sha1(CONTROL_SCRIPT).hexdigest()
_LIVE = (b"ready", b"scheduled", b"running")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisControl:
    """Mixin of :class:`~bananas_redis.broker.RedisBroker` (it provides ``options``, ``_send``, ``_call``,
    ``_keys``, ``_queues``, ``_produce``, ``_work``, ``_load_numbers`` and ``_local_token``)."""

    options: BrokerOptions
    _send: Callable[[Sequence[tuple[Any, ...]]], Awaitable[list[Any]]]
    _call: Callable[[Sequence[tuple[Any, ...]]], Awaitable[list[Any]]]
    _keys: Callable[[str], QueueKeys]
    _queues: Callable[[], Awaitable[list[str]]]
    _produce: Callable[..., Awaitable[Any]]
    _work: Callable[..., Awaitable[Any]]
    _load_numbers: Callable[[str, set[str]], Awaitable[None]]
    _local_token: Callable[[Delivery], str]

    async def _control(self, keys: QueueKeys, job_id: str, command: str, *args: Any) -> Any:
        call = ("EVALSHA", _SHA, 8, keys.ready, keys.scheduled, keys.leases, keys.signal, keys.job(job_id),
                keys.types, keys.count, keys.wake, command, repr(float(self.options.clock())), job_id, *args)
        (reply,) = await self._send([call])
        if isinstance(reply, NoScriptError):
            (_, reply) = await self._send([("SCRIPT", "LOAD", CONTROL_SCRIPT), call])
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _kept(self) -> tuple[int, str]:
        ttl = self.options.completed_ttl
        return max(1, int(ttl)), repr(float(self.options.clock() + ttl))

    async def cancel(self, job_id: str) -> str | None:
        async def run() -> str | None:
            names = await self._queues()
            if not names:
                return None
            states = await self._call([("HGET", self._keys(name).job(job_id), "state") for name in names])
            found = [(name, state) for name, state in zip(names, states, strict=True) if state is not None]
            if not found:
                return None
            # the live copy if there is one (one live copy per id), else any record: a no-op that reports its state
            queue = next((name for name, state in found if state in _LIVE), found[0][0])
            before = await self._control(self._keys(queue), job_id, "cancel", *self._kept())
            return _text(before) or None

        result: str | None = await self._produce("cancel", run)
        return result

    async def cancel_requested(self, deliveries: Sequence[Delivery]) -> list[bool]:
        if not deliveries:
            return []
        await self._load_numbers("cancel_requested", {d.queue for d in deliveries})

        async def run() -> list[Any]:
            return await self._call([("HMGET", self._keys(d.queue).job(d.id), "state", "token", "cancel")
                                     for d in deliveries])

        rows = await self._work("cancel_requested", run)
        return [
            state == b"running" and token is not None and _text(token) == self._local_token(d) and cancel is not None
            for d, (state, token, cancel) in zip(deliveries, rows, strict=True)
        ]

    async def finish(self, delivery: Delivery, *, body: bytes, state: str) -> bool:
        if state not in CANCEL_STATES:
            raise ValueError(f"finish: state must be one of {', '.join(CANCEL_STATES)}, got {state!r}")
        await self._load_numbers("finish", {delivery.queue})

        async def run() -> Any:
            return await self._control(self._keys(delivery.queue), delivery.id, "finish", self._local_token(delivery),
                                       body, state, *self._kept())

        return bool(await self._work("finish", run))
