"""``RedisSentinelBroker``: :class:`~bananas_redis.broker.RedisBroker` on a Sentinel-managed master
(``redis+sentinel://``).

Only how a connection finds its server differs from one node: every new connection asks the sentinels (in the URL's
order, the first that answers) for the current master of ``<service>`` (redis-py's ``SentinelManagedConnection``)
and connects there. A failover therefore looks like an outage of one node:

* connections to the old master break (it died) or get ``READONLY`` (it was demoted: the connection is dropped and
  the error counts as a lost connection); worker-side calls retry with backoff for ``retry_for`` and land on the
  new master once the sentinels name it, producer-side calls retry within ``timeout`` and raise
  :class:`~bananas.errors.BrokerUnavailable` only if no master took over in that time;
* after a failover the old master may still accept writes until the sentinels demote it (up to about 10 s for
  ``SENTINEL FAILOVER``): pooled connections would keep writing there and lose those writes at the demotion. So
  the broker asks the sentinels for the master's address at most once a second (before a round trip) and drops
  every pooled connection, blocked fetches included, as soon as the address changes;
* the new master is a replica of the old one: writes the old master acknowledged but had not replicated are lost
  (Redis replication is asynchronous), so a job may come back to the state it had a moment earlier. Leases and
  fencing keep delivery at-least-once: a job running through the failover is reaped when its lease expires and
  runs again; an ack that fails is retried until it lands or ``retry_for`` ends.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from loguru import logger
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import Sentinel as SyncSentinel
from redis.sentinel import SentinelConnectionPool as SyncSentinelConnectionPool

from bananas.plugin_api import BrokerOptions
from bananas_redis.broker import Command, RedisBroker, _Pool

__all__ = ["CHECK_EVERY", "RedisSentinelBroker", "sentinel_kwargs"]

log = logger.bind(component="redis", log_source="bananas_internal")
CHECK_EVERY = 1.0
"""Seconds between two checks of the master's address (at most one sentinel query per second and lane)."""


def sentinel_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Connection arguments for the sentinels themselves: the timeouts and TLS of the data connections, no
    credentials (sentinels are reached without a password)."""
    keep = ("socket_connect_timeout", "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "protocol")
    out = {k: v for k, v in kwargs.items() if k in keep}
    out["socket_timeout"] = kwargs.get("socket_connect_timeout")
    if "ssl_cert_reqs" in kwargs:
        out["ssl"] = True
    return out


class RedisSentinelBroker(RedisBroker):
    """The broker for ``redis+sentinel://`` and ``rediss+sentinel://`` URLs (see the module docstring)."""

    _KIND = "sentinel"

    def __init__(self, url: str = "redis+sentinel://127.0.0.1:26379/mymaster/0",
                 options: BrokerOptions | None = None) -> None:
        super().__init__(url, options)
        self._keep: list[Any] = []  # the sentinel pools (their connections hold weak references to them)
        self._sentinel: Sentinel | None = None
        self._master: Any = None  # the master's address at the last check
        self._checked = 0.0
        self._sync_sentinel: SyncSentinel | None = None
        self._sync_master: Any = None
        self._sync_checked = 0.0

    def _data_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        t = self.target
        out = dict(kwargs, username=t.username, password=t.password, db=t.db)
        if self._tls:
            out["ssl"] = True
        return out

    def _config(self, **kwargs: Any) -> SentinelConnectionPool:
        t = self.target
        sentinel = self._sentinel = Sentinel(list(t.hosts), sentinel_kwargs=sentinel_kwargs(kwargs))
        pool = SentinelConnectionPool(t.service, sentinel, **self._data_kwargs(kwargs))
        self._keep.append(pool)
        return pool

    def _sync_pool_config(self, **kwargs: Any) -> Any:
        t = self.target
        sentinel = self._sync_sentinel = SyncSentinel(list(t.hosts), sentinel_kwargs=sentinel_kwargs(kwargs))
        pool = SyncSentinelConnectionPool(t.service, sentinel, **self._data_kwargs(kwargs))
        self._keep.append(pool)
        return pool

    # -- following the master (see the module docstring) -----------------------------------------------------
    async def _send_on(self, pool: _Pool, commands: Sequence[Command]) -> list[Any]:
        if time.monotonic() - self._checked >= CHECK_EVERY:
            self._checked = time.monotonic()
            await self._follow_master()
        return await super()._send_on(pool, commands)

    async def _follow_master(self) -> None:
        if self._sentinel is None or self.target.service is None:
            return
        try:
            address = await self._sentinel.discover_master(self.target.service)
        except (RedisConnectionError, RedisTimeoutError, OSError):
            return  # no sentinel answers (or no master): the round trip itself tells
        if self._master is not None and address != self._master:
            log.bind(event="broker_master_moved").warning(
                "redis broker {}: the sentinels name a new master {} (was {}): reconnecting", self, address,
                self._master)
            for pool in (self._pool, self._blocking):
                if pool is not None:
                    for conn in list(pool._all):  # in use too: a blocked fetch or a round trip retries
                        await conn.disconnect()
        self._master = address

    def _send_sync(self, commands: Sequence[Command]) -> list[Any]:
        if time.monotonic() - self._sync_checked >= CHECK_EVERY:
            self._sync_checked = time.monotonic()
            self._follow_master_sync()
        return super()._send_sync(commands)

    def _follow_master_sync(self) -> None:
        if self._sync_sentinel is None or self.target.service is None:
            self._sync_checked = 0.0  # the lane has no connection yet: check on the next call
            return
        try:
            address = self._sync_sentinel.discover_master(self.target.service)
        except (RedisConnectionError, RedisTimeoutError, OSError):
            return
        if self._sync_master is not None and address != self._sync_master:
            with self._sync_lock:
                idle, self._sync_idle = self._sync_idle, []
                for conn in idle:
                    self._sync_all.discard(conn)
            for conn in idle:
                conn.disconnect()
        self._sync_master = address
