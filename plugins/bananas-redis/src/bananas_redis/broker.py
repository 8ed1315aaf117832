"""``RedisBroker``: the :class:`bananas.broker.Broker` protocol on Redis 6.2+ with ``redis.asyncio``.

Design (every key and its type is documented in :mod:`bananas_redis.keys` and at the top of ``lua/dispatch.lua``):

* **One Lua dispatcher** does every transition of one queue atomically (enqueue, take, renew, ack, retry, dead,
  release, move_due, reap and the dead-letter commands). It is called with ``EVALSHA`` and loaded again on
  ``NOSCRIPT`` (after a restart or ``SCRIPT FLUSH``). A call touches the keys of one queue only, all under one hash
  tag, so the layout is cluster-ready; calls for several queues are pipelined into one round trip. A second small
  script (``home.lua``) keeps each id's home queue, so an id has one live copy across queues.
* **Batches.** ``enqueue`` sends one script call per queue (plus one home claim per id bucket, for ids the
  producer chose: ids in ``generated_ids`` are fresh uuid4s and claim none) in one round trip;
  ``fetch`` leases up to ``limit`` jobs per script call, over all its queues in one round trip on a single server;
  ``ack``, ``renew`` and ``release`` settle a list per queue in one round trip.
* **Type-aware queues.** Each queue keeps one ready ZSET per job type (scored by enqueue position) and an index of
  their heads, so ``fetch(..., job_types=...)`` takes the oldest ready jobs of those types, by priority, in one
  script call per queue, never touching another type's job, and an untyped fetch stays exactly FIFO across types.
  Jobs left in 0.1's single ready list are drained first by fetches of every type or of the type ``""``.
  Wake-up lists are per type (plus ``wake`` for untyped fetchers). See ``lua/dispatch.lua`` and the README.
* **Blocking fetch without polling.** Every script that makes jobs ready also keeps the queue's ``signal`` list
  non-empty while ``ready`` is (and empties it when ``ready`` is empty). A fetcher that found nothing blocks in
  ``BLPOP`` on the signal lists of its queues with the remaining timeout and takes again as soon as one is
  pushed; since signals are list items, not pub/sub messages, a job enqueued between the empty take and the
  ``BLPOP`` is never missed. A fetcher whose last call ended empty goes straight to ``BLPOP`` (the signal list
  says whether work exists), so an idle worker costs one command per fetch timeout. ``reap`` repairs a signal
  lost with a fetcher that died between its ``BLPOP`` and its take (within ``lease + reaper_interval``: the
  reaper is lazy, see :meth:`RedisBroker.reap`). On a Redis Cluster ``BLPOP`` cannot span slots: the cluster
  broker (:mod:`bananas_redis.cluster`) blocks with one ``BLPOP`` per queue instead (it overrides ``_blpop``).
* **Optional capabilities** (see :mod:`bananas.broker`): ``enqueue_sync`` (blocking connections, same commands,
  for ``app.enqueue``; on plain ``redis://`` the round trips are :mod:`bananas_redis.fastconn`'s),
  ``enqueue_with_hints``, ``ack_and_fetch`` (acks pipelined with the next take) and
  ``schedules`` (the scheduler's leader lease and periodic-job guard, in :mod:`bananas_redis.schedules`).
* **Fencing tokens** are ``(per-queue counter << 16) | queue number`` (the number comes from the queue registry),
  so they are unique across queues while each script only touches its own queue's counter.
* **Time** comes from ``options.clock()`` and is passed to the scripts, so tests can move it.
* **Connections.** Producer-side calls (``enqueue``, ``enqueue_sync``, inspection, dead-letter commands) fail with
  :class:`~bananas.errors.BrokerUnavailable` within ``options.timeout`` (also when Redis is out of memory, or a
  password is missing or wrong: :meth:`RedisBroker.connect` and every new ``enqueue_sync`` connection start with a
  ``PING``), or another :class:`~bananas.errors.BrokerError`; never a redis-py exception. The message is one line
  naming the URL (password redacted) and the cause (:mod:`bananas_redis.errors`); a server that cannot be used as
  configured (wrong password or ACL user, not a Redis server, TLS mismatch) raises its subclass
  :class:`~bananas.errors.BrokerMisconfigured`. Both lanes keep at most
  ``pool_size`` connections and recover after any outage. Worker-side calls retry lost connections with exponential
  backoff for up to ``options.retry_for`` seconds; the outage state is broker-wide: the loss is logged once per
  outage, and the recovery only when a round trip gets a reply from Redis again. Jobs a worker holds keep their
  leases meanwhile (it renews them once Redis is back).
* **Faults.** ``take`` checks every ready entry before it pops anything: malformed records (a hash without a body,
  a string) are dead-lettered, stale entries (no record, another state, a key of another type) dropped; one warning
  per entry is logged (see the header of ``lua/dispatch.lua``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import random
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Generator, Sequence
from importlib import resources
from typing import Any, TypeVar

import attrs
from loguru import logger
from redis import ConnectionPool as SyncConnectionPool
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    InvalidResponse,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as SyncRetry

from bananas.plugin_api import (
    BrokerError,
    BrokerOptions,
    BrokerUnavailable,
    ConfigError,
    DeadLetter,
    Delivery,
    Envelope,
    JobRecord,
    QueueDepth,
    ReadyType,
    redact_url,
)
from bananas_redis import enqueue_rounds as rounds
from bananas_redis.control import RedisControl
from bananas_redis.errors import Cause, cause_of, explain, explain_async, is_refusal, unavailable
from bananas_redis.fastconn import FastLane, fast_lane
from bananas_redis.keys import QueueKeys, due_signal_key, home_key, queue_keys, queue_seq_key, registry_key
from bananas_redis.options import RedisOptions
from bananas_redis.progress import RedisProgress
from bananas_redis.registry import WorkerRegistry
from bananas_redis.schedules import RedisSchedules
from bananas_redis.urls import ALLOWED, parse_redis_url

__all__ = ["HOME_SCRIPT", "SCRIPT", "RedisBroker"]

T = TypeVar("T")
R = TypeVar("R")
_B = TypeVar("_B")
log = logger.bind(component="redis", log_source="bananas_internal")
"""The broker's records (connection lost/back, odd entries) carry ``component=redis`` (docs/OBSERVABILITY.md)."""
Command = tuple[Any, ...]
Steps = Generator[list[Command], list[Any], None]
"""A multi-round-trip operation: yields each round trip's commands, receives their replies."""

_LUA = resources.files("bananas_redis").joinpath("lua")
SCRIPT: bytes = _LUA.joinpath("dispatch.lua").read_bytes()
"""The queue dispatcher script (package data)."""
HOME_SCRIPT: bytes = _LUA.joinpath("home.lua").read_bytes()
"""The home-key script (package data)."""

_SHA = hashlib.sha1(SCRIPT).hexdigest()
_HOME_SHA = hashlib.sha1(HOME_SCRIPT).hexdigest()
_RETRYABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)
_PERMANENT = (AuthenticationError, NoPermissionError, InvalidResponse)  # a worker-side call fails at once
_TOKEN_BITS = 16  # a token is (per-queue counter << 16) | queue number, so tokens are unique across queues
_TOKEN_MASK = (1 << _TOKEN_BITS) - 1
_REAP_BATCH = 1000
_HOME_HORIZON = 7 * 24 * 3600.0  # a home key outlives the retention by this much (a job may wait that long)
_SEND_SLICE = 2  # commands encoded and written per socket write in one round trip
_ENQUEUE_CHUNK = 250  # envelopes per enqueue script call: small enough to overlap encoding with Redis's work
_MIN_BLOCK = 0.001  # BLPOP timeout resolution (seconds); 0 would mean "forever"
_DUE_SAFETY = 30.0  # an idle scheduler still does a full move_due pass this often (seconds, see move_due)
_INF = float("inf")
_GENERATED_ID = re.compile(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}")
"""What ``bananas.job.new_job_id`` makes (``uuid4().hex``): explicit ids of this shape get the adoption check."""


def _is_oom(exc: BaseException) -> bool:
    """Redis refused a write because ``maxmemory`` is reached (also when a script's write was refused)."""
    return isinstance(exc, OutOfMemoryError) or (isinstance(exc, ResponseError) and "OOM " in str(exc))


def _first_per_id(envelopes: Sequence[Envelope]) -> list[Envelope]:
    """Within one call only the first envelope of an id can be stored: any later one meets it as a live copy."""
    if len(envelopes) == 1:
        return list(envelopes)
    first: dict[str, Envelope] = {}
    for env in envelopes:
        first.setdefault(env.id, env)
    return list(first.values()) if len(first) != len(envelopes) else list(envelopes)


