"""The producer lane's lean round trip: a raw socket and hiredis, with a bounded spin before it blocks.

``enqueue_sync`` (``app.enqueue`` / ``app.enqueue_many``) is one round trip per call, and on a small VM most of that
round trip is not Redis's work but the wake-up of a thread blocked in ``recv``: a blocking ``PING`` loop does about
6,600 round trips/s on the 2-core reference machine, the same loop that polls the socket for a few microseconds
before it blocks about 23,000/s, with less CPU per call (docs/PERFORMANCE.md, "Producers"). redis-py's blocking
connection adds its own wrappers on top (131 us of CPU per ``PING``).

:class:`FastLane` takes over a redis-py connection once redis-py has connected it (connect, ``AUTH``, ``SELECT``,
``HELLO`` and the first ``PING`` stay redis-py's) and does the round trips itself: the commands go out in one
``send`` on the now non-blocking socket, and the replies are read with a :class:`hiredis.Reader` that raises
redis-py's own exception classes (``NOSCRIPT`` is a :class:`~redis.exceptions.NoScriptError`, ``OOM`` an
:class:`~redis.exceptions.OutOfMemoryError`, ...). Waiting for the reply polls the socket for up to ``spin_us``
microseconds (``[broker_options] reply_spin_us``: the CPU it may spend per round trip; 0 by default, since on
cores shared with Redis the spin takes CPU Redis needs), then blocks in ``poll`` until ``timeout``. Socket
failures become the errors redis-py raises for them (``ConnectionError``,
``TimeoutError``), so the broker's error handling (:mod:`bananas_redis.errors`) sees exactly what it saw before.

It applies to plain TCP and Unix-socket connections speaking RESP2; TLS, RESP3, Sentinel and Cluster keep redis-py's
path (:func:`fast_lane` returns ``None`` for them). Write confirmation is unchanged: a round trip returns only once
every reply was read.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Any

import hiredis
from redis._parsers.base import BaseParser
from redis.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["FastLane", "fast_lane"]

_CLOSED = "Connection closed by server."  # redis-py's text for an EOF (bananas_redis.errors reads it)
_MISSING = object()  # hiredis: not enough data for a whole reply yet
_READ = 65536
_POLLIN = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP
_POLLOUT = select.POLLOUT | select.POLLERR | select.POLLHUP


def fast_lane(conn: Any, *, protocol: int, spin_us: int, timeout: float) -> FastLane | None:
    """A :class:`FastLane` over ``conn`` (a connected redis-py blocking connection), or ``None`` where redis-py's
    path must stay (TLS, RESP3, a Sentinel-managed or any other connection class)."""
    if protocol != 2 or type(conn) not in (Connection, UnixDomainSocketConnection):
        return None
    sock = getattr(conn, "_sock", None)
    if type(sock) is not socket.socket:
        return None
    return FastLane(conn, sock, spin_us=spin_us, timeout=timeout)


class FastLane:
    """Round trips on one connected socket (one thread at a time, as the broker's pool hands it out)."""

    __slots__ = ("_buf", "_poll", "_reader", "_sock", "_where", "spin", "timeout")

    def __init__(self, conn: Any, sock: socket.socket, *, spin_us: int, timeout: float) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._where = conn._host_error()  # "host:port" or the socket path, as redis-py names it in errors
        self._reader = hiredis.Reader(
            protocolError=InvalidResponse, replyError=BaseParser.parse_error, notEnoughData=_MISSING
        )
        self._buf = bytearray(_READ)
        self._poll = select.poll()
        self._poll.register(sock, _POLLIN)
        self.spin = spin_us / 1e6
        self.timeout = timeout

    def round_trip(self, payload: bytes, count: int) -> list[Any]:
        """Send ``payload`` (``count`` RESP commands) and read ``count`` replies; error replies come back as
        exceptions in the list (the connection stays in sync), socket failures raise."""
        self._send(payload)
        reader = self._reader
        out: list[Any] = []
        append = out.append
        for _ in range(count):
            reply = reader.gets()
            while reply is _MISSING:
                self._fill()
                reply = reader.gets()
            append(reply)
        return out

    def _send(self, payload: bytes) -> None:
        sock = self._sock
        view = memoryview(payload)
        deadline = 0.0
        try:
            while view:
                try:
                    sent = sock.send(view)
                except BlockingIOError:
                    sent = 0
                if sent:
                    view = view[sent:]
                    continue
                if not deadline:  # the send buffer is full (a large batch): wait for room, within timeout
                    deadline = time.monotonic() + self.timeout
                left = deadline - time.monotonic()
                if left <= 0 or not _wait(sock, _POLLOUT, left):
                    raise RedisTimeoutError("Timeout writing to socket")
        except OSError as exc:
            code, text = (exc.args[0], exc.args[1]) if len(exc.args) > 1 else ("UNKNOWN", exc.args[0] if exc.args
                                                                                else exc)
            raise RedisConnectionError(f"Error {code} while writing to socket. {text}.") from exc

    def _fill(self) -> None:
        """Read what the socket has into the reader: spin up to ``spin`` seconds, then block up to ``timeout``."""
        sock, buf = self._sock, self._buf
        try:
            try:
                got = sock.recv_into(buf)
            except BlockingIOError:
                got = -1
            if got < 0 and self.spin > 0:
                until = time.perf_counter() + self.spin
                while got < 0 and time.perf_counter() < until:
                    try:
                        got = sock.recv_into(buf)
                    except BlockingIOError:
                        pass
            if got < 0:
                deadline = time.monotonic() + self.timeout
                while got < 0:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._poll.poll(left * 1000.0):
                        raise RedisTimeoutError(f"Timeout reading from {self._where}")
                    try:
                        got = sock.recv_into(buf)
                    except BlockingIOError:  # a spurious wake-up: wait again, within the same timeout
                        pass
        except OSError as exc:
            raise RedisConnectionError(f"Error while reading from {self._where} : {exc.args}") from exc
        if got == 0:
            raise RedisConnectionError(_CLOSED)
        self._reader.feed(buf, 0, got)


def _wait(sock: socket.socket, events: int, seconds: float) -> bool:
    poller = select.poll()
    poller.register(sock, events)
    return bool(poller.poll(seconds * 1000.0))

