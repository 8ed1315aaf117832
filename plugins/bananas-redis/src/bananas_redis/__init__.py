"""bananas-redis: the production broker for ``redis://`` and ``rediss://`` URLs, Redis Cluster
(``redis+cluster://``) and Sentinel (``redis+sentinel://``), see :mod:`bananas_redis.urls`.

Installing the distribution is enough: its entry point (group ``bananas``) registers :class:`RedisBroker` for both
one-node schemes, :class:`RedisClusterBroker` and :class:`RedisSentinelBroker` for theirs, with
:class:`RedisOptions` as the ``[broker_options]`` schema, and :class:`RedisResultBackend` for results.
``bananas dlq`` and ``bananas queues`` are kernel commands (:mod:`bananas.cli_admin`); they work with this broker too.
"""

from __future__ import annotations

from bananas.plugin_api import BrokerOptions, BrokerSpec, Register, hookimpl
from bananas_redis.broker import RedisBroker
from bananas_redis.cluster import RedisClusterBroker
from bananas_redis.options import RedisOptions
from bananas_redis.results import RedisResultBackend, bananas_register_result_backends
from bananas_redis.sentinel import RedisSentinelBroker
from bananas_redis.urls import parse_redis_url

__all__ = ["RedisBroker", "RedisClusterBroker", "RedisOptions", "RedisSentinelBroker", "bananas_register_brokers"]
__all__ += ["redis_broker"]
__all__ += ["RedisResultBackend", "bananas_register_result_backends"]


def redis_broker(url: str, options: BrokerOptions | None = None) -> RedisBroker:
    """The broker of ``url``'s deployment: :class:`RedisBroker`, :class:`RedisClusterBroker` or
    :class:`RedisSentinelBroker` (a bad URL is a ``ConfigError`` naming what is allowed)."""
    kind = parse_redis_url(url).kind
    factory = {"single": RedisBroker, "cluster": RedisClusterBroker, "sentinel": RedisSentinelBroker}[kind]
    return factory(url, options)


@hookimpl
def bananas_register_brokers(register: Register[BrokerSpec]) -> None:
    register(
        BrokerSpec(
            schemes=("redis", "rediss"),
            factory=RedisBroker,
            options=RedisOptions,
            summary="Redis 6.2+ broker: leases, fencing, priorities, blocking fetch, batched Lua transitions",
        )
    )
    register(
        BrokerSpec(
            schemes=("redis+cluster", "rediss+cluster"),
            factory=RedisClusterBroker,
            options=RedisOptions,
            summary="The Redis broker on a Redis Cluster: one queue per slot, routed round trips, MOVED/ASK followed",
        )
    )
    register(
        BrokerSpec(
            schemes=("redis+sentinel", "rediss+sentinel"),
            factory=RedisSentinelBroker,
            options=RedisOptions,
            summary="The Redis broker on a Sentinel-managed master: follows the master through failovers",
        )
    )
