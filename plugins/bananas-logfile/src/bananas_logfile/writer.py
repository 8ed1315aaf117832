"""The file tier's sink: the call site only appends the record to a bounded queue; one writer thread formats
(:func:`bananas.plugin_api.json_line`), writes, rotates and hands rotated files to a housekeeping thread (gzip,
retention).

Why not loguru's own file sink: it writes on the caller's thread (or, with ``enqueue=True``, pickles every message
through a multiprocessing pipe), cannot split one tier into a file per component, and keeps files by count or by
age, not both. The queue is bounded (:data:`QUEUE_SIZE` records): when the disk cannot keep up, new records are
dropped and counted rather than growing memory or blocking the event loop, and the next line written says how many.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bananas.plugin_api import json_line
from bananas_logfile.rotation import Retention, RotatingFile, compress

__all__ = ["QUEUE_SIZE", "FileTier"]

QUEUE_SIZE = 10_000
"""Records waiting for the writer thread at most (the seed's 10K buffer)."""

BATCH = 2_000
"""Records the writer formats and writes before it flushes (and lets the logging thread have the GIL back): with
the kernel's route a handler can log ~100,000 records a second from one thread, and a writer that flushed every 500
fell behind in such a burst until its queue was full."""

POLL = 0.1
"""Seconds the idle writer sleeps before it looks at the queue again (how late a line may reach the file)."""

_COMPONENT = re.compile(r"[^a-z0-9_-]")


class FileTier:
    """One process's file tier: ``sink`` for loguru, ``close`` to drain, flush and finish compression.

    :param path: ``LOG_FILE_PATH``; the process writes ``<stem>-<pid><suffix>`` next to it, or with
        ``per_component`` ``<dir>/<component>/<component>-<pid><suffix>``.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        max_backups: int = 10,
        max_age_days: float = 30,
        compress: bool = True,
        per_component: bool = False,
        queue_size: int = QUEUE_SIZE,
        pid: int | None = None,
    ) -> None:
        self.path = path
        self.pid = os.getpid() if pid is None else pid
        self.max_bytes = max_bytes
        self.max_backups, self.max_age_days = max_backups, max_age_days
        self.compress = compress
        self.per_component = per_component
        self.queue_size = queue_size
        self._high_water = max(1, queue_size // 4)
        self.dropped = 0
        self._reported = 0
        self._queue: deque[Mapping[str, Any]] = deque()
        self._wake = threading.Event()
        self._idle = False
        self._closing = False
        self._files: dict[str, RotatingFile] = {}
        self._housekeeper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bananas-logfile-housekeeping")
        self.file_for("worker" if per_component else "")  # fail now (permissions) rather than in the thread
        self._thread = threading.Thread(target=self._run, name="bananas-logfile-writer", daemon=True)
        self._thread.start()

    # -- call site ---------------------------------------------------------------------------------------------------

    def sink(self, message: Any) -> None:
        """loguru's sink: queue ``message.record``; never blocks, never formats."""
        self.put(message.record)

    def put(self, record: Mapping[str, Any]) -> None:
        """Queue one record (the kernel's route calls this directly: ``SinkConfig.record_sink``)."""
        if len(self._queue) >= self.queue_size:
            self.dropped += 1
            return
        self._queue.append(record)
        if self._idle and len(self._queue) >= self._high_water:
            self._wake.set()

    def close(self) -> None:
        """Write everything queued, flush, and wait for pending compression and retention."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        self._thread.join()
        for file in self._files.values():
            file.close()
        self._housekeeper.shutdown(wait=True)

    # -- writer thread -----------------------------------------------------------------------------------------------

    def file_for(self, component: str) -> RotatingFile:
        key = component
        file = self._files.get(key)
        if file is None:
            suffix = self.path.suffix or ".log"
            if self.per_component:
                name = _COMPONENT.sub("_", component.lower()) or "other"
                directory, base = self.path.parent / name, name
            else:
                directory, base = self.path.parent, self.path.name[: -len(self.path.suffix) or None]
            retention = Retention(directory, base, suffix, self.pid, self.max_backups, self.max_age_days)
            file = RotatingFile(
                directory / f"{base}-{self.pid}{suffix}",
                self.max_bytes,
                lambda rotated: self._housekeeper.submit(self._after_rotation, rotated, retention),
            )
            self._files[key] = file
            self._housekeeper.submit(self._retain, retention)
        return file

    def _run(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                if self._closing:
                    return
                self._idle = True
                self._wake.wait(POLL)  # woken early only by a filling queue or close(): no thread switch per record
                self._wake.clear()
                self._idle = False
                continue
            touched: set[RotatingFile] = set()
            for _ in range(min(BATCH, len(queue))):
                record = queue.popleft()
                try:
                    line = json_line(record) + "\n"  # built once per record, shared with the other tiers
                    component = str(record["extra"].get("component") or "worker") if self.per_component else ""
                    file = self.file_for(component)
                    file.write(line.encode("utf-8"))
                    touched.add(file)
                except Exception as exc:  # a full disk must not kill the thread: say so once per batch
                    _stderr(f"bananas-logfile: could not write {self.path}: {exc}")
                    break
            if self.dropped != self._reported:
                touched.add(self._report_drops())
            for file in touched:
                file.flush()

    def _report_drops(self) -> RotatingFile:
        count, self._reported = self.dropped - self._reported, self.dropped
        note = {
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "level": "WARNING",
            "msg": f"file log tier: {count} records dropped, the writer could not keep up (queue of "
            f"{self.queue_size} full)",
            "component": "worker",
            "log_source": "bananas_internal",
            "dropped": count,
        }
        file = self.file_for("worker" if self.per_component else "")
        file.write((json.dumps(note, separators=(",", ":")) + "\n").encode("utf-8"))
        return file

    def _after_rotation(self, path: Path, retention: Retention) -> None:
        try:
            if self.compress:
                compress(path)
            retention.apply()
        except Exception as exc:
            _stderr(f"bananas-logfile: could not compress or clean up after {path}: {exc}")

    @staticmethod
    def _retain(retention: Retention) -> None:
        try:
            retention.apply()
        except Exception as exc:
            _stderr(f"bananas-logfile: retention in {retention.directory} failed: {exc}")


def _stderr(text: str) -> None:
    try:
        sys.stderr.write(text + "\n")
    except Exception:  # stderr closed at interpreter exit
        pass
