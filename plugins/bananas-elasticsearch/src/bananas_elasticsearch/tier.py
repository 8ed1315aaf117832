"""The Elasticsearch tier's pipeline: call site → bounded queue → collector thread → bulk workers → Elasticsearch.

* The call site (loguru's sink) only appends the record to a bounded queue; when it is full the record is dropped and
  counted (``stats()["dropped"]``), and a rate-limited note on stderr says how many.
* The collector thread takes each record's JSON line (:func:`bananas.plugin_api.json_line`: built once per record,
  so when the JSON console or the file tier already wrote the record, its line is reused, not formatted again), picks
  its daily index ``<prefix>-YYYY.MM.DD`` (from the record's UTC time) and cuts batches of ``flush_bytes`` or whatever
  arrived within ``flush_interval`` seconds.
* ``num_workers`` threads send each batch as one pre-encoded ndjson body (an action line and the record's own line
  per document, joined and encoded once) with the official client's ``bulk`` API (gzip on the wire: with
  ``compress_level`` the tier compresses the body itself, at level 1 for the configured tier: ~2 µs of CPU per record
  instead of the client's level 9, ~9 µs, for ~25 % more bytes; its client then must not compress and must pass a
  bytes body through as it is, see :func:`bananas_elasticsearch.build_client`), asking only for
  ``errors`` and each item's ``status`` and ``error`` back (``filter_path``). The client's bulk helpers would
  serialize every action again and parse the whole reply; their per-document retry is done here instead: documents
  rejected with 429/502/503/504 are sent again (``max_retries`` times, exponential back-off); what still fails is
  written to the fallback with one note per document naming the status and reason (never dropped silently).
* A :class:`~bananas_elasticsearch.breaker.CircuitBreaker` opens when a whole request fails (connection refused,
  timeout, 5xx, 429 after retries) or when every worker stays busy for ``busy_wait`` seconds (the collector waits
  that long for a free worker; meanwhile records wait in the queue): batches then go straight to the fallback — the
  JSON lines on stderr, where the console tier and the platform's log collector already look — until a probe
  batch succeeds, and indexing resumes.
"""
from __future__ import annotations

import gzip
import itertools
import json
import os
import queue
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from elasticsearch import ApiError, Elasticsearch

from bananas.plugin_api import json_line
from bananas_elasticsearch.breaker import CircuitBreaker

__all__ = ["QUEUE_SIZE", "RETRY_STATUSES", "EsTier"]

QUEUE_SIZE = 20_000
"""Records waiting for the collector at most; beyond that new records are dropped and counted."""

RETRY_STATUSES = (429, 502, 503, 504)
"""Per-document (and whole-request) statuses the bulk helper retries before a document counts as failed."""

FILTER_PATH = "errors,items.*.status,items.*.error,error"
"""What the tier reads of a bulk reply: every item keeps its ``status`` (so items stay in request order), failed ones
their ``error``; ``_id``, ``_version``, ``_shards`` … are left out. ``error`` keeps the reason of a whole request
refused."""

POLL = 0.1
"""Seconds the idle collector sleeps before it looks at the queue again."""

