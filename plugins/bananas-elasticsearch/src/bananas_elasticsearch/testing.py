"""A wire-level stand-in for Elasticsearch, for the tests and benchmarks of this package (stdlib only).

No Elasticsearch server can be installed where Bananas is tested, so the real ``elasticsearch`` client talks HTTP to
this server on a free 127.0.0.1 port. It answers the endpoints the plugin uses as Elasticsearch 9 does:

* every 2xx reply (and every error reply, as Elasticsearch does) carries ``X-Elastic-Product: Elasticsearch``;
  replies use the compatible media type the client asked for (``application/vnd.elasticsearch+json;
  compatible-with=9``);
* ``GET /`` returns version information; ``PUT|POST [/<index>]/_bulk`` takes ndjson (``Content-Encoding: gzip``
  when the client compresses) with the ``application/vnd.elasticsearch+x-ndjson; compatible-with=8|9`` media type
  (anything else is a 406, like Elasticsearch) and answers one item per action, in order;
* ``PUT|GET /_index_template/<name>``, ``PUT|GET /_ilm/policy/<name>``, ``[/<index>]/_refresh``,
  ``[/<index>]/_count`` and ``[/<index>]/_search`` (``match_all``, ``term``, ``match`` and ``bool.must`` of them,
  or ``?q=field:value``) and ``GET /<index pattern>`` over what was indexed;
* ``?filter_path=`` on any of them keeps only the named parts of the reply, as Elasticsearch does (comma-separated
  dotted paths, ``*`` for any one key; arrays are looked through, emptied objects left out).

Failures are injected: :meth:`StandIn.reject_items` fails chosen documents of the next bulk requests,
:attr:`StandIn.bulk_status` fails whole bulk requests (429/503), :attr:`StandIn.stall` makes it hang,
:meth:`StandIn.stop` makes the server go away (connections refused) and :meth:`StandIn.start` brings it back on the
same port. :class:`Gate` does the same in front of any cluster (a real one too): a TCP relay on 127.0.0.1 that can
be closed and opened again.
"""

from __future__ import annotations

import fnmatch
import gzip
import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["NDJSON_TYPES", "Gate", "StandIn", "filter_path", "standin"]

NDJSON_TYPES = ("application/vnd.elasticsearch+x-ndjson", "application/x-ndjson")
VERSION = {
    "number": "9.1.0",
    "build_flavor": "default",
    "build_type": "docker",
    "lucene_version": "10.2.2",
    "minimum_wire_compatibility_version": "8.19.0",
    "minimum_index_compatibility_version": "8.0.0",
}