def _flags(envelopes: Sequence[Envelope], stored: dict[str, bool]) -> list[bool]:
    """One flag per envelope from the stored flags by id; a second envelope of one id in a batch is never stored."""
    if len(envelopes) == 1:
        return [stored.get(envelopes[0].id, False)]
    seen: set[str] = set()
    out = []
    for env in envelopes:
        out.append(env.id not in seen and stored.get(env.id, False))
        seen.add(env.id)
    return out


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _num(value: float) -> str:
    return repr(float(value))


def _ttl(seconds: float) -> int:
    return max(1, int(-(-seconds // 1)))


def _as_redis_options(options: BrokerOptions | None) -> RedisOptions:
    if options is None:
        return RedisOptions()
    if isinstance(options, RedisOptions):
        return options
    common = {a.name: getattr(options, a.name) for a in attrs.fields(BrokerOptions)}
    return RedisOptions(**common)


class _Packed(tuple):  # type: ignore[type-arg]
    """A command that carries its RESP encoding (``wire``), made where it was built (:func:`_enqueue_command`):
    :func:`_pack` sends ``wire`` as is. Still the command's tuple for everything that reads commands (the cluster
    broker routes on its key, tests count its name)."""

    wire: bytes


def _bulk(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return b"$%d\r\n%b\r\n" % (len(data), data)


def _as_bytes(value: Any) -> bytes:
    if value is None:
        raise TypeError("cannot send None to Redis: the body of an EVALSHA enqueue command")
    return value.encode() if isinstance(value, str) else bytes(value)


_EMPTY_BULK = _bulk("")
_JOB = b"$%d\r\n%b\r\n$%d\r\n%b\r\n"  # id, body
_JOB_NOW = _JOB + _EMPTY_BULK + b"%b"  # id, body, no eta, the type's bulk string


_HEADS: dict[str, bytes] = {}  # queue tag -> the fixed part of its enqueue call (see _enqueue_command)


def _enqueue_head(qk: QueueKeys) -> bytes:
    """The fixed part of ``qk``'s enqueue call: EVALSHA, the sha, the keys, ``enqueue`` and the job prefix."""
    head = _HEADS.get(qk.tag)
    if head is None:
        if len(_HEADS) >= 4096:
            _HEADS.clear()
        head = _HEADS[qk.tag] = b"".join(
            _bulk(str(a)) for a in ("EVALSHA", _SHA, 10, *qk.script_keys, "enqueue", qk.job_prefix)
        )
    return head


@functools.lru_cache(maxsize=1024)
def _type_bulk(job_type: str) -> bytes:
    return _bulk(job_type)


def _enqueue_command(qk: QueueKeys, now: str, envelopes: Sequence[Envelope]) -> _Packed:
    """The dispatcher's ``enqueue`` call for ``envelopes``: ``_dispatch(qk, "enqueue", now, *quadruples)``, with its
    RESP encoding built here (the fixed head once per queue, one format per job) instead of argument by argument."""
    args: list[Any] = ["EVALSHA", _SHA, 10, *qk.script_keys, "enqueue", qk.job_prefix, now]
    wire: list[bytes] = [b"", _enqueue_head(qk), _bulk(now)]
    add, put = args.extend, wire.append
    types: dict[str, bytes] = {}  # job type -> its bulk string (a batch has few types)
    for env in envelopes:
        ident = env.id.encode()
        body = env.body if type(env.body) is bytes else _as_bytes(env.body)
        job_type = env.job_type
        kind = types.get(job_type)
        if kind is None:
            kind = types[job_type] = _type_bulk(job_type)
        if env.eta is None:  # ready now: id, body, the empty eta and the type in one format
            add((env.id, body, "", job_type))
            put(_JOB_NOW % (len(ident), ident, len(body), body, kind))
        else:
            eta = _num(env.eta)
            add((env.id, body, eta, job_type))
            put(_JOB % (len(ident), ident, len(body), body))
            put(_bulk(eta))
            put(kind)
    wire[0] = b"*%d\r\n" % len(args)
    command = _Packed(args)
    command.wire = b"".join(wire)
    return command


def _pack(commands: Sequence[Command]) -> bytes:
    """RESP-encode ``commands`` (str as UTF-8, bytes as is, int and float in decimal); faster than redis-py's.
    A :class:`_Packed` command is sent as it was encoded.

    ``None`` is a :class:`TypeError` (naming the argument), never ``float(None)``."""
    parts: list[bytes] = []
    append = parts.append
    for command in commands:
        if type(command) is _Packed:
            append(command.wire)
            continue
        append(b"*%d\r\n" % len(command))
        for position, arg in enumerate(command):
            if isinstance(arg, bytes):
                data = arg
            elif isinstance(arg, str):
                data = arg.encode()
            elif isinstance(arg, int):
                data = b"%d" % arg
            elif arg is None:
                raise TypeError(f"cannot send None to Redis: argument {position} of a {_str(command[0])} command")
            else:
                data = repr(float(arg)).encode()
            append(b"$%d\r\n" % len(data))
            append(data)
            append(b"\r\n")
    return b"".join(parts)


class _Pool:
    """A lean connection pool for the command lane: at most ``size`` connections, callers wait for a free one.

    redis-py's pools add a lock, health checks and metrics to every checkout; this one only hands out connections.
    A connection that saw any error is disconnected before it comes back, so a pooled one is always in sync.
    """

    def __init__(self, make: Callable[[], AbstractConnection], size: int) -> None:
        self._make = make
        self._idle: list[AbstractConnection] = []
        self._slots = asyncio.Semaphore(size)
        self._all: set[AbstractConnection] = set()

    async def get(self) -> AbstractConnection:
        await self._slots.acquire()
        conn: AbstractConnection | None = None
        try:
            if self._idle:
                conn = self._idle.pop()
            else:
                conn = self._make()
                self._all.add(conn)
            if not conn.is_connected:
                await conn.connect()
            return conn
        except BaseException:
            # A connection whose connect() failed goes back (disconnected) for the next caller to reuse, so a
            # long outage never piles up connection objects: there are at most ``size`` of them.
            if conn is not None:
                await self._discard(conn)
            self._slots.release()
            raise

    async def _discard(self, conn: AbstractConnection) -> None:
        try:
            await conn.disconnect()
        finally:
            if conn in self._all:
                self._idle.append(conn)

    def put(self, conn: AbstractConnection) -> None:
        if conn in self._all:  # not closed meanwhile
            self._idle.append(conn)
        self._slots.release()

    async def close(self) -> None:
        conns, self._all, self._idle = self._all, set(), []
        for conn in conns:
            await conn.disconnect()


def _raise_first(replies: list[Any]) -> list[Any]:
    """``replies``, or the first error reply among them raised."""
    for r in replies:
        if isinstance(r, Exception):
            raise r
    return replies


def _dispatch(qk: QueueKeys, command: str, *args: Any) -> Command:
    return ("EVALSHA", _SHA, 10, *qk.script_keys, command, qk.job_prefix, *args)


def _dispatch_shared(qk: QueueKeys, budget: str, command: str, *args: Any) -> Command:
    """:func:`_dispatch` with the 11th key of a take that shares its limit with the other takes of one fetch."""
    return ("EVALSHA", _SHA, 11, *qk.script_keys, budget, command, qk.job_prefix, *args)


class RedisBroker(RedisSchedules, WorkerRegistry, RedisProgress, RedisControl):
    """The production broker for ``redis://`` and ``rediss://`` URLs (see the module docstring).

    ``RedisBroker(url, options)`` does no I/O; :meth:`connect` opens the pools and loads the scripts.
    """

    _one_server = True
    """Every key on one server: a fetch over several queues takes from all of them in one round trip (a cluster
    spreads queues over nodes and takes queue by queue)."""

    _KIND = "single"  # the deployment of parse_redis_url this class serves (cluster.py and sentinel.py: theirs)

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", options: BrokerOptions | None = None) -> None:
        self.target = parse_redis_url(url, "broker", type(self).__name__)
        if self.target.kind != self._KIND:
            raise ConfigError("broker", redact_url(url), type(self).__name__, f"{ALLOWED} (for {type(self).__name__}: "
                              f"a {self._KIND} URL; redis_broker(url) picks the class for the URL)")
        self.url = url
        self.options: RedisOptions = _as_redis_options(options)
        self._tls = self.target.tls
        self._pool: _Pool | None = None
        self._blocking: _Pool | None = None
        self._hot: dict[tuple[tuple[str, ...], tuple[str, ...] | None], bool] = {}
        self._types: dict[frozenset[str], tuple[str, ...]] = {}  # job_types -> script arguments (see _type_args)
        self._numbers: dict[str, int] = {}  # queue -> its number in the registry (low bits of every token)
        self._registry = registry_key(self.options.prefix)
        self._queue_seq = queue_seq_key(self.options.prefix)
        # Lazy scheduler (see move_due): new delayed jobs and retries push a token to this list; fetchers of a
        # broker that runs move_due also BLPOP it, so an idle scheduler learns of them without polling.
        self._due_key = due_signal_key(self.options.prefix)
        self._scheduler = False  # move_due was called on this broker: its idle fetches listen for due tokens
        self._due_at = 0.0  # clock time of the earliest scheduled job seen by the last full pass (inf: none)
        self._due_dirty = True  # a token arrived (or a local retry / delayed enqueue) since the last full pass
        self._due_checked = 0.0  # monotonic time of the last full pass
        self._watching = 0  # BLPOPs in flight that include the due-signal key
        # Lazy reaper (see reap): per queue, (clock, monotonic) times before which a reap cannot find anything.
        self._reap_due: dict[str, tuple[float, float]] = {}
        self._budgets = 0  # fetches over several queues so far (each has its own take-budget key, see _take)
        self._instance = uuid.uuid4().hex[:12]
        self._staged: list[Command] = []  # result stores to send before the next ack (RedisResultBackend.stage)
        self._reap_list: tuple[list[str], float, float] | None = None  # known queues, valid until (clock, mono)
        # enqueue_sync's connections (redis-py's blocking client), shared by every thread that enqueues.
        self._sync_lock = threading.Lock()
        self._sync_config: SyncConnectionPool | None = None
        self._sync_idle: list[Any] = []
        self._sync_all: set[Any] = set()
        self._sync_slots = threading.BoundedSemaphore(self.options.pool_size)
        self._sync_fast: dict[Any, FastLane] = {}  # connection -> its lean round trip (bananas_redis.fastconn)
        # Outage state, broker-wide (see _work): monotonic start of the current outage, None while Redis answers.
        self._outage: float | None = None

    def __repr__(self) -> str:
        return f"RedisBroker({redact_url(self.url)!r})"

    # -- lifecycle -------------------------------------------------------------------------------------------
    def _pool_kwargs(self) -> dict[str, Any]:
        o = self.options
        kwargs: dict[str, Any] = {
            "socket_connect_timeout": o.connect_timeout,
            "protocol": o.protocol,
            "max_connections": o.pool_size,
            "retry": Retry(NoBackoff(), 0),  # retries are ours (see _produce and _work)
        }
        if self._tls:
            kwargs["ssl_cert_reqs"] = o.ssl_cert_reqs
            for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
                if getattr(o, name) is not None:
                    kwargs[name] = getattr(o, name)
        return kwargs

    def _config(self, **kwargs: Any) -> ConnectionPool:
        """A redis-py pool whose ``make_connection`` makes this broker's connections (the sentinel broker's ask
        the sentinels for the master: :mod:`bananas_redis.sentinel`)."""
        return ConnectionPool.from_url(self.url, **kwargs)

    def _sync_pool_config(self, **kwargs: Any) -> SyncConnectionPool:
        """:meth:`_config` for the blocking lane (``enqueue_sync``)."""
        return SyncConnectionPool.from_url(self.url, **kwargs)

    def _open(self) -> _Pool:
        if self._pool is None:
            # Commands: a lean bounded pool. Connections have no socket timeout of their own: every round trip
            # runs under one asyncio.timeout(socket_timeout) in _send, which disconnects on expiry.
            config = self._config(socket_timeout=None, **self._pool_kwargs())
            self._pool = _Pool(config.make_connection, self.options.pool_size)
            # Blocked fetches get their own lean pool, so a long BLPOP never holds a connection acks are waiting
            # for. Each BLPOP is bounded by asyncio.timeout() too.
            blocking = self._config(socket_timeout=None, **self._pool_kwargs())
            self._blocking = _Pool(blocking.make_connection, self.options.pool_size)
        return self._pool

    async def connect(self) -> None:
        """Open the pools, check the server with a ``PING`` (a missing or wrong password fails here with a clear
        :class:`~bananas.errors.BrokerUnavailable`: Redis drops an unauthenticated client that sends a 17 KB
        ``SCRIPT LOAD``), then load the scripts."""
        self._open()

        async def run() -> None:
            (pong,) = await self._send([("PING",)])
            if isinstance(pong, Exception):
                raise pong
            await self._load_scripts()

        await self._produce("connect", run)

    async def close(self) -> None:
        self._close_sync()
        pool, blocking = self._pool, self._blocking
        self._pool = self._blocking = None
        if pool is not None:
            await pool.close()
        if blocking is not None:
            await blocking.close()

    # -- error handling --------------------------------------------------------------------------------------
    @staticmethod
    def _describe(exc: BaseException) -> str:
        """The type and text of an error that is not a connection failure (those get a cause: :meth:`_unavailable`)."""
        name = type(exc).__name__
        if isinstance(exc, RedisError):
            name = "redis." + name
        text = " ".join(str(exc).split())
        return f"{name}: {text}" if text else name

    def _unavailable(self, what: str, exc: BaseException, cause: Cause | None = None) -> BrokerUnavailable:
        """The one-line error naming the URL and the cause (:mod:`bananas_redis.errors`): ``BrokerMisconfigured``
        when retrying cannot help (wrong password or ACL user, not a Redis server, TLS mismatch)."""
        o = self.options
        if cause is None:
            cause = cause_of(exc, self.url, connect_timeout=o.connect_timeout, reply_timeout=o.socket_timeout)
        return unavailable("redis broker", self.url, what, cause)

    def _fail(self, what: str, exc: BaseException, jobs: int = 0, cause: Cause | None = None) -> BrokerError:
        """The Bananas error for a failed producer-side call (never a redis-py exception type)."""
        if _is_oom(exc):
            lost = "" if not jobs else "; the job was not enqueued" if jobs == 1 else "; the jobs were not enqueued"
            return BrokerUnavailable(
                f"redis broker {redact_url(self.url)} is out of memory (maxmemory reached): {exc}{lost}"
            )
        if is_refusal(exc) or isinstance(exc, (*_RETRYABLE, TimeoutError)):
            return self._unavailable(what, exc, cause)
        return BrokerError(f"redis broker {redact_url(self.url)} failed during {what}: {self._describe(exc)}")

    async def _produce(self, what: str, call: Callable[[], Awaitable[T]], jobs: int = 0) -> T:
        """Run a producer-side call within ``options.timeout``; retried once at once (a stale pooled connection).
        Every failure is a :class:`~bananas.errors.BrokerError` (see :meth:`_fail`); an ambiguous connection
        failure is explained by a short probe of the server (:func:`bananas_redis.errors.explain_async`)."""
        try:
            async with asyncio.timeout(self.options.timeout):
                try:
                    return await call()
                except AuthenticationError:
                    raise
                except RedisConnectionError:
                    return await call()
        except (RedisError, OSError) as exc:
            o = self.options
            reply = min(o.timeout, o.socket_timeout)
            cause = await explain_async(exc, self.url, connect_timeout=o.connect_timeout, reply_timeout=reply)
            raise self._fail(what, exc, jobs, cause) from exc

    def _replied(self) -> None:
        """A round trip got a reply from Redis: an outage (see :meth:`_work`) is over."""
        if self._outage is not None:
            since, self._outage = self._outage, None
            log.bind(event="broker_connection_back").info("redis broker {}: connection back after {:.1f}s", self,
                                                          time.monotonic() - since)

    async def _work(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run a worker-side call, retrying lost connections with exponential backoff for ``retry_for`` s.

        The outage is broker-wide: the first failed call logs the loss once, and "connection back" is logged by
        the first round trip that gets a reply from Redis afterwards (:meth:`_replied`), not by a call that
        returned without any I/O."""
        o = self.options
        delay = o.retry_backoff
        start = time.monotonic()
        while True:
            try:
                return await call()
            except _PERMANENT as exc:  # (an AuthenticationError is a ConnectionError too: first)
                raise self._unavailable(what, exc) from exc
            except _RETRYABLE as exc:
                elapsed = time.monotonic() - start
                cause = cause_of(exc, self.url, connect_timeout=o.connect_timeout, reply_timeout=o.socket_timeout)
                if elapsed >= o.retry_for:
                    log.bind(event="broker_unavailable").error(
                        "redis broker {}: gave up on {} after {:.1f}s: {}", self, what, elapsed, cause.text
                    )
                    raise self._unavailable(what, exc, cause) from exc
                if self._outage is None:
                    self._outage = time.monotonic()
                    log.bind(event="broker_connection_lost").warning(
                        "redis broker {}: connection lost during {} ({}); retrying with backoff for up to {:.0f}s",
                        self,
                        what,
                        cause.text,
                        o.retry_for,
                    )
                await asyncio.sleep(min(delay * (0.5 + random.random() / 2), o.retry_for - elapsed))
                delay = min(delay * 2, o.retry_backoff_max)

    # -- round trips -----------------------------------------------------------------------------------------
    async def _send(self, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` in one round trip on a pooled connection; error replies come back as exceptions."""
        return await self._send_on(self._open(), commands)

    async def _send_on(self, pool: _Pool, commands: Sequence[Command]) -> list[Any]:
        """:meth:`_send` on a connection of ``pool`` (the cluster broker has one pool per node)."""
        conn = await pool.get()
        try:
            async with asyncio.timeout(self.options.socket_timeout):
                # Send in slices, so Redis runs the first scripts while the rest is still being encoded.
                for i in range(0, len(commands), _SEND_SLICE):
                    await conn.send_packed_command(_pack(commands[i : i + _SEND_SLICE]), check_health=False)
                out: list[Any] = []
                for _ in commands:
                    try:
                        out.append(await conn.read_response())
                    except ResponseError as exc:  # the reply was read whole: the connection stays in sync
                        out.append(exc)
            self._replied()
            return out
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            pool.put(conn)

    async def _load_scripts(self) -> None:
        for reply in await self._send([("SCRIPT", "LOAD", SCRIPT), ("SCRIPT", "LOAD", HOME_SCRIPT)]):
            if isinstance(reply, Exception):
                raise reply

    async def _send_loaded(self, commands: Sequence[Command]) -> list[Any]:
        """One round trip; on ``NOSCRIPT`` load the scripts and resend those commands; error replies come back as
        exceptions in the list."""
        results = await self._send(commands)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            await self._load_scripts()
            for i, r in zip(missing, await self._send([commands[i] for i in missing]), strict=True):
                results[i] = r
        return results

    async def _call(self, commands: Sequence[Command]) -> list[Any]:
        """:meth:`_send_loaded`, raising the first error reply."""
        return _raise_first(await self._send_loaded(commands))

    async def _call1(self, command: Command) -> Any:
        return (await self._call([command]))[0]

    def _keys(self, queue: str) -> QueueKeys:
        return queue_keys(self.options.prefix, queue)

    # -- queue registry and tokens ---------------------------------------------------------------------------
    # Multi-step operations shared by the async and the sync (``enqueue_sync``) paths are generators: each
    # ``yield`` hands a list of commands (one round trip) to a driver, which sends back the replies.
    def _register_steps(self, queues: Sequence[str]) -> Steps:
        """Give each queue a number in the registry (first come wins) and cache it."""
        (current,) = yield [("HMGET", self._registry, *queues)]
        missing = [q for q, n in zip(queues, current, strict=True) if n is None]
        for q, n in zip(queues, current, strict=True):
            if n is not None:
                self._numbers[q] = int(n)
        if not missing:
            return
        numbers = yield [("INCR", self._queue_seq)] * len(missing)
        if max(numbers) > _TOKEN_MASK:
            prefix = self.options.prefix
            raise BrokerUnavailable(f"redis broker: more than {_TOKEN_MASK} queues under prefix {prefix!r}")
        commands: list[Command] = [("HSETNX", self._registry, q, n) for q, n in zip(missing, numbers, strict=True)]
        *_, final = yield [*commands, ("HMGET", self._registry, *missing)]
        for q, n in zip(missing, final, strict=True):
            self._numbers[q] = int(n)

    async def _drive(self, steps: Generator[list[Command], list[Any], R]) -> R:
        """Run ``steps`` (each yield one round trip); return what the generator returns."""
        try:
            commands = next(steps)
            while True:
                commands = steps.send(await self._call(commands))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def _register(self, queues: Sequence[str]) -> None:
        await self._drive(self._register_steps(queues))

    async def _number(self, queue: str) -> int:
        number = self._numbers.get(queue)
        if number is None:
            await self._register([queue])
            number = self._numbers[queue]
        return number

    async def _load_numbers(self, what: str, queues: set[str]) -> None:
        """Cache the numbers of ``queues`` that are registered (settling never registers a queue)."""
        missing = sorted(q for q in queues if q not in self._numbers)
        if missing:
            current = await self._work(what, lambda: self._call1(("HMGET", self._registry, *missing)))
            for q, n in zip(missing, current, strict=True):
                if n is not None:
                    self._numbers[q] = int(n)

    def _local_token(self, delivery: Delivery) -> str:
        """The per-queue part of a token, or ``"-1"`` (never live) when it belongs to another queue."""
        token = delivery.token
        if not isinstance(token, int) or token < 0 or (token & _TOKEN_MASK) != self._numbers.get(delivery.queue):
            return "-1"
        return str(token >> _TOKEN_BITS)

    async def _queues(self) -> list[str]:
        return sorted(_str(q) for q in await self._call1(("HKEYS", self._registry)))

    # -- producer side ---------------------------------------------------------------------------------------
    async def enqueue(self, envelopes: Sequence[Envelope]) -> list[bool]:
        return await self.enqueue_with_hints(envelopes)

    async def enqueue_with_hints(
        self, envelopes: Sequence[Envelope], *, generated_ids: Collection[str] = ()
    ) -> list[bool]:
        """:meth:`enqueue`; ids in ``generated_ids`` were made by the kernel for this call (fresh uuid4s), so they
        need no cross-queue home claim (optional capability, see :mod:`bananas.broker`). Returns a flag per
        envelope: ``False`` where a live copy of the id existed (nothing stored)."""
        if not envelopes:
            return []
        envs = _first_per_id(envelopes)
        try:
            stored = await self._produce(  # a fresh run of the steps per attempt (_produce retries once)
                "enqueue", lambda: rounds.drive(self, self._enqueue_steps(envs, generated_ids)), len(envs)
            )
        except rounds.PartialEnqueue as partial:
            raise rounds.partial_error(self, partial, envelopes) from partial.error
        return _flags(envelopes, stored)

    def enqueue_sync(self, envelopes: Sequence[Envelope], *, generated_ids: Collection[str] = ()) -> list[bool]:
        """Blocking :meth:`enqueue_with_hints` on this broker's own synchronous connections (optional capability:
        ``app.enqueue`` / ``app.enqueue_many`` call it instead of running a coroutine on their private loop).

        Thread-safe; same script, same commands, one round trip in the common case. Fails with
        :class:`~bananas.errors.BrokerUnavailable` when a connect or a reply takes longer than ``options.timeout``
        (each socket operation is bounded by it), after one immediate retry on a stale pooled connection.
        """
        if not envelopes:
            return []
        envs = _first_per_id(envelopes)
        try:
            try:
                stored = rounds.drive_sync(self, self._enqueue_steps(envs, generated_ids))
            except AuthenticationError:
                raise
            except RedisConnectionError:  # a stale pooled connection: once more on a fresh one
                stored = rounds.drive_sync(self, self._enqueue_steps(envs, generated_ids))
        except rounds.PartialEnqueue as partial:
            raise rounds.partial_error(self, partial, envelopes) from partial.error
        except (RedisError, OSError) as exc:
            o = self.options
            cause = explain(exc, self.url, connect_timeout=min(o.connect_timeout, o.timeout), reply_timeout=o.timeout)
            raise self._fail("enqueue", exc, len(envs), cause) from exc
        return _flags(envelopes, stored)

    def _home_ttl(self, env: Envelope, now: float) -> int:
        o = self.options
        wait = 0.0 if env.eta is None else max(0.0, env.eta - now)
        return _ttl(max(o.completed_ttl, o.dead_ttl) + _HOME_HORIZON + wait)

    def _home_calls(
        self, mode: str, envelopes: Sequence[Envelope], now: float
    ) -> tuple[list[Command], list[list[int]]]:
        """``home.lua`` calls, one per id bucket, and the envelope indexes each call covers."""
        buckets: dict[int, tuple[list[str], list[Any], list[int]]] = {}
        for i, env in enumerate(envelopes):
            bucket, key = home_key(self.options.prefix, env.id)
            keys, args, index = buckets.setdefault(bucket, ([], [mode], []))
            keys.append(key)
            args += (env.queue, self._home_ttl(env, now))
            index.append(i)
        calls = [("EVALSHA", _HOME_SHA, len(keys), *keys, *args) for keys, args, _ in buckets.values()]
        return calls, [index for _, _, index in buckets.values()]

    def _enqueue_steps(
        self, envelopes: list[Envelope], generated_ids: Collection[str]
    ) -> Generator[list[Command], list[Any], dict[str, bool]]:
        nowf = self.options.clock()
        now = _num(nowf)
        delayed = False
        if len(envelopes) == 1:  # app.enqueue: one job, one queue
            env = envelopes[0]
            groups: dict[str, list[Envelope]] = {env.queue: envelopes}
            delayed = env.eta is not None and env.eta > nowf
        else:
            groups = {}
            for env in envelopes:
                groups.setdefault(env.queue, []).append(env)
                if env.eta is not None and env.eta > nowf:
                    delayed = True
        commands: list[Command] = []
        chunks: list[Sequence[Envelope]] = []
        for queue, envs in groups.items():
            keys = self._keys(queue)
            if len(envs) <= _ENQUEUE_CHUNK:
                commands.append(_enqueue_command(keys, now, envs))
                chunks.append(envs)
                continue
            for i in range(0, len(envs), _ENQUEUE_CHUNK):
                chunk = envs[i : i + _ENQUEUE_CHUNK]
                commands.append(_enqueue_command(keys, now, chunk))
                chunks.append(chunk)
        # The id's home queue is claimed in the same round trip; only an id that already lives in another queue
        # costs more round trips (vacate there, then withdraw here or move the home). Ids the kernel generated for
        # this call are fresh uuid4s: no other copy can exist, so they claim no home (half of a batch's Redis
        # work). An explicit id shaped like a generated one may be a re-enqueue of such a job: see _adopt_steps.
        if not generated_ids:
            claiming = envelopes
        elif len(generated_ids) >= len(envelopes) and all(env.id in generated_ids for env in envelopes):
            claiming = []
        else:
            claiming = [env for env in envelopes if env.id not in generated_ids]
        if claiming and self.options.unique_across_queues:
            home_calls, home_index = self._home_calls("claim", claiming, nowf)
        else:
            home_calls, home_index = [], []
        # After the scripts, in the same round trip: a token telling idle schedulers a delayed job exists.
        due = self._due_token() if delayed else []
        if delayed:
            self._due_dirty = True
        # Error replies come back in place (Tolerant): a failed call loses its own jobs only (enqueue_rounds).
        results = yield rounds.Tolerant([*commands, *home_calls, *due])
        stored, lost, error = rounds.outcome(chunks, results)
        tail = results[len(commands) :]
        failed = rounds.first_error(tail)
        if failed is not None:  # a home claim or the due token failed: the calls that replied stored their jobs
            raise rounds.PartialEnqueue(stored, lost, error or failed)
        try:
            yield from self._enqueue_bookkeeping(groups, claiming, stored, tail, home_index, nowf)
        except ResponseError as exc:
            raise rounds.PartialEnqueue(stored, lost, error or exc) from exc
        if error is not None:
            raise rounds.PartialEnqueue(stored, lost, error)
        return stored

    def _enqueue_bookkeeping(
        self, groups: dict[str, list[Envelope]], claiming: Sequence[Envelope], stored: dict[str, bool],
        home_replies: Sequence[Any], home_index: list[list[int]], nowf: float,
    ) -> Steps:
        """The rest of an enqueue once its scripts replied: ids homed in another queue, new queues' numbers."""
        if home_replies:
            homes: list[str] = [""] * len(claiming)
            for index, reply in zip(home_index, home_replies[: len(home_index)], strict=True):
                for i, home in zip(index, reply, strict=True):
                    homes[i] = _str(home)
            moving = [(env, home) for env, home in zip(claiming, homes, strict=True) if home and home != env.queue]
            adopted = [
                env
                for env, home in zip(claiming, homes, strict=True)
                if not home and stored.get(env.id) and _GENERATED_ID.fullmatch(env.id)
            ]
            if adopted:
                moving += yield from self._adopt_steps(adopted)
            if moving:
                yield from self._resolve_steps(moving, stored, nowf, {env.id for env in adopted})
        known = self._numbers
        new = sorted(q for q, envs in groups.items() if q not in known and any(stored.get(e.id) for e in envs))
        if new:
            yield from self._register_steps(new)

    def _adopt_steps(self, adopted: list[Envelope]) -> Generator[list[Command], list[Any], list[tuple[Envelope, str]]]:
        """Explicit ids shaped like generated ones whose home claim was new: the id may be a job enqueued earlier
        with a generated id (which claims no home) and still live in another queue. Look in every other known
        queue; a live copy there becomes that id's home (the caller then withdraws the new copy)."""
        (names,) = yield [("HKEYS", self._registry)]
        queues = sorted(_str(q) for q in names)
        checks: list[tuple[Envelope, str]] = [(env, q) for env in adopted for q in queues if q != env.queue]
        if not checks:
            return []
        replies = yield [("HGET", self._keys(q).job(env.id), "state") for env, q in checks]
        live: list[tuple[Envelope, str]] = []
        seen: set[str] = set()
        for (env, q), state in zip(checks, replies, strict=True):
            if state is not None and _str(state) in ("ready", "scheduled", "running") and env.id not in seen:
                seen.add(env.id)
                live.append((env, q))
        return live

    def _resolve_steps(
        self, moving: list[tuple[Envelope, str]], stored: dict[str, bool], now: float, adopted: set[str]
    ) -> Steps:
        """Enforce one live copy per id across queues for ids whose home is another queue."""
        by_home: dict[str, list[Envelope]] = {}
        for env, home in moving:
            by_home.setdefault(home, []).append(env)
        homes = list(by_home)
        replies = yield [_dispatch(self._keys(h), "vacate", _num(now), *(env.id for env in by_home[h])) for h in homes]
        withdraw: dict[str, list[str]] = {}
        rehome: list[Envelope] = []
        keep: list[tuple[Envelope, str]] = []  # the live copy stays where it is: its queue is the id's home
        for home, reply in zip(homes, replies, strict=True):
            for env, live in zip(by_home[home], reply, strict=True):
                if live == 1:
                    if stored.get(env.id):
                        withdraw.setdefault(env.queue, []).append(env.id)
                    stored[env.id] = False
                    if env.id in adopted:
                        keep.append((env, home))
                elif stored.get(env.id):
                    rehome.append(env)
        queues = list(withdraw)
        commands = [_dispatch(self._keys(q), "withdraw", _num(now), *withdraw[q]) for q in queues]
        commands += self._home_calls("set", rehome, now)[0]
        # An id adopted by a new claim (see _adopt_steps) points at the new queue: point it at the live copy.
        commands += self._home_calls("set", [attrs.evolve(env, queue=home) for env, home in keep], now)[0]
        if not commands:
            return
        results = yield commands
        for q, reply in zip(queues, results, strict=False):
            for job_id, done in zip(withdraw[q], reply, strict=True):
                if done != 1:
                    log.warning(
                        "redis broker: job {} was enqueued to {!r} while live in another queue and was taken before "
                        "it could be withdrawn; two copies run",
                        job_id,
                        q,
                    )

    # -- synchronous lane (enqueue_sync) ---------------------------------------------------------------------
    def _sync_conn(self) -> Any:
        """A connected connection of the blocking lane; at most ``pool_size`` exist at once (callers wait for a free
        one up to ``options.timeout``). Connections are made from the config pool's class and arguments, never by
        ``make_connection()``, whose counter never gets discarded connections back (after ``pool_size`` failures
        during an outage it would refuse every later call with "Too many connections")."""
        o = self.options
        if not self._sync_slots.acquire(timeout=o.timeout):
            raise BrokerUnavailable(
                f"redis broker {redact_url(self.url)} unavailable during enqueue: all {o.pool_size} connections of "
                f"the blocking lane stayed busy for {o.timeout:g}s"
            )
        try:
            with self._sync_lock:
                if self._sync_idle:
                    return self._sync_idle.pop()
                if self._sync_config is None:
                    kwargs = self._pool_kwargs()
                    kwargs["retry"] = SyncRetry(NoBackoff(), 0)
                    kwargs["socket_connect_timeout"] = min(o.connect_timeout, o.timeout)
                    self._sync_config = self._sync_pool_config(socket_timeout=o.timeout, **kwargs)
                config = self._sync_config
                conn = config.connection_class(**config.connection_kwargs)
                self._sync_all.add(conn)
            try:
                # A cheap first command: an unauthenticated client gets a clear NOAUTH here, where a script call
                # (more than 10 arguments, or 17 KB of SCRIPT LOAD) would make Redis drop the connection.
                conn.connect()
                conn.send_command("PING", check_health=False)
                conn.read_response()
                if self._KIND == "single":  # Sentinel follows its master on redis-py's connections
                    lane = fast_lane(conn, protocol=o.protocol, spin_us=o.reply_spin_us, timeout=o.timeout)
                    if lane is not None:
                        with self._sync_lock:
                            self._sync_fast[conn] = lane
            except BaseException:
                self._drop_sync(conn)
                raise
            return conn
        except BaseException:
            self._sync_slots.release()
            raise

    def _drop_sync(self, conn: Any) -> None:
        conn.disconnect()
        with self._sync_lock:
            self._sync_all.discard(conn)
            self._sync_fast.pop(conn, None)

    def _send_sync(self, commands: Sequence[Command]) -> list[Any]:
        """One round trip on a connection of the blocking lane: :class:`~bananas_redis.fastconn.FastLane` where it
        applies (plain TCP or Unix socket, RESP2), else redis-py's connection. Error replies come back as
        exceptions in the list."""
        conn = self._sync_conn()
        try:
            try:
                lane = self._sync_fast.get(conn)
                if lane is not None:
                    out = lane.round_trip(_pack(commands), len(commands))
                else:
                    conn.send_packed_command([_pack(commands)], check_health=False)
                    out = []
                    for _ in commands:
                        try:
                            out.append(conn.read_response())
                        except ResponseError as exc:
                            out.append(exc)
            except BaseException:
                self._drop_sync(conn)
                raise
            self._replied()
            with self._sync_lock:
                if conn in self._sync_all:  # not closed meanwhile
                    self._sync_idle.append(conn)
                    conn = None
            if conn is not None:
                conn.disconnect()
            return out
        finally:
            self._sync_slots.release()

    def _send_loaded_sync(self, commands: Sequence[Command]) -> list[Any]:
        """:meth:`_send_loaded` on the blocking lane."""
        results = self._send_sync(commands)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            _raise_first(self._send_sync([("SCRIPT", "LOAD", SCRIPT), ("SCRIPT", "LOAD", HOME_SCRIPT)]))
            for i, r in zip(missing, self._send_sync([commands[i] for i in missing]), strict=True):
                results[i] = r
        return results

    def _call_sync(self, commands: Sequence[Command]) -> list[Any]:
        return _raise_first(self._send_loaded_sync(commands))

    def _drive_sync(self, steps: Generator[list[Command], list[Any], R]) -> R:
        try:
            commands = next(steps)
            while True:
                commands = steps.send(self._call_sync(commands))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def _close_sync(self) -> None:
        with self._sync_lock:
            conns, self._sync_all, self._sync_idle = self._sync_all, set(), []
            self._sync_fast = {}
        for conn in conns:
            conn.disconnect()

    def _due_token(self) -> list[Command]:
        """Commands that leave a wake-up token (at most 4) for schedulers blocked in an idle fetch."""
        return [("RPUSH", self._due_key, "1"), ("LTRIM", self._due_key, -4, -1)]

    # -- worker side -----------------------------------------------------------------------------------------
    def _order(self, queues: tuple[str, ...]) -> tuple[str, ...]:
        weights = self.options.priority_weights
        if not weights or len(queues) < 2:
            return queues

        def weight(name: str) -> float:
            return weights.get(name) or weights.get(name.rsplit(".", 1)[-1]) or 1.0

        # Weighted random permutation (Efraimidis-Spirakis): P(first) is proportional to the weight.
        return tuple(sorted(queues, key=lambda q: random.random() ** (1.0 / weight(q)), reverse=True))

    async def _take(
        self,
        queues: tuple[str, ...],
        limit: int,
        head: Sequence[Command] = (),
        job_types: tuple[str, ...] | None = None,
        woke: str | None = None,
    ) -> tuple[list[Any], list[Delivery]]:
        """Lease up to ``limit`` jobs, queue by queue in priority order: on one server in one round trip (the takes
        share the limit through a counter key, see ``lua/dispatch.lua``), on a cluster one round trip per queue
        looked at.
        ``head`` commands go first in the first round trip; their replies come back first. ``job_types``: only jobs
        of these types (``None``: every type); ``woke``: the type whose wake-up list woke this fetch (the script
        tops that list up again, see ``lua/dispatch.lua``).

        Ready entries the script did not hand out (malformed records it dead-lettered, stale ids it dropped: see
        the header of ``lua/dispatch.lua``) are logged, one warning per entry."""
        o = self.options
        out: list[Delivery] = []
        head_replies: list[Any] = []
        which: tuple[str, ...] = ("*", "") if job_types is None else ("=", "", *job_types)
        if woke is not None:
            which = (which[0], "+" + woke, *which[2:])
        order = self._order(queues)
        if self._one_server and len(order) > 1:
            # One round trip for every queue: the takes share the limit through a counter (see lua/dispatch.lua).
            self._budgets += 1
            budget = f"{o.prefix}:take-budget:{self._instance}:{self._budgets}"
            keys = [self._keys(queue) for queue in order]

            def takes() -> list[Command]:
                now = o.clock()  # built at each attempt (see take below)
                args = (_num(now), _num(now + o.lease), limit, _ttl(o.dead_ttl), _num(now + o.dead_ttl), *which)
                return [*head, ("SET", budget, 0, "PX", 60_000),
                        *(_dispatch_shared(qk, budget, "take", *args) for qk in keys), ("DEL", budget)]

            replies = await self._work("fetch", lambda: self._call(takes()))
            head_replies = replies[: len(head)]
            for queue, reply in zip(order, replies[len(head) + 1 : -1], strict=True):
                await self._handed(queue, reply, out)
            return head_replies, out
        for queue in order:
            qk = self._keys(queue)
            want = limit - len(out)

            def take(qk: QueueKeys = qk, want: int = want) -> Command:
                # Built at each attempt: a fetch retried through an outage longer than the lease must not hand out
                # leases that expired before Redis even saw the call (they would be reaped and run twice).
                now = o.clock()
                return _dispatch(
                    qk, "take", _num(now), _num(now + o.lease), want, _ttl(o.dead_ttl), _num(now + o.dead_ttl), *which
                )

            if head:
                first = list(head)
                *head_replies, reply = await self._work("fetch", lambda first=first: self._call([*first, take()]))
                head = ()
            else:
                reply = await self._work("fetch", lambda: self._call1(take()))
            await self._handed(queue, reply, out)
            if len(out) >= limit:
                break
        return head_replies, out

    async def _handed(self, queue: str, reply: Any, out: list[Delivery]) -> None:
        """The deliveries of one take's ``reply`` appended to ``out``; its notes logged, one warning per entry."""
        handed, notes = reply
        for i in range(0, len(notes), 2):
            log.warning(
                "redis broker {}: ready entry {} of queue {!r} was not handed out: {}",
                self,
                _str(notes[i]),
                queue,
                _str(notes[i + 1]),
            )
        if handed:
            number = self._numbers.get(queue)
            if number is None:
                number = await self._work("fetch", lambda queue=queue: self._number(queue))
            for i in range(0, len(handed), 5):
                token = (int(handed[i + 2]) << _TOKEN_BITS) | number
                out.append(
                    Delivery(_str(handed[i]), queue, handed[i + 1], token, int(handed[i + 3]), int(handed[i + 4]))
                )

    def _wait_keys(self, queues: tuple[str, ...], job_types: tuple[str, ...] | None) -> dict[str, str | None]:
        """The wake-up lists a fetch of ``job_types`` (``None``: every type) blocks on, each with the type it
        stands for (``None`` for the lists of every type: the queue's ``wake`` list and the 0.1 ``signal`` list)."""
        keys: dict[str, str | None] = {}
        for q in queues:
            qk = self._keys(q)
            if job_types is None:
                keys[qk.wake] = None
                keys[qk.signal] = None
                continue
            for t in job_types:
                keys[qk.type_signal(t)] = t
            if "" in job_types:
                keys[qk.signal] = None
        return keys

    async def _wait(
        self, queues: tuple[str, ...], deadline: float, job_types: tuple[str, ...] | None = None,
        woke_at: list[int] | None = None,
    ) -> bool | str | None:
        """Block until a signal of one of ``queues`` (for ``job_types``) arrives (``True``, or the job type whose
        list it came from) or ``deadline`` (loop time) passes (``None``). A scheduling broker also listens for due
        tokens: one marks the schedule dirty (``False``). ``woke_at`` gets the index in ``queues`` of the queue
        whose signal arrived."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining < _MIN_BLOCK:
            return None
        typed = self._wait_keys(queues, job_types)
        keys = list(typed)
        watch = self._scheduler
        if watch:
            keys.append(self._due_key)
            self._watching += 1
        try:
            reply = await self._blpop(keys, remaining)
        finally:
            if watch:
                self._watching -= 1
        if reply is None:
            return None
        key = _str(reply[0])
        if watch and key == self._due_key:
            self._due_dirty = True
            return False
        # BLPOP returns the first non-empty list in the order of ``keys`` (the queues' priority order), so every
        # queue before the one that woke had no ready job of these types an instant ago: the take starts there.
        if woke_at is not None:
            woke_at[0] = next((i for i, q in enumerate(queues) if key.startswith(self._keys(q).tag)), 0)
        woke = typed.get(key)
        return True if woke is None else woke

    async def _blpop(self, keys: Sequence[str], remaining: float) -> Any:
        """``BLPOP keys`` for up to ``remaining`` seconds on the blocking pool: the reply (``None``: timed out).
        On a Redis Cluster keys of several slots need one ``BLPOP`` each (:mod:`bananas_redis.cluster`)."""
        self._open()
        pool = self._blocking
        assert pool is not None
        return await self._blpop_on(pool, keys, remaining)

    async def _blpop_on(self, pool: _Pool, keys: Sequence[str], remaining: float) -> Any:
        conn = await pool.get()
        try:
            async with asyncio.timeout(remaining + self.options.socket_timeout):
                block = max(round(remaining, 3), _MIN_BLOCK)
                await conn.send_packed_command(_pack([("BLPOP", *keys, block)]), check_health=False)
                reply = await conn.read_response()
            self._replied()
        except BaseException:  # cancelled or timed out mid-BLPOP: the connection is out of sync
            await conn.disconnect()
            raise
        finally:
            pool.put(conn)
        return reply

    def _type_args(self, job_types: Collection[str] | None) -> tuple[str, ...] | None:
        """``job_types`` as the sorted tuple the scripts get (cached for the frozensets a worker passes each time)."""
        if job_types is None:
            return None
        if isinstance(job_types, frozenset):
            cached = self._types.get(job_types)
            if cached is None:
                cached = self._types[job_types] = tuple(sorted(job_types))
            return cached
        return tuple(sorted(set(job_types)))

    async def fetch(
        self, queues: Sequence[str], limit: int, timeout: float, *, job_types: Collection[str] | None = None
    ) -> list[Delivery]:
        """Lease up to ``limit`` ready jobs from ``queues``; only of ``job_types`` when given (``None``: every type,
        see :mod:`bananas.broker_types`). A typed fetch never looks at, pops or reorders jobs of other types."""
        if limit <= 0 or not queues:
            return []
        names = tuple(queues)
        types = self._type_args(job_types)
        if types == ():
            return []
        hot = (names, types)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        # A fetcher whose last call came back empty trusts the signal lists and blocks first: one command per
        # idle fetch. After a hand-out it takes first, which is one round trip while work keeps coming.
        take_first: bool | str = timeout <= 0 or self._hot.get(hot, True)
        woke_at = [0]  # after a wake-up: the index of the queue that signalled (the take starts there)
        while True:
            if take_first:
                woke = take_first if isinstance(take_first, str) else None
                start, woke_at[0] = woke_at[0], 0
                order = names[start:] if start and not self.options.priority_weights else names
                _, got = await self._take(order, limit, (), types, woke)
                if got:
                    self._hot[hot] = True
                    return got
            take_first = True
            if deadline - loop.time() < _MIN_BLOCK:
                if timeout > 0:
                    self._hot[hot] = False
                return []
            signal = await self._work("fetch", lambda: self._wait(names, deadline, types, woke_at))
            if signal is None:
                self._hot[hot] = False
                return []
            take_first = signal  # a due token is no work for this fetch: block again

    def _settle_commands(
        self, what: str, deliveries: Sequence[Delivery], head: Sequence[Any]
    ) -> tuple[list[Command], list[list[int]]]:
        """One dispatcher call per queue settling its ``deliveries``, and the delivery indexes each covers."""
        index: dict[str, list[int]] = {}
        pairs: dict[str, list[Any]] = {}
        for i, d in enumerate(deliveries):
            index.setdefault(d.queue, []).append(i)
            pairs.setdefault(d.queue, []).extend((d.id, self._local_token(d)))
        now = _num(self.options.clock())
        commands = [_dispatch(self._keys(q), what, now, *head, *pairs[q]) for q in index]
        return commands, list(index.values())

    @staticmethod
    def _settled(count: int, index: list[list[int]], replies: Sequence[Any]) -> list[bool]:
        out = [False] * count
        for positions, reply in zip(index, replies, strict=True):
            for i, flag in zip(positions, reply, strict=True):
                out[i] = flag == 1
        return out

    async def _settle_many(self, what: str, deliveries: Sequence[Delivery], head: Sequence[Any]) -> list[bool]:
        if not deliveries:
            return []
        await self._load_numbers(what, {d.queue for d in deliveries})
        commands, index = self._settle_commands(what, deliveries, head)
        results = await self._work(what, lambda: self._call(commands))
        return self._settled(len(deliveries), index, results)

    def _ack_head(self) -> list[Any]:
        o = self.options
        return [_ttl(o.completed_ttl), _num(o.clock() + o.completed_ttl)]

    async def ack_and_fetch(
        self,
        deliveries: Sequence[Delivery],
        queues: Sequence[str],
        limit: int,
        *,
        job_types: Collection[str] | None = None,
    ) -> tuple[list[bool], list[Delivery]]:
        """:meth:`ack` ``deliveries``, then lease up to ``limit`` ready jobs from ``queues`` without blocking, in
        one round trip (optional capability, see :mod:`bananas.broker`): the acks and the take of the first queue
        are pipelined; lower-priority queues are looked at only if the first one did not fill ``limit``, as in
        :meth:`fetch`. Returns the ack flags and the deliveries. When nothing was ready, the next :meth:`fetch` on
        these queues blocks straight away (one ``BLPOP``), as after an empty fetch."""
        if not deliveries:
            return [], await self.fetch(queues, limit, 0.0, job_types=job_types) if limit > 0 and queues else []
        await self._load_numbers("ack", {d.queue for d in deliveries})
        commands, index = self._settle_commands("ack", deliveries, self._ack_head())
        types = self._type_args(job_types)
        staged, self._staged = self._staged, []
        if limit <= 0 or not queues or types == ():
            results = await self._work("ack", lambda: self._call([*staged, *commands]))
            return self._settled(len(deliveries), index, results[len(staged):]), []
        names = tuple(queues)
        replies, got = await self._take(names, limit, [*staged, *commands], types)
        self._hot[(names, types)] = bool(got)
        return self._settled(len(deliveries), index, replies[len(staged):]), got

    def stage(self, command: Command) -> None:
        """Send ``command`` (a result store of :class:`~bananas_redis.results.RedisResultBackend`) in the same round
        trip as, and before, this broker's next ``ack`` or ``ack_and_fetch``: a job's result is written before its
        ack, with no round trip of its own. If that call fails, both are lost together and the job runs again."""
        self._staged.append(command)

    def staged_batch(self, kind: Callable[[], _B]) -> _B:
        """The last staged command if it is a ``kind`` still waiting for the next ack, else a new ``kind()``, staged:
        a command that grows by one job at a time (the result stores of
        :class:`~bananas_redis.results.RedisResultBackend`: one script call for every result of the round trip)."""
        if self._staged and type(self._staged[-1]) is kind:
            return self._staged[-1]  # type: ignore[return-value]
        batch = kind()
        self._staged.append(batch)  # type: ignore[arg-type]
        return batch

    async def renew(self, deliveries: Sequence[Delivery]) -> list[bool]:
        return await self._settle_many("renew", deliveries, [_num(self.options.clock() + self.options.lease)])

    async def ack(self, deliveries: Sequence[Delivery]) -> list[bool]:
        if not self._staged or not deliveries:
            return await self._settle_many("ack", deliveries, self._ack_head())
        await self._load_numbers("ack", {d.queue for d in deliveries})
        commands, index = self._settle_commands("ack", deliveries, self._ack_head())
        staged, self._staged = self._staged, []
        results = await self._work("ack", lambda: self._call([*staged, *commands]))
        return self._settled(len(deliveries), index, results[len(staged):])

    async def release(self, deliveries: Sequence[Delivery]) -> list[bool]:
        return await self._settle_many("release", deliveries, [])

    async def retry(self, delivery: Delivery, *, body: bytes, at: float) -> bool:
        if body is None:  # never float(None) in _pack: store an empty body
            body = b""
        await self._load_numbers("retry", {delivery.queue})
        now = _num(self.options.clock())
        command = _dispatch(
            self._keys(delivery.queue), "retry", now, delivery.id, self._local_token(delivery), body, _num(at)
        )
        self._due_dirty = True
        replies = await self._work("retry", lambda: self._call([command, *self._due_token()]))
        return replies[0] == 1

    async def dead_letter(self, delivery: Delivery, *, body: bytes, reason: str) -> bool:
        if body is None:  # never float(None) in _pack: store an empty body
            body = b""
        o = self.options
        await self._load_numbers("dead_letter", {delivery.queue})
        now = o.clock()
        token = self._local_token(delivery)
        command = _dispatch(
            self._keys(delivery.queue),
            "dead",
            _num(now),
            delivery.id,
            token,
            body,
            reason,
            _ttl(o.dead_ttl),
            _num(now + o.dead_ttl),
        )
        return await self._work("dead_letter", lambda: self._call1(command)) == 1

    # -- maintenance -----------------------------------------------------------------------------------------
    async def move_due(self, limit: int = 1000) -> int:
        """Move due jobs; lazily: an idle scheduler sends no command until something may be due.

        A full pass (every queue) learns the earliest eta still scheduled. Afterwards a call returns 0 without I/O
        while (1) that eta has not come, (2) one of this broker's fetches is blocked in ``BLPOP`` on the due-signal
        list too, (3) no due token arrived since the pass and (4) the last full pass is less than 30 s old. Every
        delayed enqueue and every retry pushes a token (in its own round trip, after its script), so a new
        scheduled job either wakes a blocked scheduler or is still in the list when one next blocks. A token taken by
        another scheduler is that one's work; if it dies first, rule (4) bounds the delay.
        """
        if limit <= 0:
            return 0
        self._scheduler = True
        now = self.options.clock()
        if (
            not self._due_dirty
            and self._watching
            and now < self._due_at
            and time.monotonic() - self._due_checked < _DUE_SAFETY
        ):
            return 0
        self._due_dirty = False  # a token popped during this pass sets it again
        started = time.monotonic()
        queues = await self._work("move_due", self._queues)
        moved = 0
        due_at = _INF
        for queue in queues:  # one round trip per queue and batch; the limit is shared, so they run in turn
            if moved >= limit:
                due_at = 0.0  # not every queue was looked at: the next call does a full pass
                break
            now = self.options.clock()
            command = _dispatch(
                self._keys(queue), "move_due", _num(now), limit - moved, _num(now - self.options.dead_ttl)
            )
            count, nxt = await self._work("move_due", lambda command=command: self._call1(command))
            moved += int(count)
            if nxt:
                due_at = min(due_at, float(nxt))
        self._due_at, self._due_checked = due_at, started
        return moved

    async def reap(self) -> int:
        """Recover expired leases; lazily: a queue is only looked at once one of its leases may have expired.

        Each reap of a queue learns its earliest lease expiry ``e``; the queue is skipped until the clock reaches
        ``min(e, reap time + options.lease)`` (a lease taken later by a worker with this lease length cannot expire
        sooner) or ``options.lease`` seconds of monotonic time have passed (a clock step backwards). The queue list
        (``HKEYS``) is refreshed on the same rule. So an idle worker reaps each queue about once per lease instead of
        once per ``reaper_interval``; an expired lease is still recovered within ``reaper_interval`` of its expiry,
        and a wake-up token lost with a crashed fetcher is restored within ``lease + reaper_interval``. (A job leased
        by a worker configured with a *shorter* lease may wait up to this broker's ``lease`` for this reaper; that
        worker's own peers reap it on their schedule.)
        """
        o = self.options
        mono, clock = time.monotonic(), o.clock()
        stale = self._reap_list is None or clock >= self._reap_list[1] or mono >= self._reap_list[2]
        if stale:
            names = await self._work("reap", self._queues)
            self._reap_list = (names, clock + o.lease, mono + o.lease)
        else:
            assert self._reap_list is not None
            names = self._reap_list[0]
        known = set(names)
        names = names + sorted(q for q in self._numbers if q not in known)  # queues this broker used meanwhile
        pending = [q for q in names if clock >= self._reap_due.get(q, (0.0, 0.0))[0]
                   or mono >= self._reap_due.get(q, (0.0, 0.0))[1]]
        recovered = 0
        while pending:  # every queue in one round trip; again for queues with more than a batch expired
            now = o.clock()
            mono = time.monotonic()
            args = (_num(now), o.max_crash_deliveries, _ttl(o.dead_ttl), _num(now + o.dead_ttl), _REAP_BATCH)
            commands = [_dispatch(self._keys(q), "reap", *args) for q in pending]
            replies = await self._work("reap", lambda commands=commands: self._call(commands))
            again = []
            for q, (count, nxt) in zip(pending, replies, strict=True):
                recovered += int(count)
                if int(count) >= _REAP_BATCH:
                    again.append(q)
                due = now + o.lease if not nxt else min(float(nxt), now + o.lease)
                self._reap_due[q] = (due, mono + o.lease)
            pending = again
        return recovered

    # -- inspection ------------------------------------------------------------------------------------------
    async def depths(self, queues: Sequence[str] | None = None) -> dict[str, QueueDepth]:
        async def run() -> dict[str, QueueDepth]:
            names = await self._queues() if queues is None else list(queues)
            if not names:
                return {}
            cutoff = "(" + _num(self.options.clock() - self.options.dead_ttl)
            commands: list[Command] = []
            for name in names:
                qk = self._keys(name)
                commands += [
                    ("LLEN", qk.ready),
                    ("GET", qk.count),
                    ("ZCARD", qk.scheduled),
                    ("ZCARD", qk.leases),
                    ("ZCOUNT", qk.dead, cutoff, "+inf"),
                ]
            r = [int(n or 0) for n in await self._call(commands)]
            return {
                name: QueueDepth(r[5 * i] + r[5 * i + 1], *r[5 * i + 2 : 5 * i + 5]) for i, name in enumerate(names)
            }

        return await self._produce("depths", run)

    async def ready_types(self, queue: str) -> list[ReadyType]:
        """Optional capability ``ready_types``: the job types with ready jobs in ``queue``, oldest first, each with
        its count and when its oldest job became ready (the 0.1 list's jobs count as the type ``""``)."""

        async def run() -> list[ReadyType]:
            qk = self._keys(queue)
            names, legacy, legacy_head = await self._call(
                [("ZRANGE", qk.types, 0, -1), ("LLEN", qk.ready), ("LINDEX", qk.ready, 0)]
            )
            types = [_str(t) for t in names]
            heads = await self._call([c for t in types for c in (("ZCARD", qk.type_ready(t)),
                                                                  ("ZRANGE", qk.type_ready(t), 0, 0))]) if types else []
            counts = {t: int(heads[2 * i]) for i, t in enumerate(types)}
            firsts = {t: _str(heads[2 * i + 1][0]) for i, t in enumerate(types) if heads[2 * i + 1]}
            if legacy:
                counts[""] = counts.get("", 0) + int(legacy)
                firsts.setdefault("", _str(legacy_head))
            order = list(firsts)
            stamps = await self._call([("HGET", qk.job(firsts[t]), "updated_at") for t in order]) if order else []
            since = {t: float(v) if v is not None else None for t, v in zip(order, stamps, strict=True)}
            found = [ReadyType(t, n, since.get(t)) for t, n in counts.items() if n > 0]
            return sorted(found, key=lambda r: (r.oldest_at if r.oldest_at is not None else _INF, r.job_type))

        return await self._produce("ready_types", run)

    async def known_queues(self) -> list[str]:
        return await self._produce("known_queues", self._queues)

    async def lookup(self, job_id: str) -> JobRecord | None:
        fields = ("state", "body", "deliveries", "crashes", "reason", "updated_at", "expires_at", "started_at")

        async def run() -> JobRecord | None:
            names = await self._queues()
            if not names:
                return None
            rows = await self._call([("HMGET", self._keys(name).job(job_id), *fields) for name in names])
            now = self.options.clock()
            best: JobRecord | None = None
            for name, row in zip(names, rows, strict=True):
                state, body, deliveries, crashes, reason, updated_at, expires_at, started_at = row
                if state is None or (expires_at is not None and float(expires_at) <= now):
                    continue
                record = JobRecord(
                    id=job_id,
                    queue=name,
                    state=_str(state),
                    body=body or b"",
                    deliveries=int(deliveries or 0),
                    crashes=int(crashes or 0),
                    reason=_str(reason) if reason else None,
                    updated_at=float(updated_at or 0.0),
                    started_at=float(started_at) if started_at else None,
                )
                if best is None or record.updated_at > best.updated_at:
                    best = record
            return best

        return await self._produce("lookup", run)

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        if limit <= 0:
            return []
        now = self.options.clock()
        command = _dispatch(self._keys(queue), "dead_list", _num(now), limit, _num(now - self.options.dead_ttl))
        reply = await self._produce("dead_letters", lambda: self._call1(command))
        return [
            DeadLetter(_str(reply[i]), queue, reply[i + 1], _str(reply[i + 2]), float(reply[i + 3]))
            for i in range(0, len(reply), 4)
        ]

    async def requeue_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        if ids is not None and not ids:
            return 0
        now = self.options.clock()
        command = _dispatch(
            self._keys(queue), "requeue_dead", _num(now), _num(now - self.options.dead_ttl), *(ids or ())
        )
        return int(await self._produce("requeue_dead", lambda: self._call1(command)))

    async def purge_dead(self, queue: str) -> int:
        now = self.options.clock()
        command = _dispatch(self._keys(queue), "purge_dead", _num(now), _num(now - self.options.dead_ttl))
        return int(await self._produce("purge_dead", lambda: self._call1(command)))
