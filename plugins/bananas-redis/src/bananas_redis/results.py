"""``result_backend = "redis://…"``: job results in Redis with a TTL, and waiters woken without polling.

Keys (``prefix`` from ``[result_backend_options]``, default ``bananas``; both keys of one job share a hash tag):

=====================================  ======  ===============================================================
key                                    type    contents
=====================================  ======  ===============================================================
``{bananas:result:<id>}:value``        STRING  the encoded result (``{"ok": …}`` through the serializer), with a
                                               ``PEXPIRE`` of the job's ``result_ttl`` or ``ttl`` (default 24 h)
``{bananas:result:<id>}:notify``       LIST    one completion token, ``PEXPIRE`` ``min(ttl, notify_ttl)``
=====================================  ======  ===============================================================

**Storing** is one small script per job (``SET value PX ttl``, ``DEL notify``, ``RPUSH notify 1``, ``PEXPIRE
notify``, atomically); the stores of jobs finishing together are written in one round trip. Stores staged on the
worker's broker (``stage``: written with the ack) go as one script call for all the jobs of that ack.
``ttl = 0`` stores nothing (and wakes nobody).

**Waiting** first ``GET``s the value (a result stored before the waiter came is found at once), then blocks in
``BLMOVE notify notify RIGHT LEFT <remaining>``: a rotation that leaves the token in place. Redis serves every
client blocked on the list in turn when the token is pushed, and each rotation keeps the list non-empty, so one
``store`` wakes all concurrent waiters of that job, and a waiter that arrives between its ``GET`` and its
``BLMOVE`` returns at once. Then it ``GET``s the value again. Each blocked waiter holds one connection of a
separate pool (``max_waiters``, default 1000; more waiters queue for a connection), so blocked waits never delay
``store`` calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import attrs
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, InvalidResponse, NoPermissionError, ReadOnlyError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bananas.plugin_api import (
    DEFAULT_RESULT_TTL,
    BrokerUnavailable,
    ConfigError,
    Register,
    ResultBackendSpec,
    hookimpl,
    parse_ttl,
    redact_url,
)
from bananas_redis.broker import RedisBroker, _pack
from bananas_redis.errors import explain_async, unavailable
from bananas_redis.options import _positive, _positive_int, _prefix
from bananas_redis.urls import SCHEMES, parse_redis_url

__all__ = ["RedisResultBackend", "RedisResultOptions", "bananas_register_result_backends", "result_keys"]

T = TypeVar("T")
_RETRYABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError, TimeoutError)
_PERMANENT = (AuthenticationError, NoPermissionError, InvalidResponse)  # retrying cannot help: fail at once
_MIN_BLOCK = 0.001  # BLMOVE timeout resolution (seconds); 0 would mean "forever"


CLOSE_GRACE = 0.5
"""Seconds ``close`` lets a store in flight finish before it cancels it."""

_PendingStore = tuple[str, bytes, int, int, "asyncio.Future[None]"]
"""A store waiting for its round trip: job id, body, value TTL (ms), notification TTL (ms), the caller's future."""

def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or not math.isfinite(value):
        raise ValueError(f"{attribute.name}: expected a duration of 0 or more, got {value!r}")


