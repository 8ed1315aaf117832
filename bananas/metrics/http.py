"""The metrics and health endpoint: ``/metrics``, ``/healthz`` and ``/readyz`` on ``METRICS_BIND:METRICS_PORT``.

A ``http.server.ThreadingHTTPServer`` in a daemon thread (the way ``prometheus_client.start_http_server`` serves),
so a scrape or a probe never runs on the worker's event loop: a blocked loop cannot hide from ``/healthz``, and a
slow scrape cannot delay jobs. The handlers only read the newest snapshot and a few flags.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bananas.metrics.exposition import CONTENT_TYPE

__all__ = ["Check", "Endpoint"]

Check = Callable[[], tuple[bool, str]]
"""A probe: ``(ok, reason)``; the reason is the response body (200 when ok, 503 otherwise)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Endpoint:
    """Serves ``metrics()`` at ``/metrics`` and the ``healthz``/``readyz`` checks until :meth:`stop`."""

    def __init__(self, bind: str, port: int, metrics: Callable[[], bytes], healthz: Check, readyz: Check) -> None:
        routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/metrics": lambda: (200, CONTENT_TYPE, metrics()),
            "/healthz": lambda: _check(healthz),
            "/readyz": lambda: _check(readyz),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                route = routes.get(self.path.split("?", 1)[0])
                if route is None:
                    status, kind, body = 404, "text/plain; charset=utf-8", b"not found: /metrics, /healthz, /readyz\n"
                else:
                    try:
                        status, kind, body = route()
                    except Exception as exc:  # noqa: BLE001 - a failing probe is a 500 with the reason, never a hang
                        status, kind, body = 500, "text/plain; charset=utf-8", f"{type(exc).__name__}: {exc}\n".encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet: probes come every few s
                return None

        self._server = _Server((bind, port), Handler)
        self.address: tuple[str, int] = self._server.server_address[:2]  # type: ignore[assignment]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="bananas-metrics-http", daemon=True)

    def start(self) -> Endpoint:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2)


def _check(check: Check) -> tuple[int, str, bytes]:
    ok, reason = check()
    return (200 if ok else 503), "text/plain; charset=utf-8", (reason + "\n").encode()