class StandIn:
    """The server's state: indices (``{index: [(id, source)]}``), templates, policies and the request log."""

    def __init__(self) -> None:
        self.indices: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self.templates: dict[str, dict[str, Any]] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.bulk_status: int | None = None
        self.refuse: int | None = None
        """When set (401, 403 …), every request is answered with this status, as a secured cluster refuses."""
        self.stall = threading.Event()
        """While set, every request waits (up to 30 s) before it is answered: a cluster that hangs."""
        self._item_failures: deque[tuple[int, str, str] | None] = deque()
        self._reject_where: Callable[[dict[str, Any]], tuple[int, str, str] | None] | None = None
        self._ids = itertools.count(1)
        self._doc_ids: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- life cycle --------------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StandIn:
        """Listen (again, on the same port after :meth:`stop`)."""
        handler = type("Handler", (_Handler,), {"standin": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"es-standin-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Go away: stop listening; new connections are refused until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(5)
            self._server = None

    # -- injection ---------------------------------------------------------------------------------------------------

    def reject_items(self, *outcomes: tuple[int, str, str] | None) -> None:
        """The next bulk items, in order, get these outcomes: ``None`` succeeds, ``(status, type, reason)`` fails."""
        with self._lock:
            self._item_failures.extend(outcomes)

    def reject_where(self, rule: Callable[[dict[str, Any]], tuple[int, str, str] | None] | None) -> None:
        """Fail every document for which ``rule(source)`` returns ``(status, type, reason)``."""
        self._reject_where = rule

    # -- what was indexed --------------------------------------------------------------------------------------------

    def docs(self, pattern: str = "*") -> list[dict[str, Any]]:
        with self._lock:
            return [source for index in self._match(pattern) for _, source in self.indices[index]]

    def bulk_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"].endswith("/_bulk")]

    def _match(self, pattern: str) -> list[str]:
        names = sorted(self.indices)
        if pattern in ("", "_all", "*"):
            return names
        return [name for name in names if any(fnmatch.fnmatchcase(name, p) for p in pattern.split(","))]

    # -- endpoints ---------------------------------------------------------------------------------------------------

    def bulk(self, default_index: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        if self.bulk_status is not None:
            kind = "es_rejected_execution_exception" if self.bulk_status == 429 else "unavailable_shards_exception"
            return self.bulk_status, _error(self.bulk_status, kind, "injected by the stand-in")
        lines = [line for line in body.split(b"\n") if line.strip()]
        items: list[dict[str, Any]] = []
        errors = False
        position = 0
        while position < len(lines):
            action = json.loads(lines[position])
            (op, meta), = action.items()
            source = json.loads(lines[position + 1]) if op != "delete" else {}
            position += 1 if op == "delete" else 2
            index = meta.get("_index") or default_index or ""
            with self._lock:
                outcome = self._item_failures.popleft() if self._item_failures else None
            if outcome is None and self._reject_where is not None:
                outcome = self._reject_where(source)
            if outcome is None:
                outcome = self._check_mapping(index, meta.get("_id"), source)
            if outcome is not None:
                status, kind, reason = outcome
                errors = True
                items.append({op: {"_index": index, "_id": meta.get("_id"), "status": status,
                                   "error": {"type": kind, "reason": reason, "index": index}}})
                continue
            doc_id = meta.get("_id") or f"standin-{next(self._ids)}"
            with self._lock:
                if op == "create" and (index, doc_id) in self._doc_ids:
                    errors = True
                    items.append({op: {"_index": index, "_id": doc_id, "status": 409, "error": {
                        "type": "version_conflict_engine_exception",
                        "reason": f"[{doc_id}]: version conflict, document already exists", "index": index}}})
                    continue
                self.indices.setdefault(index, []).append((doc_id, source))
                self._doc_ids.add((index, doc_id))
                seq = len(self.indices[index]) - 1
            items.append({op: {"_index": index, "_id": doc_id, "_version": 1, "result": "created",
                               "_shards": {"total": 1, "successful": 1, "failed": 0}, "_seq_no": seq,
                               "_primary_term": 1, "status": 201}})
        return 200, {"errors": errors, "took": 1, "items": items}

    def _check_mapping(self, index: str, doc_id: str | None, source: dict[str, Any]) -> tuple[int, str, str] | None:
        """Numbers only in the numeric fields of an installed template's mapping, as Elasticsearch checks."""
        for template in self.templates.values():
            if not any(fnmatch.fnmatchcase(index, p) for p in template.get("index_patterns", ())):
                continue
            properties = template.get("template", {}).get("mappings", {}).get("properties", {})
            for field, mapping in properties.items():
                kind, value = mapping.get("type"), source.get(field)
                if kind in _NUMERIC and value is not None and not _number(value):
                    return 400, "document_parsing_exception", (
                        f"[1:1] failed to parse field [{field}] of type [{kind}] in document with id '{doc_id}'")
        return None

    def search(self, pattern: str, query: dict[str, Any] | None, size: int) -> list[tuple[str, str, dict[str, Any]]]:
        with self._lock:
            hits = [(index, doc_id, source) for index in self._match(pattern)
                    for doc_id, source in self.indices[index] if _matches(source, query)]
        return hits[:size]


_NUMERIC = ("integer", "long", "short", "byte", "double", "float", "half_float", "scaled_float")


def _number(value: Any) -> bool:
    """Numbers and numeric strings (Elasticsearch coerces "3" into 3), not booleans or other text."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _matches(source: dict[str, Any], query: dict[str, Any] | None) -> bool:
    if not query or "match_all" in query:
        return True
    if "bool" in query:
        return all(_matches(source, clause) for clause in query["bool"].get("must", []))
    for kind in ("term", "match"):
        if kind in query:
            (field, value), = query[kind].items()
            if isinstance(value, dict):
                value = value.get("value", value.get("query"))
            return str(source.get(field)) == str(value)
    raise ValueError(f"the stand-in does not support this query: {query}")


_DROP = object()


def _filtered(value: Any, paths: list[list[str]]) -> Any:
    """``value`` reduced to ``paths`` (each a list of key patterns), or ``_DROP`` when nothing of it is kept."""
    if isinstance(value, list):
        kept = [item for item in (_filtered(item, paths) for item in value) if item is not _DROP]
        return kept or _DROP
    if not isinstance(value, dict):
        return _DROP
    out: dict[str, Any] = {}
    for key, item in value.items():
        rest = [path[1:] for path in paths if fnmatch.fnmatchcase(key, path[0])]
        if any(not path for path in rest):
            out[key] = item
        elif rest and (inner := _filtered(item, rest)) is not _DROP:
            out[key] = inner
    return out or _DROP


def filter_path(body: dict[str, Any], spec: str) -> dict[str, Any]:
    """Elasticsearch's ``filter_path`` response filtering (inclusive paths only)."""
    paths = [path.split(".") for path in spec.split(",") if path]
    kept = _filtered(body, paths)
    return {} if kept is _DROP else kept  # type: ignore[no-any-return]


def _error(status: int, kind: str, reason: str) -> dict[str, Any]:
    return {"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
            "status": status}


class _Handler(BaseHTTPRequestHandler):
    standin: StandIn
    server_version = "es-standin"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, body: dict[str, Any] | None) -> None:
        spec = parse_qs(urlsplit(self.path).query).get("filter_path")
        if body is not None and spec:
            body = filter_path(body, spec[-1])
        accept = self.headers.get("Accept", "")
        compat = next((part.strip() for part in accept.split(";") if "compatible-with" in part), None)
        ctype = f"application/vnd.elasticsearch+json;{compat}" if compat else "application/json"
        data = b"" if body is None or self.command == "HEAD" else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data) if body is not None else 0))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _body(self) -> bytes:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw

    def _handle(self) -> None:
        deadline = time.monotonic() + 30
        while self.standin.stall.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        split = urlsplit(self.path)
        parts = [p for p in split.path.split("/") if p]
        params = {k: v[-1] for k, v in parse_qs(split.query).items()}
        body = self._body()
        s = self.standin
        s.requests.append({"method": self.command, "path": split.path, "params": params, "headers": dict(self.headers),
                           "gzip": self.headers.get("Content-Encoding") == "gzip", "bytes": len(body)})
        method = self.command
        if s.refuse is not None:
            kind = "security_exception"
            return self._reply(s.refuse, _error(s.refuse, kind, "missing authentication credentials for REST request"))
        if not parts:
            if method in ("GET", "HEAD"):
                return self._reply(200, {"name": "standin", "cluster_name": "bananas-standin",
                                         "cluster_uuid": "standin-uuid", "version": VERSION,
                                         "tagline": "You Know, for Search"})
        elif parts[-1] == "_bulk" and method in ("PUT", "POST"):
            ctype = self.headers.get("Content-Type", "")
            media = ctype.split(";")[0].strip()
            if media not in NDJSON_TYPES or ("compatible-with" in ctype and not any(
                    f"compatible-with={v}" in ctype.replace(" ", "") for v in (8, 9))):
                return self._reply(406, _error(406, "media_type_header_exception",
                                               f"Content-Type header [{ctype}] is not supported"))
            status, reply = s.bulk(parts[0] if len(parts) == 2 else None, body)
            return self._reply(status, reply)
        elif parts[0] == "_index_template" and len(parts) == 2:
            if method == "PUT":
                s.templates[parts[1]] = json.loads(body)
                return self._reply(200, {"acknowledged": True})
            if method == "GET" and parts[1] in s.templates:
                return self._reply(200, {"index_templates": [{"name": parts[1],
                                                               "index_template": s.templates[parts[1]]}]})
            if method == "GET":
                return self._reply(404, _error(404, "resource_not_found_exception",
                                               f"index template matching [{parts[1]}] not found"))
        elif parts[:2] == ["_ilm", "policy"] and len(parts) == 3:
            if method == "PUT":
                s.policies[parts[2]] = json.loads(body)
                return self._reply(200, {"acknowledged": True})
            if method == "GET" and parts[2] in s.policies:
                return self._reply(200, {parts[2]: {"version": 1, **s.policies[parts[2]]}})
            if method == "GET":
                return self._reply(404, _error(404, "resource_not_found_exception",
                                               f"Lifecycle policy not found: {parts[2]}"))
        elif parts[-1] == "_refresh" and method in ("POST", "GET"):
            return self._reply(200, {"_shards": {"total": 1, "successful": 1, "failed": 0}})
        elif parts[-1] in ("_count", "_search") and method in ("POST", "GET"):
            pattern = parts[0] if len(parts) == 2 else "*"
            request = json.loads(body) if body else {}
            query = request.get("query")
            if "q" in params:
                field, _, value = params["q"].partition(":")
                query = {"term": {field: value}}
            try:
                hits = s.search(pattern, query, int(request.get("size", params.get("size", 10))))
                total = len(s.search(pattern, query, 1 << 30))
            except ValueError as exc:
                return self._reply(400, _error(400, "parsing_exception", str(exc)))
            shards = {"total": 1, "successful": 1, "skipped": 0, "failed": 0}
            if parts[-1] == "_count":
                return self._reply(200, {"count": total, "_shards": shards})
            return self._reply(200, {"took": 1, "timed_out": False, "_shards": shards, "hits": {
                "total": {"value": total, "relation": "eq"}, "max_score": 1.0,
                "hits": [{"_index": i, "_id": d, "_score": 1.0, "_source": src} for i, d, src in hits]}})
        elif len(parts) == 1 and not parts[0].startswith("_") and method == "GET":
            with s._lock:
                names = s._match(parts[0])
            return self._reply(200, {name: {"aliases": {}, "mappings": {}, "settings": {}} for name in names})
        self._reply(405 if parts else 404, _error(405, "illegal_argument_exception",
                                                  f"no handler found for uri [{self.path}] and method [{method}]"))

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle


@contextmanager
def standin() -> Iterator[StandIn]:
    """A started stand-in, stopped afterwards."""
    server = StandIn().start()
    try:
        yield server
    finally:
        server.stop()


class Gate:
    """A TCP relay on a free 127.0.0.1 port to ``target`` (``host:port``): :meth:`close` refuses new connections
    and cuts open ones, as a cluster that went away; :meth:`open` listens again on the same port."""

    def __init__(self, target_url: str) -> None:
        split = urlsplit(target_url)
        self.target = (split.hostname or "127.0.0.1", split.port or 9200)
        self.scheme = split.scheme or "http"
        self.port = 0
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def open(self) -> Gate:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name=f"gate-{self.port}", daemon=True).start()
        return self

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept(); close() alone does not
            except OSError:
                pass
            listener.close()
        with self._lock:
            open_sockets, self._sockets = self._sockets, set()
        for sock in open_sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def main() -> None:
    """``python -m bananas_elasticsearch.testing [PORT]``: run a stand-in (printing its URL) until interrupted."""
    import sys

    server = StandIn()
    server.port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server.start()
    print(server.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
