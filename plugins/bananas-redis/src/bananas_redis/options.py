"""``RedisOptions``: what ``[broker_options]`` may say about the Redis broker, on top of :class:`BrokerOptions`."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from bananas.plugin_api import BrokerOptions

__all__ = ["DEFAULT_SPIN_US", "MAX_SPIN_US", "RedisOptions"]

DEFAULT_SPIN_US = 0
"""``reply_spin_us`` default: no spin. Measured on 2 cores shared with Redis, spinning did not pay (docs/PERFORMANCE.md,
"Producers")."""
MAX_SPIN_US = 10_000


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{attribute.name}: expected a positive number, got {value!r}")


def _positive_int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{attribute.name}: expected a positive integer, got {value!r}")


def _prefix(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value or any(c in value for c in "{}"):
        raise ValueError(f"{attribute.name}: expected a non-empty string without '{{' or '}}', got {value!r}")


def _weights(value: Mapping[str, float] | None) -> dict[str, float] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"priority_weights: expected a table of queue = weight, got {value!r}")
    out: dict[str, float] = {}
    for name, weight in value.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
            raise ValueError(f"priority_weights.{name}: expected a positive number, got {weight!r}")
        out[str(name)] = float(weight)
    return out


def _protocol(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value not in (2, 3) or isinstance(value, bool):
        raise ValueError(f"{attribute.name}: expected 2 or 3 (RESP version), got {value!r}")


def _spin(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SPIN_US:
        raise ValueError(f"{attribute.name}: expected an integer from 0 to {MAX_SPIN_US} (microseconds), got {value!r}")


def _optional_path(instance: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{attribute.name}: expected a file path, got {value!r}")


@attrs.frozen(kw_only=True)
class RedisOptions(BrokerOptions):
    """Options of the Redis broker (``[broker_options]``); every field has a default.

    Attributes:
        prefix: First part of every key and hash tag (``{<prefix>:<queue>}``); lets several apps share a db.
        priority_weights: ``None`` (default) drains queues in strict priority order. A table such as
            ``{high = 6, normal = 3, low = 1}`` instead orders the queues of each fetch by a weighted random draw,
            so among non-empty queues ``high`` comes first 60 % of the time and ``low`` never starves. A queue
            not in the table is looked up by its last dotted part (``cpu.high`` -> ``high``), else weighs 1.
            Trade-off: a high-priority job may wait behind a few lower ones.
        pool_size: Connections for commands, and separately for blocked fetches; size it to the concurrency.
        socket_timeout: Seconds a command may wait for its reply before the connection counts as lost.
        connect_timeout: Seconds a connection attempt may take.
        timeout: Upper bound in seconds on a producer-side call (``enqueue``, inspection, ``connect``) before it
            raises :class:`~bananas.errors.BrokerUnavailable`; such calls do not retry.
        retry_for: Seconds a worker-side call (fetch, renew, ack, retry, dead_letter, release, move_due, reap)
            keeps retrying after a lost connection, with exponential backoff, before it raises BrokerUnavailable.
        retry_backoff: First backoff delay in seconds; it doubles up to ``retry_backoff_max`` (with jitter).
        retry_backoff_max: Longest backoff delay in seconds.
        ssl_ca_certs: CA bundle for ``rediss://`` URLs.
        ssl_certfile: Client certificate for ``rediss://`` (mutual TLS).
        ssl_keyfile: Key of the client certificate.
        ssl_cert_reqs: ``"required"`` (default), ``"optional"`` or ``"none"``.
        protocol: RESP version, 2 or 3; replies are parsed the same either way.
        unique_across_queues: Keep one live copy per id across all queues (the protocol's rule) with a home key
            per id the producer chose (ids the kernel generates, passed as ``generated_ids``, need none). ``False``
            skips the home keys of explicit ids too but only keeps them unique within a queue; safe when an id
            always goes to the same queue (the router is a pure function of the job).
        reply_spin_us: Microseconds a blocking producer call (``app.enqueue``, ``app.enqueue_many``) polls its socket
            for Redis's reply before it sleeps in ``poll`` (0 to 10,000; 0, the default: never spin). A reply that
            arrives within the spin is read without a thread wake-up; the price is up to this much CPU per round trip
            of a producer thread, and on cores shared with Redis the spin takes CPU Redis needs (measured in
            docs/PERFORMANCE.md, "Producers"). Plain ``redis://`` connections with ``protocol = 2`` only
            (:mod:`bananas_redis.fastconn`); TLS, RESP3, Sentinel and Cluster ignore it.
    """

    prefix: str = attrs.field(default="bananas", validator=_prefix)
    priority_weights: dict[str, float] | None = attrs.field(default=None, converter=_weights, hash=False)
    pool_size: int = attrs.field(default=16, validator=_positive_int)
    socket_timeout: float = attrs.field(default=10.0, validator=_positive)
    connect_timeout: float = attrs.field(default=5.0, validator=_positive)
    timeout: float = attrs.field(default=10.0, validator=_positive)
    retry_for: float = attrs.field(default=300.0, validator=_positive)
    retry_backoff: float = attrs.field(default=0.05, validator=_positive)
    retry_backoff_max: float = attrs.field(default=5.0, validator=_positive)
    ssl_ca_certs: str | None = attrs.field(default=None, validator=_optional_path)
    ssl_certfile: str | None = attrs.field(default=None, validator=_optional_path)
    ssl_keyfile: str | None = attrs.field(default=None, validator=_optional_path)
    ssl_cert_reqs: str = attrs.field(
        default="required", validator=attrs.validators.in_(("required", "optional", "none"))
    )
    protocol: int = attrs.field(default=2, validator=_protocol)
    unique_across_queues: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    reply_spin_us: int = attrs.field(default=DEFAULT_SPIN_US, validator=_spin)
