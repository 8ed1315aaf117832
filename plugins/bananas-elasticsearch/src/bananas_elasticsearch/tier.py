"""The Elasticsearch tier's pipeline: call site → bounded queue → collector thread → bulk workers → Elasticsearch.

* The call site (loguru's sink) only appends the record to a bounded queue; when it is full the record is dropped and
  counted (``stats()["dropped"]``), and a rate-limited note on stderr says how many.
* The collector thread formats each record (:func:`bananas.plugin_api.json_line`), picks its daily index
  ``<prefix>-YYYY.MM.DD`` (from the record's UTC time) and cuts batches of ``flush_bytes`` or whatever arrived within
  ``flush_interval`` seconds.
* ``num_workers`` threads send batches with the client's ``streaming_bulk`` helper (gzip on the wire). Documents
  rejected with 429/502/503/504 are retried by the helper; what still fails is written to the fallback with one
  note per document naming the status and reason (never dropped silently).
* A :class:`~bananas_elasticsearch.breaker.CircuitBreaker` opens when a whole request fails (connection refused,
  timeout, 5xx, 429 after retries) or when every worker stays busy for ``busy_wait`` seconds (the collector waits
  that long for a free worker; meanwhile records wait in the queue): batches then go straight to the fallback — the
  JSON lines on stderr, where the console tier and the platform's log collector already look — until a probe
  batch succeeds, and indexing resumes.
"""

from __future__ import annotations

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

from elasticsearch import Elasticsearch, helpers

from bananas.plugin_api import json_line
from bananas_elasticsearch.breaker import CircuitBreaker

__all__ = ["QUEUE_SIZE", "RETRY_STATUSES", "EsTier"]

QUEUE_SIZE = 20_000
"""Records waiting for the collector at most; beyond that new records are dropped and counted."""

RETRY_STATUSES = (429, 502, 503, 504)
"""Per-document (and whole-request) statuses the bulk helper retries before a document counts as failed."""

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
    ) -> None:
        self.client = client
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
        if len(self._records) >= self.queue_size:
            self.counters["dropped"] += 1
            return
        self._records.append(message.record)
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
                        line = _line(records.popleft())
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
        results = (
            helpers.streaming_bulk(
                self.client,
                batch,
                chunk_size=max(1, len(batch)),
                max_chunk_bytes=max(2 * self.flush_bytes, 1 << 20),
                expand_action_callback=lambda item: ({"create": {"_index": item[0], "_id": item[1]}}, item[2]),
                raise_on_error=False,
                raise_on_exception=False,
                max_retries=self.max_retries,
                initial_backoff=self.retry_backoff,
                max_backoff=4 * self.retry_backoff,
                retry_on_status=RETRY_STATUSES,
                yield_ok=False,
            )
        )
        failures = [info for ok, info in results if not ok and _status(info) != 409]
        whole = len(failures) == len(batch) and all(
            _status(info) in RETRY_STATUSES or _status(info) >= 500 or _status(info) < 0 for info in failures
        )
        if whole and failures:
            self._outage(batch, RuntimeError(_reason(failures[0])))
            return
        if self.breaker.success():
            self._note(f"Elasticsearch is back: indexing resumed ({self._since_outage} records went to the "
                       "fallback while it was unavailable)", level="INFO", force=True)
            self._since_outage = 0
        with self._lock:
            self.counters["indexed"] += len(batch) - len(failures)
            self.counters["failed"] += len(failures)
        if failures:
            self._rejected(failures, {doc_id: line for _, doc_id, line in batch})

    def _rejected(self, failures: list[dict[str, Any]], lines_by_id: Mapping[str, str]) -> None:
        lines: list[str] = []
        for info in failures:
            lines.append(_note_line("WARNING", f"elasticsearch log tier: a record was not indexed (status "
                                    f"{_status(info)}: {_reason(info)}); it follows on the next line", "rejected"))
            lines.append(lines_by_id.get(str(_body(info).get("_id")), json.dumps(_body(info).get("data"))))
        with self._lock:
            self.counters["fallback"] += len(failures)
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


def _line(record: Any) -> str:
    """``json_line(record)``, computed once when several of this process's tiers write the same record (the file
    tier stores it under the same key)."""
    line = record.get("_bananas_json_line")
    if line is None:
        line = record["_bananas_json_line"] = json_line(record)
    return line  # type: ignore[no-any-return]


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


def _reason(info: Mapping[str, Any]) -> str:
    error = _body(info).get("error")
    if isinstance(error, Mapping):
        return f"{error.get('type', 'error')}: {error.get('reason', '')}".strip()
    return str(error or "unknown error")
