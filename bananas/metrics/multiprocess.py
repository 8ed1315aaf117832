"""``--processes N``: the children write snapshots, the supervisor serves them merged on one port.

The supervisor makes a per-run directory (removed when it exits) and gives it to its children in
``BANANAS_METRICS_DIR``. Each child writes its :class:`~bananas.metrics.snapshot.Snapshot` there every second (and
once more when it stops) as ``<pid>-<token>.json``, replacing the file atomically. At each scrape the supervisor
reads every file and :func:`~bananas.metrics.snapshot.merge` sums them: a restarted child writes a new file from
zero while the dead child's file keeps its last counts, so counters never go back and nothing is counted twice
(at most the last second of a SIGKILLed child's counts is missing). Gauges come from live children only.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from loguru import logger

from bananas.metrics.config import DIR_ENV
from bananas.metrics.exposition import render
from bananas.metrics.http import Endpoint
from bananas.metrics.snapshot import Snapshot, merge

__all__ = ["SnapshotFile", "read_snapshots", "supervisor_endpoint"]

STALE = 10.0
"""A live child whose snapshot is older than this many seconds is not ready (its loop is stuck)."""

log = logger.bind(component="supervisor", log_source="bananas_internal")


class SnapshotFile:
    """The file one child process writes its snapshots to."""

    def __init__(self, directory: str) -> None:
        self.path = Path(directory) / f"{os.getpid()}-{secrets.token_hex(4)}.json"

    def write(self, snapshot: Snapshot) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(snapshot.to_json(), encoding="utf-8")
        os.replace(tmp, self.path)


def read_snapshots(directory: str | Path) -> list[Snapshot]:
    """Every child's newest snapshot in ``directory`` (files being replaced or half-written are skipped)."""
    out = []
    for path in Path(directory).glob("*.json"):
        try:
            out.append(Snapshot.from_json(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return out


@contextmanager
def supervisor_endpoint(bind: str, port: int, pids: Callable[[], list[int]]) -> Iterator[dict[str, str]]:
    """Serve the merged snapshots of the children on ``bind:port`` while the block runs; yields the environment the
    children need (``BANANAS_METRICS_DIR``). ``port`` 0: no endpoint, no directory, an empty environment."""
    if not port:
        yield {}
        return
    directory = tempfile.mkdtemp(prefix="bananas-metrics-")
    main = threading.main_thread()

    def merged() -> Snapshot:
        return merge(read_snapshots(directory), pids())

    def healthz() -> tuple[bool, str]:
        return (True, "ok: supervisor running") if main.is_alive() else (False, "supervisor stopped")

    def readyz() -> tuple[bool, str]:
        snap = merged()
        if snap.processes == 0:
            return False, "no worker process is running"
        age = time.time() - snap.taken_at
        if age > STALE:
            return False, f"no worker snapshot for {age:.0f}s"
        return (True, f"ok: {snap.processes} worker process(es)") if snap.ready else (False, snap.reason)

    try:
        endpoint: Endpoint | None = Endpoint(bind, port, lambda: render(merged), healthz, readyz).start()
        log.info("metrics and health endpoint on http://{bind}:{port} (/metrics, /healthz, /readyz) for every worker "
                 "process", bind=bind, port=port)
    except OSError as exc:
        endpoint = None
        log.error("metrics endpoint not started on {bind}:{port}: {error}", bind=bind, port=port, error=exc)
    try:
        yield {DIR_ENV: directory}
    finally:
        if endpoint is not None:
            endpoint.stop()
        shutil.rmtree(directory, ignore_errors=True)