def _optional_path(instance: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{attribute.name}: expected a file path, got {value!r}")


@attrs.frozen(kw_only=True)
class RedisResultOptions:
    """``[result_backend_options]`` of the Redis result backend; durations may be ``"30s"``, ``"24h"``…

    Attributes:
        ttl: Seconds a result is kept unless the job says otherwise (``result_ttl=``); ``0`` stores none.
        prefix: First part of every key (``{<prefix>:result:<id>}:…``).
        notify_ttl: Longest life of a job's completion token (it only has to outlive the waiters blocked when the
            result is stored; later waiters find the value itself).
        max_waiters: Connections for blocked waits, one per concurrent waiter; more waiters queue for one.
        pool_size: Connections for ``GET``/``SET`` commands.
        timeout: Seconds one command may take (the blocking wait itself is bounded by the caller's ``wait``);
            past it the call fails with :class:`~bananas.errors.BrokerUnavailable`.
        connect_timeout: Seconds a connection attempt may take.
        retry_for: Seconds ``store`` (worker side) keeps retrying a lost connection before it raises.
        ssl_ca_certs, ssl_certfile, ssl_keyfile, ssl_cert_reqs: TLS for ``rediss://`` URLs.
        protocol: RESP version, 2 or 3.
    """

    ttl: float = attrs.field(default=DEFAULT_RESULT_TTL, validator=_non_negative)
    prefix: str = attrs.field(default="bananas", validator=_prefix)
    notify_ttl: float = attrs.field(default=60.0, validator=_positive)
    max_waiters: int = attrs.field(default=1000, validator=_positive_int)
    pool_size: int = attrs.field(default=16, validator=_positive_int)
    timeout: float = attrs.field(default=10.0, validator=_positive)
    connect_timeout: float = attrs.field(default=5.0, validator=_positive)
    retry_for: float = attrs.field(default=60.0, validator=_positive)
    ssl_ca_certs: str | None = attrs.field(default=None, validator=_optional_path)
    ssl_certfile: str | None = attrs.field(default=None, validator=_optional_path)
    ssl_keyfile: str | None = attrs.field(default=None, validator=_optional_path)
    ssl_cert_reqs: str = attrs.field(
        default="required", validator=attrs.validators.in_(("required", "optional", "none"))
    )
    protocol: int = attrs.field(default=2, validator=attrs.validators.in_((2, 3)))

    @classmethod
    def from_table(cls, table: Mapping[str, object] | None) -> RedisResultOptions:
        """Build from ``[result_backend_options]``; errors name ``result_backend_options.<key>``."""
        fields = {f.name: f for f in attrs.fields(cls)}
        kwargs: dict[str, Any] = {}
        for name, value in (table or {}).items():
            key = f"result_backend_options.{name}"
            field = fields.get(name)
            if field is None:
                raise ConfigError(key, value, "redis result backend", f"unknown option; allowed: {', '.join(fields)}")
            if field.type in (float, "float") and isinstance(value, str):
                try:
                    value = parse_ttl(value, name)
                except ValueError as exc:
                    raise ConfigError(key, value, "redis result backend", str(exc)) from None
            kwargs[name] = value
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError("result_backend_options", dict(table or {}), "redis result backend", str(exc)) from None


def result_keys(prefix: str, job_id: str) -> tuple[str, str]:
    """``(value key, notify key)`` of ``job_id``'s result; both share the hash tag ``{<prefix>:result:<id>}``."""
    tag = "{" + prefix + ":result:" + job_id + "}"
    return tag + ":value", tag + ":notify"


_STORE_SCRIPT = """redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
redis.call('RPUSH', KEYS[2], '1')
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1"""
"""One job's store: the value with its TTL, then exactly one completion token with its own TTL (``EVAL``: Redis
caches the compiled script by its SHA1, and a restarted server needs no ``SCRIPT LOAD``)."""


_STORE_MANY_SCRIPT = """for i = 1, #KEYS, 2 do
    local a = (i - 1) / 2 * 3
    redis.call('SET', KEYS[i], ARGV[a + 1], 'PX', ARGV[a + 2])
    redis.call('DEL', KEYS[i + 1])
    redis.call('RPUSH', KEYS[i + 1], '1')
    redis.call('PEXPIRE', KEYS[i + 1], ARGV[a + 3])
end
return #KEYS / 2"""
"""The stores of several jobs in one call, each exactly as :data:`_STORE_SCRIPT` (KEYS: value, notify per job;
ARGV: body, ttl ms, notify ttl ms per job). Only on one server (the broker's own, see ``stage``): the keys of
different jobs sit in different cluster slots."""


class _StagedStores(Sequence[Any]):
    """The result stores staged on a broker for its next ack, as one growing ``EVAL`` of
    :data:`_STORE_MANY_SCRIPT`: one script call (and one reply) per round trip instead of one per job."""

    __slots__ = ("args", "keys")

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.args: list[Any] = []

    def add(self, value: str, notify: str, body: bytes, px: int, notify_px: int) -> None:
        self.keys += (value, notify)
        self.args += (body, px, notify_px)

    def _command(self) -> tuple[Any, ...]:
        return ("EVAL", _STORE_MANY_SCRIPT, len(self.keys), *self.keys, *self.args)

    def __len__(self) -> int:
        return 3 + len(self.keys) + len(self.args)

    def __getitem__(self, index: Any) -> Any:
        return self._command()[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._command())


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisResultBackend:
    """The :class:`~bananas.result_backend.ResultBackend` protocol on Redis (see the module docstring).

    ``RedisResultBackend(url, options)`` does no I/O; :meth:`connect` opens the pools and checks the server.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", options: Mapping[str, object] | None = None) -> None:
        self.target = parse_redis_url(url, "result_backend", "RedisResultBackend")
        self.url = url
        self.options = options if isinstance(options, RedisResultOptions) else RedisResultOptions.from_table(options)
        self._tls = self.target.tls
        self._commands: Redis | None = None
        self._blocking: Redis | None = None
        self._pending: list[_PendingStore] = []
        self._flushers: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"RedisResultBackend({redact_url(self.url)!r})"

    # -- lifecycle -------------------------------------------------------------------------------------------
    def _pool(self, size: int, socket_timeout: float | None) -> BlockingConnectionPool:
        o = self.options
        kwargs: dict[str, Any] = {
            "max_connections": size,
            "timeout": None,  # a caller waits for a free connection; its own asyncio.timeout bounds the wait
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": o.connect_timeout,
            "protocol": o.protocol,
            "retry": Retry(NoBackoff(), 0),  # retries are ours
        }
        if self._tls:
            kwargs["ssl_cert_reqs"] = o.ssl_cert_reqs
            for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
                if getattr(o, name) is not None:
                    kwargs[name] = getattr(o, name)
        return BlockingConnectionPool.from_url(self.url, **kwargs)

    def _client(self, size: int, socket_timeout: float | None) -> Redis:
        """A client of at most ``size`` connections for this URL's deployment (one node, a Redis Cluster or a
        Sentinel-managed master: :mod:`bananas_redis.ha_results`)."""
        if self.target.kind == "single":
            return Redis(connection_pool=self._pool(size, socket_timeout))
        from bananas_redis.ha_results import ha_client

        return ha_client(self, size, socket_timeout)

    def _open(self) -> tuple[Redis, Redis]:
        if self._commands is None or self._blocking is None:
            o = self.options
            self._commands = self._client(o.pool_size, o.timeout)
            # Blocked waits get their own pool (no socket timeout: asyncio.timeout bounds each BLMOVE), so a
            # thousand waiters never hold a connection a store is waiting for.
            self._blocking = self._client(o.max_waiters, None)
        return self._commands, self._blocking

    async def connect(self) -> None:
        commands, blocking = self._open()
        await self._call("connect", lambda: commands.ping())
        if self.target.kind == "cluster":  # the waiters' client learns the slot map now, not in the first wait
            await self._call("connect", lambda: blocking.initialize())  # type: ignore[attr-defined]

    async def close(self) -> None:
        flushers, self._flushers = {task for task in self._flushers if not task.done()}, set()
        if flushers:
            # Stores still in flight (or retrying through an outage) must not hold up a stopping worker: give them
            # a moment, then cancel them; their callers see the cancellation (their jobs' leases bring them back).
            _, late = await asyncio.wait(flushers, timeout=CLOSE_GRACE)
            for task in late:
                task.cancel()
            for task in late:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        commands, blocking = self._commands, self._blocking
        self._commands = self._blocking = None
        for client in (commands, blocking):
            if client is not None:
                if isinstance(client, Redis):
                    await client.aclose(close_connection_pool=True)
                else:  # a RedisCluster closes its node pools itself
                    await client.aclose()

    # -- error handling --------------------------------------------------------------------------------------
    async def _unavailable(self, what: str, exc: BaseException) -> BrokerUnavailable:
        """The one-line error naming the URL (password redacted) and the cause (:mod:`bananas_redis.errors`)."""
        o = self.options
        cause = await explain_async(exc, self.url, connect_timeout=o.connect_timeout, reply_timeout=o.timeout)
        return unavailable("redis result backend", self.url, what, cause)

    async def _call(self, what: str, call: Callable[[], Awaitable[T]], retry_for: float = 0.0) -> T:
        """Run ``call`` within ``timeout``; a lost connection is retried at once, and with backoff for up to
        ``retry_for`` seconds; then :class:`BrokerUnavailable`. A server that cannot be used as configured (wrong
        password, not a Redis server, TLS mismatch) fails at once with :class:`BrokerMisconfigured`."""
        o = self.options
        deadline = time.monotonic() + retry_for
        delay = 0.05
        attempt = 0
        while True:
            attempt += 1
            try:
                async with asyncio.timeout(o.timeout):
                    return await call()
            except _PERMANENT as exc:  # (an AuthenticationError is a ConnectionError too: first)
                raise await self._unavailable(what, exc) from exc
            except _RETRYABLE as exc:
                if attempt > 1 and time.monotonic() >= deadline:
                    raise await self._unavailable(what, exc) from exc
                if attempt > 1:
                    await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())) * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, 2.0)
            except RedisError as exc:
                raise await self._unavailable(what, exc) from exc

    # -- the protocol ----------------------------------------------------------------------------------------
    async def store(self, job_id: str, body: bytes, ttl: float | None) -> None:
        """Store and wake the waiters; returns once Redis has it. Stores that arrive in the same event-loop
        iteration go together in one pipeline round trip (a worker finishing jobs concurrently pays one round trip
        per batch, not per job). Batches are independent: one retrying through an outage never holds up the next."""
        ttl = self.options.ttl if ttl is None else ttl
        if ttl <= 0:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((job_id, body, _ms(ttl), _ms(min(ttl, self.options.notify_ttl)), done))
        if len(self._pending) == 1:  # the first of a batch: send the batch once this loop iteration is over
            task = asyncio.create_task(self._flush_batch(), name="redis-results-store")
            self._flushers.add(task)
            task.add_done_callback(self._flushers.discard)
        await done

    def stage(self, job_id: str, body: bytes, ttl: float | None, broker: object) -> bool:
        """Have ``broker`` write this store in the round trip of its next ack, before the ack (the optional
        ``stage`` of :mod:`bananas.result_backend`). Only for a :class:`~bananas_redis.broker.RedisBroker` on this
        very URL (same server, database and credentials); ``False`` otherwise, and the kernel calls :meth:`store`."""
        if type(broker) is not RedisBroker or broker.url != self.url:
            return False
        ttl = self.options.ttl if ttl is None else ttl
        if ttl > 0:
            value, notify = result_keys(self.options.prefix, job_id)
            notify_px = _ms(min(ttl, self.options.notify_ttl))
            broker.staged_batch(_StagedStores).add(value, notify, body, _ms(ttl), notify_px)
        return True

    async def _flush_batch(self) -> None:
        """Write the stores pending now in one pipeline; each caller gets the outcome."""
        await asyncio.sleep(0)  # stores of jobs finishing in this same loop iteration join the batch
        batch, self._pending = self._pending, []

        prefix = self.options.prefix
        packed = _pack([("EVAL", _STORE_SCRIPT, 2, *result_keys(prefix, job_id), body, px, notify_ms)
                        for job_id, body, px, notify_ms, _ in batch])

        async def run() -> None:
            # One script call per job (its two keys share a hash tag), all sent in one write on one connection and
            # read back in order: redis-py's pipeline costs ~4x more client CPU per job for the same four commands.
            commands, _ = self._open()
            if self.target.kind == "cluster":  # redis-py's cluster pipeline sends each store to its slot's node
                pipe = commands.pipeline()
                for job_id, body, px, notify_ms, _ in batch:
                    pipe.eval(_STORE_SCRIPT, 2, *result_keys(prefix, job_id), body, px, notify_ms)
                await pipe.execute()
                return
            pool = commands.connection_pool
            conn = await pool.get_connection()
            try:
                await conn.send_packed_command(packed, check_health=False)
                error: Exception | None = None
                for _ in batch:
                    reply = await conn.read_response(disable_decoding=True)
                    if isinstance(reply, Exception) and error is None:
                        error = reply
                if error is not None:
                    raise error
            except BaseException:
                await conn.disconnect()
                raise
            finally:
                await pool.release(conn)

        try:
            await self._call("store", run, retry_for=self.options.retry_for)
        except BaseException as exc:
            for *_, done in batch:
                if not done.done():
                    if isinstance(exc, Exception):
                        done.set_exception(exc)
                    else:
                        done.cancel()
            if not isinstance(exc, Exception):
                raise
        else:
            for *_, done in batch:
                if not done.done():
                    done.set_result(None)

    async def get(self, job_id: str, wait: float | None = None) -> bytes | None:
        commands, blocking = self._open()
        value, notify = result_keys(self.options.prefix, job_id)
        body: bytes | None = await self._call("get", lambda: commands.get(value))
        if body is not None or not wait or wait <= 0:
            return body
        deadline = time.monotonic() + wait
        lost = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining + self.options.timeout):
                    await blocking.execute_command(
                        "BLMOVE", notify, notify, "RIGHT", "LEFT", f"{max(remaining, _MIN_BLOCK):.3f}"
                    )
                break  # woken (the token is back in place for the other waiters), or Redis timed the wait out
            except _PERMANENT as exc:
                raise await self._unavailable("wait", exc) from exc
            except _RETRYABLE as exc:
                lost += 1
                if lost > 1:
                    raise await self._unavailable("wait", exc) from exc
            except RedisError as exc:
                raise await self._unavailable("wait", exc) from exc
        return await self._call("get", lambda: commands.get(value))


@hookimpl
def bananas_register_result_backends(register: Register[ResultBackendSpec]) -> None:
    register(
        ResultBackendSpec(
            schemes=SCHEMES,
            factory=RedisResultBackend,
            summary="Redis results with a TTL; waiters block on a per-job completion list (BLMOVE), no polling",
        )
    )