Batch = list[tuple[str, str, str]]
"""``(index, document id, json line)``. Each record gets its id here (a per-process prefix and a counter) so that a
failure the helper reports can be traced back to its line, and a batch sent again after a timeout is not indexed
twice (``create`` of an existing id is a 409, counted as indexed)."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _stderr_lines(lines: Iterable[str]) -> None:
    try:
        sys.stderr.write("".join(line + "\n" for line in lines))
        sys.stderr.flush()
    except Exception:  # stderr closed at interpreter exit: nothing left to tell
        pass


class EsTier:
    """One process's Elasticsearch tier: ``sink`` for loguru, ``close`` to flush, ``stats()`` for the counters.

    :param fallback: Receives JSON lines (records that could not be indexed, and the tier's notes); default stderr.
    """

    def __init__(
        self,
        client: Elasticsearch,
        *,
        index_prefix: str = "bananas-logs",
        flush_bytes: int = 5 * 1024 * 1024,
        flush_interval: float = 10.0,
        num_workers: int = 2,
        queue_size: int = QUEUE_SIZE,
        fallback: Callable[[list[str]], None] = _stderr_lines,
        breaker: CircuitBreaker | None = None,
        note_interval: float = 30.0,
        max_retries: int = 2,
        retry_backoff: float = 0.5,
        busy_wait: float = 2.0,
        compress_level: int | None = None,
    ) -> None:
        self.client = client
        self.compress_level = compress_level
        self._sender = client if compress_level is None else client.options(headers={"content-encoding": "gzip"})
        self.index_prefix = index_prefix
        self.flush_bytes = flush_bytes
        self.flush_interval = flush_interval
        self.queue_size = queue_size
        self._high_water = max(1, queue_size // 4)
        self.fallback = fallback
        self.breaker = breaker or CircuitBreaker()
        self.note_interval = note_interval
        self.max_retries, self.retry_backoff = max_retries, retry_backoff
        self.busy_wait = busy_wait
        self.counters = {"indexed": 0, "failed": 0, "fallback": 0, "dropped": 0}
        self._lock = threading.Lock()
        self._records: deque[Mapping[str, Any]] = deque()
        self._wake = threading.Event()
        self._idle = False
        self._closing = False
        self._last_note = 0.0
        self._noted_dropped = 0
        self._since_outage = 0
        self._batches: queue.Queue[Batch | None] = queue.Queue(maxsize=num_workers)
        self._id_prefix = f"{os.getpid():x}-{secrets.token_hex(4)}-"
        self._ids = itertools.count()
        self._heads: dict[str, str] = {}  # index → the start of its action line
        self._workers = [
            threading.Thread(target=self._work, name=f"bananas-es-bulk-{n}", daemon=True)
            for n in range(1, num_workers + 1)
        ]
        self._collector = threading.Thread(target=self._collect, name="bananas-es-collector", daemon=True)
        for thread in (*self._workers, self._collector):
            thread.start()

    # -- call site ---------------------------------------------------------------------------------------------------

    def sink(self, message: Any) -> None:
        """loguru's sink: queue ``message.record``; never blocks, never formats, never does I/O."""
        self.put(message.record)

    def put(self, record: Mapping[str, Any]) -> None:
        """Queue one record (the kernel's route calls this directly: ``SinkConfig.record_sink``)."""
        if len(self._records) >= self.queue_size:
            self.counters["dropped"] += 1
            return
        self._records.append(record)
        if self._idle and len(self._records) >= self._high_water:
            self._wake.set()

    def stats(self) -> dict[str, Any]:
        """``indexed``, ``failed`` (rejected per document, sent to the fallback), ``fallback`` (records written to
        the fallback, rejected ones included), ``dropped`` (queue full), ``queued`` and the breaker's ``state``."""
        with self._lock:
            return {**self.counters, "queued": len(self._records), "breaker": self.breaker.state}

    def close(self, timeout: float = 30.0) -> None:
        """Send what is queued (or hand it to the fallback) and stop the threads; the client is closed."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        self._collector.join(timeout)
        for _ in self._workers:
            self._batches.put(None)
        for thread in self._workers:
            thread.join(timeout)
        self._note_drops(force=True)
        self.client.close()

    # -- collector thread --------------------------------------------------------------------------------------------

    def index_for(self, line: str) -> str:
        """``<prefix>-YYYY.MM.DD`` of the record's UTC day (``"time":"2026-11-29T…`` opens every line)."""
        day = line[9:19] if line.startswith('{"time":"') else json.loads(line).get("time", _now())[:10]
        return f"{self.index_prefix}-{day[0:4]}.{day[5:7]}.{day[8:10]}"

    def _collect(self) -> None:
        records = self._records
        batch: Batch = []
        size = 0
        started = 0.0
        while True:
            if records:
                if not batch:
                    started = time.monotonic()
                while records and size < self.flush_bytes:
                    try:
                        line = json_line(records.popleft())
                    except Exception as exc:  # a record that cannot be formatted must not stop the tier
                        line = json.dumps({"time": _now(), "level": "ERROR", "msg": f"unformattable record: {exc}",
                                           "component": "worker", "log_source": "bananas_internal"})
                    batch.append((self.index_for(line), f"{self._id_prefix}{next(self._ids):x}", line))
                    size += len(line) + 48  # the action line
            full = size >= self.flush_bytes
            due = batch and (time.monotonic() - started >= self.flush_interval or self._closing)
            if full or due:
                self._dispatch(batch)
                batch, size = [], 0
                continue
            self._note_drops()
            if self._closing and not records and not batch:
                return
            if not records:
                self._idle = True  # woken early only by a filling queue or close(): no thread switch per record
                wait = self.flush_interval - (time.monotonic() - started) if batch else self.flush_interval
                self._wake.wait(max(0.001, min(wait, POLL)))
                self._wake.clear()
                self._idle = False

    def _dispatch(self, batch: Batch) -> None:
        if not self.breaker.allow():
            self._to_fallback(batch, "the circuit breaker is open")
            return
        try:  # the collector (never the call site) waits a little for a free worker, then gives up on Elasticsearch
            self._batches.put(batch, timeout=None if self._closing else self.busy_wait)
        except queue.Full:
            self._outage(batch, TimeoutError(f"all {len(self._workers)} bulk workers stayed busy for "
                                             f"{self.busy_wait:g}s"))

    # -- bulk workers ------------------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            batch = self._batches.get()
            if batch is None:
                return
            try:
                self._send(batch)
            except Exception as exc:  # the thread must survive anything the client raises
                self._outage(batch, exc)

    def _send(self, batch: Batch) -> None:
        pending = batch
        rejected: list[tuple[int, str, str]] = []  # (status, reason, line) of the documents that stay rejected
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(min(4 * self.retry_backoff, self.retry_backoff * 2 ** (attempt - 1)))
            outcomes = self._bulk(pending)
            if outcomes is None:  # every document indexed
                break
            retry: Batch = []
            for item, (status, reason) in zip(pending, outcomes, strict=True):
                if 200 <= status < 300 or status == 409:  # 409: an id sent again, indexed the first time
                    continue
                if status in RETRY_STATUSES and attempt < self.max_retries:
                    retry.append(item)
                else:
                    rejected.append((status, reason, item[2]))
            if not retry:
                break
            pending = retry
        if rejected and len(rejected) == len(batch) and all(
            status in RETRY_STATUSES or status >= 500 or status < 0 for status, _, _ in rejected
        ):
            self._outage(batch, RuntimeError(rejected[0][1]))
            return
        if self.breaker.success():
            self._note(f"Elasticsearch is back: indexing resumed ({self._since_outage} records went to the "
                       "fallback while it was unavailable)", level="INFO", force=True)
            self._since_outage = 0
        with self._lock:
            self.counters["indexed"] += len(batch) - len(rejected)
            self.counters["failed"] += len(rejected)
        if rejected:
            self._rejected(rejected)

    def _bulk(self, batch: Batch) -> list[tuple[int, str]] | None:
        """Send ``batch`` once: ``None`` when every document was indexed, else ``(status, reason)`` per document, in
        order (a whole request refused with an HTTP error gives every document that status)."""
        try:
            body = self._body(batch)
            if self.compress_level is not None:
                body = gzip.compress(body, self.compress_level)
            reply = self._sender.bulk(operations=body, filter_path=FILTER_PATH).body
        except ApiError as exc:
            return [(exc.status_code, _api_reason(exc))] * len(batch)
        if not reply.get("errors"):
            return None
        items = reply.get("items") or []
        missing: Mapping[str, Any] = {"status": -1, "error": "no item for this document in the bulk reply"}
        return [(_status(info), _reason(info)) for info in (
            _body(items[n]) if n < len(items) else missing for n in range(len(batch)))]

    def _body(self, batch: Batch) -> bytes:
        """The ndjson body: ``{"create":{"_index":…,"_id":…}}`` and the record's line per document, encoded once
        (the client passes a bytes body through as it is)."""
        heads = self._heads
        parts = []
        for index, doc_id, line in batch:
            head = heads.get(index)
            if head is None:
                if len(heads) > 64:  # one per day: keep it small in a process that runs for months
                    heads.clear()
                head = heads[index] = '{"create":{"_index":' + json.dumps(index) + ',"_id":'
            parts.append(f'{head}"{doc_id}"}}}}\n{line}\n')  # ids are made by the tier: nothing to escape
        return "".join(parts).encode("utf-8", "surrogatepass")

    def _rejected(self, rejected: list[tuple[int, str, str]]) -> None:
        lines: list[str] = []
        for status, reason, line in rejected:
            lines.append(_note_line("WARNING", f"elasticsearch log tier: a record was not indexed (status "
                                    f"{status}: {reason}); it follows on the next line", "rejected"))
            lines.append(line)
        with self._lock:
            self.counters["fallback"] += len(rejected)
        self.fallback(lines)

    def _outage(self, batch: Batch, exc: BaseException) -> None:
        opened = self.breaker.failure()
        self._to_fallback(batch, f"{type(exc).__name__}: {exc}", force=opened)

    # -- fallback and notes ------------------------------------------------------------------------------------------

    def _to_fallback(self, batch: Batch, reason: str, force: bool = False) -> None:
        with self._lock:
            self.counters["fallback"] += len(batch)
            self._since_outage += len(batch)
        self._note(f"Elasticsearch unavailable ({reason}); records go to stderr, retrying in "
                   f"{self.breaker.cooldown:g}s", force=force)
        self.fallback([line for _, _, line in batch])

    def _note_drops(self, force: bool = False) -> None:
        dropped = self.counters["dropped"]
        if dropped != self._noted_dropped:
            if self._note(f"{dropped - self._noted_dropped} records dropped: the queue of {self.queue_size} was "
                          "full", force=force, dropped=dropped - self._noted_dropped):
                self._noted_dropped = dropped

    def _note(self, text: str, level: str = "WARNING", force: bool = False, **extra: Any) -> bool:
        now = time.monotonic()
        if not force and now - self._last_note < self.note_interval:
            return False
        self._last_note = now
        self.fallback([_note_line(level, f"elasticsearch log tier: {text}", **extra)])
        return True


def _note_line(level: str, msg: str, event: str | None = None, **extra: Any) -> str:
    note = {"time": _now(), "level": level, "msg": msg, "component": "worker", "log_source": "bananas_internal"}
    if event:
        note["event"] = event
    return json.dumps({**note, **extra}, separators=(",", ":"), ensure_ascii=False)


def _body(info: Mapping[str, Any]) -> Mapping[str, Any]:
    """The item of a helper failure: ``{"create": {...}}`` → ``{...}``."""
    if len(info) == 1:
        (inner,) = info.values()
        if isinstance(inner, Mapping):
            return inner
    return info


def _status(info: Mapping[str, Any]) -> int:
    status = _body(info).get("status")
    return status if isinstance(status, int) else -1


def _api_reason(exc: ApiError) -> str:
    """``type: reason`` of an error reply (``{"error": {"type": …, "reason": …}}``), else the client's message."""
    error = exc.body.get("error") if isinstance(exc.body, Mapping) else None
    if isinstance(error, Mapping):
        return f"{error.get('type', 'error')}: {error.get('reason', '')}".strip()
    return str(exc)


def _reason(info: Mapping[str, Any]) -> str:
    error = _body(info).get("error")
    if isinstance(error, Mapping):
        return f"{error.get('type', 'error')}: {error.get('reason', '')}".strip()
    return str(error or "unknown error")
