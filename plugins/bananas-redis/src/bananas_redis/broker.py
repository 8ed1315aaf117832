"""``RedisBroker``: the :class:`bananas.broker.Broker` protocol on Redis 6.2+ with ``redis.asyncio``.

Design (every key and its type is documented in :mod:`bananas_redis.keys` and at the top of ``lua/dispatch.lua``):

* **One Lua dispatcher** does every transition of one queue atomically (enqueue, take, renew, ack, retry, dead,
  release, move_due, reap and the dead-letter commands). It is called with ``EVALSHA`` and loaded again on
  ``NOSCRIPT`` (after a restart or ``SCRIPT FLUSH``). A call touches the keys of one queue only, all under one hash
  tag, so the layout is cluster-ready; calls for several queues are pipelined into one round trip. A second small
  script (``home.lua``) keeps each id's home queue, so an id has one live copy across queues.
* **Batches.** ``enqueue`` sends one script call per queue (plus one home claim per id bucket) in one round trip;
  ``fetch`` leases up to ``limit`` jobs per script call; ``ack``, ``renew`` and ``release`` settle a list per queue
  in one round trip.
* **Blocking fetch without polling.** Every script that makes jobs ready also keeps the queue's ``signal`` list
  non-empty while ``ready`` is (and empties it when ``ready`` is empty). A fetcher that found nothing blocks in
  ``BLPOP`` on the signal lists of its queues with the remaining timeout and takes again as soon as one is
  pushed; since signals are list items, not pub/sub messages, a job enqueued between the empty take and the
  ``BLPOP`` is never missed. A fetcher whose last call ended empty goes straight to ``BLPOP`` (the signal list
  says whether work exists), so an idle worker costs one command per fetch timeout. ``reap`` repairs a signal
  lost with a fetcher that died between its ``BLPOP`` and its take. On a Redis Cluster ``BLPOP`` over queues of
  different slots would need one blocking connection per queue; this client targets a single node (or a proxy).
* **Fencing tokens** are ``(per-queue counter << 16) | queue number`` (the number comes from the queue registry),
  so they are unique across queues while each script only touches its own queue's counter.
* **Time** comes from ``options.clock()`` and is passed to the scripts, so tests can move it.
* **Connections.** Producer-side calls (``enqueue``, inspection, dead-letter commands) fail with
  :class:`~bananas.errors.BrokerUnavailable` within ``options.timeout``. Worker-side calls retry lost connections
  with exponential backoff for up to ``options.retry_for`` seconds, logging the outage once and the recovery; jobs
  a worker holds keep their leases meanwhile (it renews them once Redis is back).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import attrs
from loguru import logger
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoScriptError, ReadOnlyError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bananas.broker import BrokerOptions, DeadLetter, Delivery, Envelope, JobRecord, QueueDepth
from bananas.errors import BrokerUnavailable, ConfigError
from bananas_redis.keys import QueueKeys, due_signal_key, home_key, queue_keys, queue_seq_key, registry_key
from bananas_redis.options import RedisOptions

__all__ = ["HOME_SCRIPT", "SCRIPT", "RedisBroker"]

T = TypeVar("T")
Command = tuple[Any, ...]

_LUA = resources.files("bananas_redis").joinpath("lua")
SCRIPT: bytes = _LUA.joinpath("dispatch.lua").read_bytes()
"""The queue dispatcher script (package data)."""
HOME_SCRIPT: bytes = _LUA.joinpath("home.lua").read_bytes()
"""The home-key script (package data)."""

_SHA = hashlib.sha1(SCRIPT).hexdigest()
_HOME_SHA = hashlib.sha1(HOME_SCRIPT).hexdigest()
_RETRYABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)
_TOKEN_BITS = 16  # a token is (per-queue counter << 16) | queue number, so tokens are unique across queues
_TOKEN_MASK = (1 << _TOKEN_BITS) - 1
_REAP_BATCH = 1000
_HOME_HORIZON = 7 * 24 * 3600.0  # a home key outlives the retention by this much (a job may wait that long)
_SEND_SLICE = 2  # commands encoded and written per socket write in one round trip
_ENQUEUE_CHUNK = 250  # envelopes per enqueue script call: small enough to overlap encoding with Redis's work
_MIN_BLOCK = 0.001  # BLPOP timeout resolution (seconds); 0 would mean "forever"
_DUE_SAFETY = 30.0  # an idle scheduler still does a full move_due pass this often (seconds, see move_due)
_INF = float("inf")


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


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def _pack(commands: Sequence[Command]) -> bytes:
    """RESP-encode ``commands`` (str as UTF-8, bytes as is, int and float in decimal); faster than redis-py's."""
    parts: list[bytes] = []
    append = parts.append
    for command in commands:
        append(b"*%d\r\n" % len(command))
        for arg in command:
            if isinstance(arg, bytes):
                data = arg
            elif isinstance(arg, str):
                data = arg.encode()
            elif isinstance(arg, int):
                data = b"%d" % arg
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
            self._slots.release()
            raise

    def put(self, conn: AbstractConnection) -> None:
        self._idle.append(conn)
        self._slots.release()

    async def close(self) -> None:
        conns, self._all, self._idle = self._all, set(), []
        for conn in conns:
            await conn.disconnect()


