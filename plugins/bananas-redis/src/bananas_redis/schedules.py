"""The ``schedules`` capability of :class:`~bananas_redis.broker.RedisBroker` (see
:mod:`bananas.broker_schedules`): the scheduler's leader lease, the per-tick guard and the periodic jobs' state.

Every transition is one call of ``lua/periodic.lua`` on the keys of :func:`bananas_redis.keys.periodic_keys`, all
under the hash tag ``{<prefix>:periodic}`` (one slot: cluster-safe). Times come from ``options.clock()`` like every
lease of the broker. Calls are bounded like producer calls (``options.timeout``, one immediate retry), so a leader
that cannot reach Redis stops acting within its lease instead of retrying for ``retry_for``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, TypeVar

from redis.exceptions import NoScriptError

from bananas.plugin_api import LeaderLease
from bananas_redis.keys import periodic_keys
from bananas_redis.options import RedisOptions

__all__ = ["PERIODIC_SCRIPT", "RedisSchedules"]

T = TypeVar("T")

PERIODIC_SCRIPT: bytes = resources.files("bananas_redis").joinpath("lua").joinpath("periodic.lua").read_bytes()
"""The periodic-jobs script (package data)."""
_SHA = hashlib.sha1(PERIODIC_SCRIPT).hexdigest()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisSchedules:
    """Mixin of :class:`~bananas_redis.broker.RedisBroker` (it provides ``options``, ``_send`` and ``_produce``)."""

    options: RedisOptions
    _send: Callable[[Sequence[tuple[Any, ...]]], Awaitable[list[Any]]]
    _produce: Callable[..., Awaitable[Any]]

    async def _periodic(self, what: str, command: str, *args: Any) -> Any:
        keys = periodic_keys(self.options.prefix)
        call = ("EVALSHA", _SHA, 4, *keys, command, repr(float(self.options.clock())), *args)

        async def run() -> Any:
            (reply,) = await self._send([call])
            if isinstance(reply, NoScriptError):
                (_, reply) = await self._send([("SCRIPT", "LOAD", PERIODIC_SCRIPT), call])
            if isinstance(reply, Exception):
                raise reply
            return reply

        return await self._produce(what, run)

    async def acquire_leader(self, candidate: str, ttl: float) -> int | None:
        token = await self._periodic("acquire_leader", "acquire", candidate, repr(float(ttl)))
        return None if token is None else int(token)

    async def renew_leader(self, candidate: str, token: int, ttl: float) -> bool:
        return bool(await self._periodic("renew_leader", "renew", candidate, token, repr(float(ttl))))

    async def release_leader(self, candidate: str, token: int) -> bool:
        return bool(await self._periodic("release_leader", "release", candidate, token))

    async def current_leader(self) -> LeaderLease | None:
        reply = await self._periodic("current_leader", "leader")
        if not reply:
            return None
        holder, token, expires = reply
        return LeaderLease(_text(holder), int(token), float(expires))

    async def claim_tick(self, schedule: str, tick: float, token: int) -> bool:
        return bool(await self._periodic("claim_tick", "claim", schedule, repr(float(tick)), token))

    async def unclaim_tick(self, schedule: str, tick: float, previous: float | None, token: int) -> bool:
        before = "" if previous is None else repr(float(previous))
        return bool(await self._periodic("unclaim_tick", "unclaim", schedule, repr(float(tick)), before, token))

    async def schedule_states(self, names: Sequence[str] | None = None) -> dict[str, str]:
        key = periodic_keys(self.options.prefix)[3]
        if names is not None and not names:
            return {}

        async def run() -> dict[str, str]:
            if names is None:
                (reply,) = await self._send([("HGETALL", key)])
                if isinstance(reply, Exception):
                    raise reply
                if isinstance(reply, dict):
                    return {_text(k): _text(v) for k, v in reply.items()}
                return {_text(reply[i]): _text(reply[i + 1]) for i in range(0, len(reply), 2)}
            (reply,) = await self._send([("HMGET", key, *names)])
            if isinstance(reply, Exception):
                raise reply
            return {name: _text(value) for name, value in zip(names, reply, strict=True) if value is not None}

        states: dict[str, str] = await self._produce("schedule_states", run)
        return states

    async def save_schedule_state(self, schedule: str, state: str, token: int) -> bool:
        return bool(await self._periodic("save_schedule_state", "save", schedule, state, token))
