"""``RedisClusterBroker``: :class:`~bananas_redis.broker.RedisBroker` on a Redis Cluster (``redis+cluster://``).

Only the connection layer differs from one node; every script and command is the same:

* **Routing.** Every key of a queue shares the hash tag ``{<prefix>:<queue>}`` (:mod:`bananas_redis.keys`), so a
  queue lives on one slot and every dispatcher call touches that slot only; the home keys (``home.lua``), the
  periodic keys and the worker registry have one hash tag each; the queue registry, its counter and the due-signal
  list are single keys touched by single-key commands. A round trip (:meth:`RedisClusterBroker._send`) is split by
  the node owning each command's slot and sent to every node at once (a batch enqueue to queues on three shards
  costs one round trip per shard, concurrently); the replies come back in the caller's order. Commands without a
  key (``PING``, ``SCRIPT LOAD``) go to every master (a master promoted or added later gets the scripts on its
  first ``NOSCRIPT``).
* **Slot map.** Learnt with ``CLUSTER SLOTS`` from the URL's seeds or any known node, at connect and again after
  a ``MOVED`` reply or a lost connection. ``MOVED`` (a slot moved for good: resharding, a replica promoted) resends
  the command to the new owner; ``ASK`` (a slot being migrated) resends it with ``ASKING`` to the importing node;
  ``TRYAGAIN`` (a multi-key command during a migration) and ``CLUSTERDOWN`` are retried with a short backoff for
  up to ``socket_timeout``, then reported as a lost connection (worker calls keep retrying, see ``retry_for``).
* **Blocking fetch.** ``BLPOP`` cannot span slots, so a fetch that found nothing blocks with one ``BLPOP`` per
  queue (and one on the due-signal list for a scheduler), each on the blocking pool of the queue's node, all at
  once. The first to return wakes the fetch, which takes from every queue in priority order again. The others stay
  blocked (cancelling one would cost a reconnect) and serve the next wait on their key.
* **enqueue_sync** routes the same way on redis-py's blocking connections, one idle list per node. What the two
  lanes share without I/O (which node to ask for the slot map, parsing it, the retry rounds) is in
  :mod:`bananas_redis.cluster_map`; each lane here only sends and sleeps.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import Connection, SSLConnection
from redis.connection import Connection as SyncConnection
from redis.connection import SSLConnection as SyncSSLConnection
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError

from bananas.plugin_api import BrokerOptions
from bananas_redis.broker import Command, RedisBroker, _pack, _Pool
from bananas_redis.cluster_map import CLUSTER_SLOTS, SLOTS, UNREACHABLE, Address, Rounds, SlotMapSearch

__all__ = ["RedisClusterBroker"]

_KEYLESS = frozenset({"PING", "SCRIPT", "ASKING", "CLUSTER", "INFO", "TIME"})
_NOT_LOCAL = "non local key"  # a script on a migrating slot met a key that already moved: retried like TRYAGAIN


def _key(command: Command) -> Any:
    """The key that decides where ``command`` goes, or ``None`` (a command for every master)."""
    name = command[0].upper() if isinstance(command[0], str) else command[0].decode().upper()
    if name in ("EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO"):
        return command[3] if int(command[2]) > 0 else None
    if name in _KEYLESS or len(command) < 2:
        return None
    return command[1]


def command_slot(command: Command) -> int | None:
    """The hash slot of ``command``'s key (``None``: keyless)."""
    key = _key(command)
    if key is None:
        return None
    return int(key_slot(key.encode() if isinstance(key, str) else key))


def _retry_later(reply: Any) -> bool:
    return isinstance(reply, (TryAgainError, ClusterDownError)) or (
        isinstance(reply, ResponseError) and _NOT_LOCAL in str(reply)
    )