def _dispatch(qk: QueueKeys, command: str, *args: Any) -> Command:
    return ("EVALSHA", _SHA, 6, *qk.script_keys, command, qk.job_prefix, *args)


class RedisBroker:
    """The production broker for ``redis://`` and ``rediss://`` URLs (see the module docstring).

    ``RedisBroker(url, options)`` does no I/O; :meth:`connect` opens the pools and loads the scripts.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", options: BrokerOptions | None = None) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in ("redis", "rediss"):
            raise ConfigError(
                "broker", url, "RedisBroker", "a redis://[user:password@]host[:port][/db] or rediss:// URL"
            )
        self.url = url
        self.options: RedisOptions = _as_redis_options(options)
        self._tls = scheme == "rediss"
        self._pool: _Pool | None = None
        self._blocking: Redis | None = None
        self._hot: dict[tuple[str, ...], bool] = {}
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

    def __repr__(self) -> str:
        return f"RedisBroker({_redact(self.url)!r})"

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

    def _open(self) -> _Pool:
        if self._pool is None:
            # Commands: a lean bounded pool. Connections have no socket timeout of their own: every round trip
            # runs under one asyncio.timeout(socket_timeout) in _send, which disconnects on expiry.
            config = ConnectionPool.from_url(self.url, socket_timeout=None, **self._pool_kwargs())
            self._pool = _Pool(config.make_connection, self.options.pool_size)
            # Blocked fetches get their own pool, so a long BLPOP never holds a connection acks are waiting for.
            # Each BLPOP is bounded by asyncio.timeout() too.
            blocking = ConnectionPool.from_url(self.url, socket_timeout=None, **self._pool_kwargs())
            self._blocking = Redis(connection_pool=blocking)
        return self._pool

    async def connect(self) -> None:
        self._open()
        await self._produce("connect", self._load_scripts)

    async def close(self) -> None:
        pool, blocking = self._pool, self._blocking
        self._pool = self._blocking = None
        if pool is not None:
            await pool.close()
        if blocking is not None:
            await blocking.aclose(close_connection_pool=True)

    # -- error handling --------------------------------------------------------------------------------------
    def _unavailable(self, what: str, exc: BaseException) -> BrokerUnavailable:
        return BrokerUnavailable(f"redis broker {_redact(self.url)} unavailable during {what}: {exc}")

    async def _produce(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run a producer-side call within ``options.timeout``; retried once at once (a stale pooled connection)."""
        try:
            async with asyncio.timeout(self.options.timeout):
                try:
                    return await call()
                except AuthenticationError:
                    raise
                except RedisConnectionError:
                    return await call()
        except (*_RETRYABLE, TimeoutError) as exc:
            raise self._unavailable(what, exc) from exc

    async def _work(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run a worker-side call, retrying lost connections with exponential backoff for ``retry_for`` s."""
        o = self.options
        delay = o.retry_backoff
        start = time.monotonic()
        failing = False
        while True:
            try:
                result = await call()
            except AuthenticationError as exc:
                raise self._unavailable(what, exc) from exc
            except _RETRYABLE as exc:
                elapsed = time.monotonic() - start
                if elapsed >= o.retry_for:
                    logger.error("redis broker {}: gave up on {} after {:.1f}s: {}", self, what, elapsed, exc)
                    raise self._unavailable(what, exc) from exc
                if not failing:
                    logger.warning(
                        "redis broker {}: connection lost during {} ({}); retrying with backoff for up to {:.0f}s",
                        self,
                        what,
                        exc,
                        o.retry_for,
                    )
                    failing = True
                await asyncio.sleep(min(delay * (0.5 + random.random() / 2), o.retry_for - elapsed))
                delay = min(delay * 2, o.retry_backoff_max)
                continue
            if failing:
                logger.info("redis broker {}: connection back after {:.1f}s", self, time.monotonic() - start)
            return result

    # -- round trips -----------------------------------------------------------------------------------------
    async def _send(self, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` in one round trip on a pooled connection; error replies come back as exceptions."""
        pool = self._open()
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

    async def _call(self, commands: Sequence[Command]) -> list[Any]:
        """One round trip; on ``NOSCRIPT`` load the scripts and resend those commands; raise the first error."""
        results = await self._send(commands)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            await self._load_scripts()
            for i, r in zip(missing, await self._send([commands[i] for i in missing]), strict=True):
                results[i] = r
        for r in results:
            if isinstance(r, Exception):
                raise r
        return results

    async def _call1(self, command: Command) -> Any:
        return (await self._call([command]))[0]

    def _keys(self, queue: str) -> QueueKeys:
        return queue_keys(self.options.prefix, queue)

    # -- queue registry and tokens ---------------------------------------------------------------------------
    async def _register(self, queues: Sequence[str]) -> None:
        """Give each queue a number in the registry (first come wins) and cache it."""
        current = await self._call1(("HMGET", self._registry, *queues))
        missing = [q for q, n in zip(queues, current, strict=True) if n is None]
        for q, n in zip(queues, current, strict=True):
            if n is not None:
                self._numbers[q] = int(n)
        if not missing:
            return
        numbers = await self._call([("INCR", self._queue_seq)] * len(missing))
        if max(numbers) > _TOKEN_MASK:
            prefix = self.options.prefix
            raise BrokerUnavailable(f"redis broker: more than {_TOKEN_MASK} queues under prefix {prefix!r}")
        commands: list[Command] = [("HSETNX", self._registry, q, n) for q, n in zip(missing, numbers, strict=True)]
        *_, final = await self._call([*commands, ("HMGET", self._registry, *missing)])
        for q, n in zip(missing, final, strict=True):
            self._numbers[q] = int(n)

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
    async def enqueue(self, envelopes: Sequence[Envelope]) -> None:
        if not envelopes:
            return
        # Within one call only the first envelope of an id can be stored: any later one meets it as a live copy.
        first: dict[str, Envelope] = {}
        for env in envelopes:
            first.setdefault(env.id, env)
        await self._produce("enqueue", lambda: self._enqueue(list(first.values())))

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

    async def _enqueue(self, envelopes: list[Envelope]) -> None:
        nowf = self.options.clock()
        now = _num(nowf)
        groups: dict[str, list[Envelope]] = {}
        for env in envelopes:
            groups.setdefault(env.queue, []).append(env)
        commands: list[Command] = []
        chunks: list[list[Envelope]] = []
        for queue, envs in groups.items():
            for i in range(0, len(envs), _ENQUEUE_CHUNK):
                chunk = envs[i : i + _ENQUEUE_CHUNK]
                args: list[Any] = []
                for env in chunk:
                    args += (env.id, env.body, "" if env.eta is None else _num(env.eta))
                commands.append(_dispatch(self._keys(queue), "enqueue", now, *args))
                chunks.append(chunk)
        # The id's home queue is claimed in the same round trip; only an id that already lives in another queue
        # costs more round trips (vacate there, then withdraw here or move the home).
        if self.options.unique_across_queues:
            home_calls, home_index = self._home_calls("claim", envelopes, nowf)
        else:
            home_calls, home_index = [], []
        delayed = any(env.eta is not None and env.eta > nowf for env in envelopes)
        # After the scripts, in the same round trip: a token telling idle schedulers a delayed job exists.
        due = self._due_token() if delayed else []
        if delayed:
            self._due_dirty = True
        results = await self._call([*commands, *home_calls, *due])
        if due:
            results = results[: -len(due)]
        stored: dict[str, bool] = {}
        for envs, reply in zip(chunks, results[: len(commands)], strict=True):
            for env, flag in zip(envs, reply, strict=True):
                stored[env.id] = flag == 1
        homes: list[str] = [""] * len(envelopes)
        for index, reply in zip(home_index, results[len(commands) :], strict=True):
            for i, home in zip(index, reply, strict=True):
                homes[i] = _str(home)
        moving = [(env, home) for env, home in zip(envelopes, homes, strict=True) if home and home != env.queue]
        if moving:
            await self._resolve_homes(moving, stored, nowf)
        new = sorted({env.queue for env in envelopes if stored.get(env.id)} - self._numbers.keys())
        if new:
            await self._register(new)

    async def _resolve_homes(self, moving: list[tuple[Envelope, str]], stored: dict[str, bool], now: float) -> None:
        """Enforce one live copy per id across queues for ids whose home is another queue."""
        by_home: dict[str, list[Envelope]] = {}
        for env, home in moving:
            by_home.setdefault(home, []).append(env)
        homes = list(by_home)
        replies = await self._call(
            [_dispatch(self._keys(h), "vacate", _num(now), *(env.id for env in by_home[h])) for h in homes]
        )
        withdraw: dict[str, list[str]] = {}
        rehome: list[Envelope] = []
        for home, reply in zip(homes, replies, strict=True):
            for env, live in zip(by_home[home], reply, strict=True):
                if live == 1:
                    if stored.get(env.id):
                        withdraw.setdefault(env.queue, []).append(env.id)
                    stored[env.id] = False
                elif stored.get(env.id):
                    rehome.append(env)
        queues = list(withdraw)
        commands = [_dispatch(self._keys(q), "withdraw", _num(now), *withdraw[q]) for q in queues]
        commands += self._home_calls("set", rehome, now)[0]
        if not commands:
            return
        results = await self._call(commands)
        for q, reply in zip(queues, results, strict=False):
            for job_id, done in zip(withdraw[q], reply, strict=True):
                if done != 1:
                    logger.warning(
                        "redis broker: job {} was enqueued to {!r} while live in another queue and was taken before "
                        "it could be withdrawn; two copies run",
                        job_id,
                        q,
                    )

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

    async def _take(self, queues: tuple[str, ...], limit: int) -> list[Delivery]:
        out: list[Delivery] = []
        for queue in self._order(queues):
            qk = self._keys(queue)
            now = self.options.clock()
            command = _dispatch(qk, "take", _num(now), _num(now + self.options.lease), limit - len(out))
            reply = await self._work("fetch", lambda command=command: self._call1(command))
            if reply:
                number = self._numbers.get(queue)
                if number is None:
                    number = await self._work("fetch", lambda queue=queue: self._number(queue))
                for i in range(0, len(reply), 5):
                    token = (int(reply[i + 2]) << _TOKEN_BITS) | number
                    out.append(
                        Delivery(_str(reply[i]), queue, reply[i + 1], token, int(reply[i + 3]), int(reply[i + 4]))
                    )
            if len(out) >= limit:
                break
        return out

    async def _wait(self, queues: tuple[str, ...], deadline: float) -> bool | None:
        """Block until a signal of one of ``queues`` arrives (``True``) or ``deadline`` (loop time) passes
        (``None``). A scheduling broker also listens for due tokens: one marks the schedule dirty (``False``)."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining < _MIN_BLOCK:
            return None
        self._open()
        assert self._blocking is not None
        keys = [self._keys(q).signal for q in queues]
        watch = self._scheduler
        if watch:
            keys.append(self._due_key)
            self._watching += 1
        try:
            async with asyncio.timeout(remaining + self.options.socket_timeout):
                reply = await self._blocking.blpop(keys, timeout=max(round(remaining, 3), _MIN_BLOCK))
        finally:
            if watch:
                self._watching -= 1
        if reply is None:
            return None
        if watch and _str(reply[0]) == self._due_key:
            self._due_dirty = True
            return False
        return True

    async def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        if limit <= 0 or not queues:
            return []
        names = tuple(queues)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        # A fetcher whose last call came back empty trusts the signal lists and blocks first: one command per
        # idle fetch. After a hand-out it takes first, which is one round trip while work keeps coming.
        take_first = timeout <= 0 or self._hot.get(names, True)
        while True:
            if take_first:
                got = await self._take(names, limit)
                if got:
                    self._hot[names] = True
                    return got
            take_first = True
            if deadline - loop.time() < _MIN_BLOCK:
                if timeout > 0:
                    self._hot[names] = False
                return []
            woke = await self._work("fetch", lambda: self._wait(names, deadline))
            if woke is None:
                self._hot[names] = False
                return []
            take_first = woke  # a due token is no work for this fetch: block again

    async def _settle_many(self, what: str, deliveries: Sequence[Delivery], head: Sequence[Any]) -> list[bool]:
        if not deliveries:
            return []
        await self._load_numbers(what, {d.queue for d in deliveries})
        index: dict[str, list[int]] = {}
        pairs: dict[str, list[Any]] = {}
        for i, d in enumerate(deliveries):
            index.setdefault(d.queue, []).append(i)
            pairs.setdefault(d.queue, []).extend((d.id, self._local_token(d)))
        queues = list(index)
        now = _num(self.options.clock())
        commands = [_dispatch(self._keys(q), what, now, *head, *pairs[q]) for q in queues]
        results = await self._work(what, lambda: self._call(commands))
        out = [False] * len(deliveries)
        for q, reply in zip(queues, results, strict=True):
            for i, flag in zip(index[q], reply, strict=True):
                out[i] = flag == 1
        return out

    async def renew(self, deliveries: Sequence[Delivery]) -> list[bool]:
        return await self._settle_many("renew", deliveries, [_num(self.options.clock() + self.options.lease)])

    async def ack(self, deliveries: Sequence[Delivery]) -> list[bool]:
        o = self.options
        return await self._settle_many("ack", deliveries, [_ttl(o.completed_ttl), _num(o.clock() + o.completed_ttl)])

    async def release(self, deliveries: Sequence[Delivery]) -> list[bool]:
        return await self._settle_many("release", deliveries, [])

    async def retry(self, delivery: Delivery, *, body: bytes, at: float) -> bool:
        await self._load_numbers("retry", {delivery.queue})
        now = _num(self.options.clock())
        command = _dispatch(
            self._keys(delivery.queue), "retry", now, delivery.id, self._local_token(delivery), body, _num(at)
        )
        self._due_dirty = True
        replies = await self._work("retry", lambda: self._call([command, *self._due_token()]))
        return replies[0] == 1

    async def dead_letter(self, delivery: Delivery, *, body: bytes, reason: str) -> bool:
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
        o = self.options
        pending = await self._work("reap", self._queues)
        recovered = 0
        while pending:  # every queue in one round trip; again for queues with more than a batch expired
            now = o.clock()
            args = (_num(now), o.max_crash_deliveries, _ttl(o.dead_ttl), _num(now + o.dead_ttl), _REAP_BATCH)
            commands = [_dispatch(self._keys(q), "reap", *args) for q in pending]
            counts = [int(n) for n in await self._work("reap", lambda commands=commands: self._call(commands))]
            recovered += sum(counts)
            pending = [q for q, n in zip(pending, counts, strict=True) if n >= _REAP_BATCH]
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
                    ("ZCARD", qk.scheduled),
                    ("ZCARD", qk.leases),
                    ("ZCOUNT", qk.dead, cutoff, "+inf"),
                ]
            r = [int(n) for n in await self._call(commands)]
            return {name: QueueDepth(*r[4 * i : 4 * i + 4]) for i, name in enumerate(names)}

        return await self._produce("depths", run)

    async def known_queues(self) -> list[str]:
        return await self._produce("known_queues", self._queues)

    async def lookup(self, job_id: str) -> JobRecord | None:
        fields = ("state", "body", "deliveries", "crashes", "reason", "updated_at", "expires_at")

        async def run() -> JobRecord | None:
            names = await self._queues()
            if not names:
                return None
            rows = await self._call([("HMGET", self._keys(name).job(job_id), *fields) for name in names])
            now = self.options.clock()
            best: JobRecord | None = None
            for name, row in zip(names, rows, strict=True):
                state, body, deliveries, crashes, reason, updated_at, expires_at = row
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
