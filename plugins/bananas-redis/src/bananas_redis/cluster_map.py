"""The I/O-free half of :class:`~bananas_redis.cluster.RedisClusterBroker`'s slot map and retries.

The cluster broker has an asyncio lane and a blocking lane (``enqueue_sync``); both learn the slot map and retry
redirected commands the same way and differ only in how they send and sleep. What they share lives here, so that each
lane keeps only its I/O:

* :class:`SlotMapSearch`: which nodes to ask ``CLUSTER SLOTS`` (known masters first, then the URL's seeds), in that
  order, until one answers; connection errors are kept and the last one raised when no node answered.
* :func:`parse_slots`: a ``CLUSTER SLOTS`` reply as the owner of each of the 16384 slots.
* :class:`Rounds`: one routed call's state across rounds (replies so far, what is left to send, the deadline and the
  ``TRYAGAIN`` backoff).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn

from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["CLUSTER_SLOTS", "SLOTS", "UNREACHABLE", "Address", "Rounds", "SlotMapSearch", "parse_slots"]

Address = tuple[str, int]
SLOTS = 16384
CLUSTER_SLOTS = ("CLUSTER", "SLOTS")
UNREACHABLE = (RedisConnectionError, OSError, TimeoutError)  # a node that did not answer: ask the next one
_BACKOFF = 0.02  # first pause before a TRYAGAIN / CLUSTERDOWN retry (doubles, up to 0.5 s)


def parse_slots(reply: Any, via: Address) -> list[Address | None]:
    """The owner of every slot from a ``CLUSTER SLOTS`` reply (``None``: not served); a master announced without a
    host (``""`` or ``"?"``) is on the host of ``via``, the node that replied."""
    slots: list[Address | None] = [None] * SLOTS
    for entry in reply:
        start, end, master = int(entry[0]), int(entry[1]), entry[2]
        host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
        address = (host if host and host != "?" else via[0], int(master[1]))
        for slot in range(start, end + 1):
            slots[slot] = address
    return slots


class SlotMapSearch:
    """One refresh of the slot map, without I/O. Iterate for the node to ask ``CLUSTER SLOTS`` next and :meth:`answer`
    each with its reply, or with the connection error its round trip raised; iteration stops after the first map.
    :meth:`slots` is that map, or raises the last connection error (no node answered)."""

    def __init__(self, masters: Iterable[Address], seeds: Iterable[Address]) -> None:
        self._candidates = list(dict.fromkeys([*masters, *seeds]))  # known masters first, then the URL's seeds
        self._asked: Address | None = None
        self._slots: list[Address | None] | None = None
        self._error: BaseException | None = None

    def __iter__(self) -> Iterator[Address]:
        for address in self._candidates:
            self._asked = address
            yield address
            if self._slots is not None:
                return

    def answer(self, reply: Any) -> None:
        """The reply of the node just asked: a map, an error reply (raised), or a connection error (kept)."""
        if isinstance(reply, UNREACHABLE):
            self._error = reply
            return
        if isinstance(reply, Exception):
            raise reply
        assert self._asked is not None
        self._slots = parse_slots(reply, self._asked)

    def slots(self) -> list[Address | None]:
        if self._slots is None:
            assert self._error is not None
            raise self._error
        return self._slots


class Rounds:
    """One routed call across its rounds, without I/O: ``out`` holds the replies so far, ``todo`` the commands still
    to send (with their ``ASK`` target). After each round, :meth:`after` says how long to pause before the next one,
    or ``None`` when every command has its final reply; past ``timeout`` it calls ``give_up`` (which raises)."""

    def __init__(self, count: int, timeout: float,
                 give_up: Callable[[list[Any], dict[int, Address | None]], NoReturn]) -> None:
        self.out: list[Any] = [None] * count
        self.todo: dict[int, Address | None] = dict.fromkeys(range(count))
        self._deadline = time.monotonic() + timeout
        self._delay = _BACKOFF
        self._give_up = give_up

    def after(self, todo: dict[int, Address | None], wait: bool) -> float | None:
        """``todo`` and ``wait`` (a ``TRYAGAIN``) of the round just absorbed: the pause before the next round (0: at
        once), or ``None`` (done)."""
        self.todo = todo
        if not todo:
            return None
        if time.monotonic() >= self._deadline:
            self._give_up(self.out, todo)
        if not wait:
            return 0.0
        pause, self._delay = self._delay, min(self._delay * 2, 0.5)
        return pause

