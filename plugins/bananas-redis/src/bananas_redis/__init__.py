"""bananas-redis: the production broker for ``redis://`` and ``rediss://`` URLs.

Installing the distribution is enough: its entry point (group ``bananas``) registers :class:`RedisBroker` for both
schemes, with :class:`RedisOptions` as the ``[broker_options]`` schema, and :class:`RedisResultBackend` for results.
``bananas dlq`` and ``bananas queues`` are kernel commands (:mod:`bananas.cli_admin`); they work with this broker too.
"""

from __future__ import annotations

from bananas.plugin_api import BrokerSpec, Register, hookimpl
from bananas_redis.broker import RedisBroker
from bananas_redis.options import RedisOptions
from bananas_redis.results import RedisResultBackend, bananas_register_result_backends

__all__ = ["RedisBroker", "RedisOptions", "bananas_register_brokers"]
__all__ += ["RedisResultBackend", "bananas_register_result_backends"]


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