class RedisClusterBroker(RedisBroker):
    """The broker for ``redis+cluster://`` and ``rediss+cluster://`` URLs (see the module docstring)."""

    _one_server = False  # queues live on different nodes: takes go queue by queue (RedisBroker._take)

    _KIND = "cluster"

    def __init__(self, url: str = "redis+cluster://127.0.0.1:6379/", options: BrokerOptions | None = None) -> None:
        super().__init__(url, options)
        self._slots: list[Address | None] = [None] * SLOTS
        self._master_list: list[Address] | None = None
        self._stale = True  # the slot map must be (re)learnt before the next round trip
        self._map_lock: asyncio.Lock | None = None
        self._pools: dict[Address, _Pool] = {}
        self._blocking_pools: dict[Address, _Pool] = {}
        self._sync_nodes: dict[Address, list[Any]] = {}
        self._sync_map_lock = threading.Lock()
        self._waiters: dict[str, asyncio.Task[Any]] = {}  # signal key -> its BLPOP, blocked or with a reply
        self._waiters_loop: asyncio.AbstractEventLoop | None = None
        self._down: set[Address] = set()  # nodes whose last round trip failed (see _replied)

    # -- connections -----------------------------------------------------------------------------------------
    def _node_kwargs(self, address: Address) -> dict[str, Any]:
        kwargs = self._pool_kwargs()
        kwargs.pop("max_connections", None)
        t = self.target
        kwargs.update(host=address[0], port=address[1], username=t.username, password=t.password)
        return kwargs

    def _node_pool(self, address: Address, blocking: bool = False) -> _Pool:
        pools = self._blocking_pools if blocking else self._pools
        pool = pools.get(address)
        if pool is None:
            kwargs = self._node_kwargs(address)
            config = ConnectionPool(connection_class=SSLConnection if self._tls else Connection, socket_timeout=None,
                                    **kwargs)
            pool = pools[address] = _Pool(config.make_connection, self.options.pool_size)
        return pool

    def _open(self) -> _Pool:
        # The base class's pools are unused here (one pool per node); _open only marks the broker as opened.
        if self._pool is None:
            self._pool = self._node_pool(self.target.hosts[0])
            self._blocking = self._node_pool(self.target.hosts[0], blocking=True)
        return self._pool

    async def close(self) -> None:
        await self._cancel_waiters()
        self._close_sync()
        with self._sync_map_lock:
            nodes, self._sync_nodes = self._sync_nodes, {}
        for conns in nodes.values():
            for conn in conns:
                conn.disconnect()
        pools = [*self._pools.values(), *self._blocking_pools.values()]
        self._pools, self._blocking_pools = {}, {}
        self._pool = self._blocking = None
        self._stale = True
        for pool in pools:
            await pool.close()

    def _replied(self) -> None:
        """An outage (see :meth:`RedisBroker._work`) ends only when no node of the slot map is known down: with one
        shard unreachable, round trips to the others must not log "connection back" and "lost" in turn."""
        if not self._down:
            super()._replied()

    async def _node_round_trip(self, address: Address, commands: Sequence[Command]) -> list[Any]:
        try:
            replies = await self._send_on(self._node_pool(address), commands)
        except (RedisConnectionError, OSError, TimeoutError):
            self._down.add(address)
            self._stale = True  # a node is gone or failed over: learn the map again on the next attempt
            raise
        if address in self._down:
            self._down.discard(address)
            self._replied()
        return replies

    # -- slot map --------------------------------------------------------------------------------------------
    def _masters(self) -> list[Address]:
        """The nodes that serve slots (cached per slot map: the map has 16384 entries)."""
        if self._master_list is None:
            self._master_list = list(dict.fromkeys(a for a in self._slots if a is not None))
        return self._master_list

    def _learn(self, search: SlotMapSearch) -> None:
        """Use the map ``search`` found (or raise its error: no node answered)."""
        self._slots = search.slots()
        self._master_list = None
        self._down &= set(self._masters())  # a node no longer in the map cannot hold the outage open
        self._stale = False

    def _search(self) -> SlotMapSearch:
        return SlotMapSearch(self._masters(), self.target.hosts)

    async def _refresh(self) -> None:
        """Learn the slot map (``CLUSTER SLOTS``) from the first node that answers: known masters, then seeds."""
        if self._map_lock is None:
            self._map_lock = asyncio.Lock()
        async with self._map_lock:
            if not self._stale:
                return  # another round trip refreshed it meanwhile
            search = self._search()
            for address in search:
                try:
                    (reply,) = await self._send_on(self._node_pool(address), [CLUSTER_SLOTS])
                except UNREACHABLE as exc:
                    reply = exc
                search.answer(reply)
            self._learn(search)

    def _plan(
        self, todo: dict[int, Address | None], commands: Sequence[Command]
    ) -> dict[Address, list[tuple[int, bool]]]:
        """Per node, the ``(index, asking)`` commands to send there (keyless ones to every master)."""
        groups: dict[Address, list[tuple[int, bool]]] = {}
        for i, asked in todo.items():
            slot = command_slot(commands[i])
            if slot is None:
                for address in self._masters():
                    groups.setdefault(address, []).append((i, False))
                continue
            owner = asked or self._slots[slot]
            if owner is None:
                raise ClusterDownError(f"CLUSTERDOWN Hash slot {slot} not served")
            groups.setdefault(owner, []).append((i, asked is not None))
        return groups

    @staticmethod
    def _wire(commands: Sequence[Command], items: Sequence[tuple[int, bool]]) -> list[Command]:
        out: list[Command] = []
        for i, asking in items:
            if asking:
                out.append(("ASKING",))
            out.append(commands[i])
        return out

    @staticmethod
    def _unwire(items: Sequence[tuple[int, bool]], replies: Sequence[Any]) -> list[Any]:
        out: list[Any] = []
        position = 0
        for _, asking in items:
            position += 1 if asking else 0
            out.append(replies[position])
            position += 1
        return out

    def _absorb(
        self, commands: Sequence[Command], out: list[Any], groups: dict[Address, list[tuple[int, bool]]],
        replies: dict[Address, list[Any]],
    ) -> tuple[dict[int, Address | None], bool]:
        """Store final replies in ``out``; return the commands to resend (with their ``ASK`` target) and whether
        one must wait (``TRYAGAIN``). Keyless commands keep the first error of any master, else the first reply."""
        todo: dict[int, Address | None] = {}
        wait = False
        keyless: dict[int, list[Any]] = {}
        for address, items in groups.items():
            for (i, _), reply in zip(items, replies[address], strict=True):
                slot = command_slot(commands[i])
                if slot is None:
                    keyless.setdefault(i, []).append(reply)
                elif isinstance(reply, MovedError):
                    self._slots[slot] = (reply.host or address[0], int(reply.port))
                    self._master_list = None
                    self._stale = True  # more slots probably moved with it
                    todo[i] = None
                    out[i] = reply
                elif isinstance(reply, AskError):
                    todo[i] = (reply.host or address[0], int(reply.port))
                    out[i] = reply
                elif _retry_later(reply):
                    todo[i] = None
                    out[i] = reply
                    wait = True
                else:
                    out[i] = reply
        for i, got in keyless.items():
            out[i] = next((r for r in got if isinstance(r, Exception)), got[0])
        return todo, wait

    def _give_up(self, out: list[Any], todo: dict[int, Address | None]) -> NoReturn:
        """Still redirected or told to try again after ``socket_timeout``: a lost connection for the callers."""
        reply = out[next(iter(todo))]
        raise RedisConnectionError(f"redis cluster kept redirecting for {self.options.socket_timeout:g}s: {reply}")

    # -- round trips -----------------------------------------------------------------------------------------
    async def _send(self, commands: Sequence[Command]) -> list[Any]:
        self._open()
        rounds = Rounds(len(commands), self.options.socket_timeout, self._give_up)
        while True:
            if self._stale:
                await self._refresh()
            groups = self._plan(rounds.todo, commands)
            addresses = list(groups)
            if len(addresses) == 1:  # the common case (one queue, or queues of one shard): no task per node
                results: list[Any] = [await self._node_round_trip(addresses[0],
                                                                   self._wire(commands, groups[addresses[0]]))]
            else:
                results = await asyncio.gather(
                    *(self._node_round_trip(a, self._wire(commands, groups[a])) for a in addresses),
                    return_exceptions=True,
                )
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            if failed is not None:
                self._stale = True
                raise failed
            replies = {a: self._unwire(groups[a], r) for a, r in zip(addresses, results, strict=True)}
            pause = rounds.after(*self._absorb(commands, rounds.out, groups, replies))
            if pause is None:
                return rounds.out
            if pause:
                await asyncio.sleep(pause)

    async def _blpop(self, keys: Sequence[str], remaining: float) -> Any:
        """One ``BLPOP`` per key on its node, all at once; the first reply wins.

        The other ``BLPOP``s are not cancelled (that would cost a reconnect each): they stay blocked in the
        background and the next wait on the same key picks them up, or their token if one arrived meanwhile (a
        stale token only costs one empty take)."""
        self._open()
        if self._stale:
            await self._refresh()
        loop = asyncio.get_running_loop()
        if self._waiters_loop is not loop:  # BLPOPs left on another event loop cannot be awaited here
            self._waiters, self._waiters_loop = {}, loop
        deadline = loop.time() + remaining
        while True:
            left = deadline - loop.time()
            tasks: list[asyncio.Task[Any]] = []
            for key in keys:
                task = self._waiters.get(key)
                if task is None:
                    task = self._waiters[key] = asyncio.ensure_future(self._blpop_one(key, left))
                tasks.append(task)
            done, _ = await asyncio.wait(tasks, timeout=left + self.options.socket_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            reply = None
            for key, task in zip(keys, tasks, strict=True):
                if task in done:
                    if self._waiters.get(key) is task:
                        del self._waiters[key]
                    if task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                    if reply is None and task.result() is not None:
                        reply = task.result()
            if reply is not None or deadline - loop.time() < 0.001:
                return reply
            # only BLPOPs left over from an earlier, shorter wait timed out: block again for the rest

    async def _cancel_waiters(self) -> None:
        waiters, self._waiters = list(self._waiters.values()), {}
        for task in waiters:
            task.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)

    async def _blpop_one(self, key: str, remaining: float) -> Any:
        slot = int(key_slot(key.encode()))
        owner = self._slots[slot]
        if owner is None:
            raise ClusterDownError(f"CLUSTERDOWN Hash slot {slot} not served")
        try:
            return await self._blpop_on(self._node_pool(owner, blocking=True), [key], remaining)
        except (MovedError, AskError):
            # The queue's slot moved (or is moving): wake the fetch; its take follows the redirect and refreshes
            # the map, and the next wait blocks on the new owner.
            self._stale = True
            return [key, b"moved"]
        except (RedisConnectionError, OSError):
            self._down.add(owner)
            self._stale = True
            raise

    # -- the blocking lane (enqueue_sync) --------------------------------------------------------------------
    def _sync_node(self, address: Address) -> Any:
        with self._sync_map_lock:
            idle = self._sync_nodes.setdefault(address, [])
            if idle:
                return idle.pop()
        o = self.options
        kwargs = self._node_kwargs(address)
        kwargs.pop("retry", None)
        kwargs["socket_connect_timeout"] = min(o.connect_timeout, o.timeout)
        conn = (SyncSSLConnection if self._tls else SyncConnection)(socket_timeout=o.timeout, **kwargs)
        conn.connect()
        return conn

    def _sync_round_trip(self, address: Address, commands: Sequence[Command]) -> list[Any]:
        conn = self._sync_node(address)
        try:
            conn.send_packed_command([_pack(commands)], check_health=False)
            out: list[Any] = []
            for _ in commands:
                try:
                    out.append(conn.read_response())
                except ResponseError as exc:
                    out.append(exc)
        except BaseException:
            conn.disconnect()
            self._stale = True
            raise
        with self._sync_map_lock:
            self._sync_nodes.setdefault(address, []).append(conn)
        self._replied()
        return out

    def _refresh_sync(self) -> None:
        search = self._search()
        for address in search:
            try:
                (reply,) = self._sync_round_trip(address, [CLUSTER_SLOTS])
            except UNREACHABLE as exc:
                reply = exc
            search.answer(reply)
        self._learn(search)

    def _send_sync(self, commands: Sequence[Command]) -> list[Any]:
        rounds = Rounds(len(commands), self.options.timeout, self._give_up)
        while True:
            if self._stale:
                self._refresh_sync()
            groups = self._plan(rounds.todo, commands)
            replies = {a: self._unwire(items, self._sync_round_trip(a, self._wire(commands, items)))
                       for a, items in groups.items()}
            pause = rounds.after(*self._absorb(commands, rounds.out, groups, replies))
            if pause is None:
                return rounds.out
            if pause:
                time.sleep(pause)
