"""``RedisSentinelBroker``: :class:`~bananas_redis.broker.RedisBroker` on a Sentinel-managed master
(``redis+sentinel://``).

Only how a connection finds its server differs from one node: every new connection asks the sentinels (in the URL's
order, the first that answers) for the current master of ``<service>`` (redis-py's ``SentinelManagedConnection``)
and connects there. A failover therefore looks like an outage of one node:

* connections to the old master break (it died) or get ``READONLY`` (it was demoted: the connection is dropped and
  the error counts as a lost connection); worker-side calls retry with backoff for ``retry_for`` and land on the
  new master once the sentinels name it, producer-side calls retry within ``timeout`` and raise
  :class:`~bananas.errors.BrokerUnavailable` only if no master took over in that time;
* the new master is a replica of the old one: writes the old master acknowledged but had not replicated are lost
  (Redis replication is asynchronous), so a job may come back to the state it had a moment earlier. Leases and
  fencing keep delivery at-least-once: a job running through the failover is reaped when its lease expires and
  runs again; an ack that fails is retried until it lands or ``retry_for`` ends.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.sentinel import Sentinel as SyncSentinel
from redis.sentinel import SentinelConnectionPool as SyncSentinelConnectionPool

from bananas.plugin_api import BrokerOptions
from bananas_redis.broker import RedisBroker

__all__ = ["RedisSentinelBroker", "sentinel_kwargs"]


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

    def _data_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        t = self.target
        out = dict(kwargs, username=t.username, password=t.password, db=t.db)
        if self._tls:
            out["ssl"] = True
        return out

    def _config(self, **kwargs: Any) -> SentinelConnectionPool:
        t = self.target
        sentinel = Sentinel(list(t.hosts), sentinel_kwargs=sentinel_kwargs(kwargs))
        pool = SentinelConnectionPool(t.service, sentinel, **self._data_kwargs(kwargs))
        self._keep.append(pool)
        return pool

    def _sync_pool_config(self, **kwargs: Any) -> Any:
        t = self.target
        sentinel = SyncSentinel(list(t.hosts), sentinel_kwargs=sentinel_kwargs(kwargs))
        pool = SyncSentinelConnectionPool(t.service, sentinel, **self._data_kwargs(kwargs))
        self._keep.append(pool)
        return pool
