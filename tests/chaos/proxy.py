"""A loopback TCP proxy for fault drills: pass traffic, delay it, black-hole it, or cut every connection.

``ChaosProxy(target_port).start()`` listens on ``127.0.0.1:<port>`` and forwards each accepted connection to
``127.0.0.1:<target_port>`` with two pump threads. Modes, switchable at any time:

* ``pass_through()``: forward every chunk at once;
* ``latency(seconds)``: hold every chunk ``seconds`` before forwarding it (both directions);
* ``blackhole()``: keep accepting connections and reading from them, but forward nothing (a partition: the peer
  sees no error, only silence; bytes read meanwhile are dropped, as a lossy network would);
* ``cut()``: close every open connection at once (both sides); new connections are still accepted.

Everything runs in daemon threads of the test process and is closed by :meth:`stop`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

__all__ = ["ChaosProxy"]


class ChaosProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._conns: list[tuple[socket.socket, socket.socket]] = []
        self._delay = 0.0
        self._blackhole = False
        self._closed = False
        self.accepted = 0
        self.dropped_bytes = 0

    # -- control -----------------------------------------------------------------------------------------------
    def start(self) -> ChaosProxy:
        threading.Thread(target=self._accept, name="chaos-proxy-accept", daemon=True).start()
        return self

    def pass_through(self) -> None:
        self._delay, self._blackhole = 0.0, False

    def latency(self, seconds: float) -> None:
        self._delay, self._blackhole = seconds, False

    def blackhole(self) -> None:
        self._blackhole = True

    def cut(self) -> int:
        """Close every open connection; returns how many pairs were cut."""
        with self._lock:
            conns, self._conns = self._conns, []
        for pair in conns:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
        return len(conns)

    def stop(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut()

    # -- internals -----------------------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns.append((client, upstream))
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self._blackhole:
                    self.dropped_bytes += len(data)
                    continue
                if self._delay:
                    time.sleep(self._delay)
                    if self._blackhole:
                        self.dropped_bytes += len(data)
                        continue
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
