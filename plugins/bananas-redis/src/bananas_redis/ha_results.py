"""The result backend's clients for ``redis+cluster://`` and ``redis+sentinel://`` URLs (and their ``rediss+`` forms).

The keys of one result share a hash tag (:func:`bananas_redis.results.result_keys`), so ``store`` (one pipeline,
grouped by node) and the blocking ``BLMOVE`` of a waiter each touch one slot; redis-py's
:class:`~redis.asyncio.cluster.RedisCluster` routes them and follows ``MOVED``/``ASK``. On Sentinel, every new
connection asks the sentinels for the current master, and a connection that meets a demoted master (``READONLY``) is
dropped and counts as lost, so ``store`` retries onto the new master (``retry_for``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from bananas_redis.sentinel import sentinel_kwargs

if TYPE_CHECKING:
    from bananas_redis.results import RedisResultBackend

__all__ = ["ha_client"]


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Connections to the current master; at most ``max_connections``, callers wait for a free one (as on one
    node) instead of getting "Too many connections"."""


def ha_client(backend: RedisResultBackend, size: int, socket_timeout: float | None) -> Any:
    """A client of at most ``size`` connections (per node on a cluster) for ``backend``'s cluster or sentinel URL."""
    o, t = backend.options, backend.target
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": o.connect_timeout,
        "protocol": o.protocol,
        "username": t.username,
        "password": t.password,
    }
    if t.tls:
        common["ssl_cert_reqs"] = o.ssl_cert_reqs
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            if getattr(o, name) is not None:
                common[name] = getattr(o, name)
    if t.kind == "cluster":
        nodes = [ClusterNode(host, port) for host, port in t.hosts]
        return RedisCluster(startup_nodes=nodes, max_connections=size, ssl=t.tls, **common)
    sentinel = Sentinel(list(t.hosts), sentinel_kwargs=sentinel_kwargs(common))
    pool = _BlockingSentinelPool(t.service, sentinel, max_connections=size, timeout=None, db=t.db, ssl=t.tls,
                                 **common)
    return Redis(connection_pool=pool)
