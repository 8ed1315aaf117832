"""A point-in-time copy of one worker process's metrics, and the merge of several (``--processes N``).

A :class:`Snapshot` is plain data (JSON-able): the sampler duty builds one every second in the worker's event
loop, the HTTP endpoint renders the newest one, and a child of a supervisor also writes it to a file in the
supervisor's per-run directory (see :mod:`bananas.metrics.multiprocess`), where :func:`merge` adds up every child.

Merging keeps Prometheus counters monotonic across child restarts without counting anything twice: each child
process writes its own file (named by pid and a random token), a restarted child starts a new file from zero, and
the file of a dead child stays with its last counts. Counters and histograms are summed over every file; gauges
(running jobs, utilization, readiness) come from live children only; queue depths and the number of live workers
are global facts every child sees, so the freshest live child's values are taken, never a sum.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import attrs

__all__ = ["PoolSample", "Snapshot", "merge"]


@attrs.frozen
class PoolSample:
    """One pool at the time of a snapshot.

    Attributes:
        concurrency: Its job slots.
        busy: Jobs running now.
        busy_seconds: Busy slot-seconds since the pool started (a counter).
        window_busy: Busy slot-seconds during the utilization window.
        window_slots: Slot-seconds the window offered (``concurrency × window``).
    """

    concurrency: int
    busy: int
    busy_seconds: float
    window_busy: float
    window_slots: float

    @property
    def utilization(self) -> float:
        return self.window_busy / self.window_slots if self.window_slots > 0 else 0.0


HistRow = tuple[str, str, str, tuple[int, ...], float, int]
"""``(job, priority, queue, bucket counts (not cumulative, +Inf last), sum, count)``."""


@attrs.frozen
class Snapshot:
    """The metrics of one worker process (or the merge of several), as the endpoint renders them."""

    pid: int = 0
    taken_at: float = 0.0
    started_at: float = 0.0
    counts: tuple[tuple[str, str, str, str, int], ...] = ()
    durations: tuple[HistRow, ...] = ()
    waits: tuple[HistRow, ...] = ()
    pools: dict[str, PoolSample] = attrs.field(factory=dict)
    processed: int = 0
    failures: int = 0
    window_processed: int = 0
    window_failures: int = 0
    depths: tuple[tuple[str, str, int], ...] = ()
    workers_alive: int | None = None
    ready: bool = False
    reason: str = "starting"
    processes: int = 1

    @property
    def utilization(self) -> float:
        """Busy slot-seconds / offered slot-seconds of every pool over the utilization window."""
        offered = sum(p.window_slots for p in self.pools.values())
        return sum(p.window_busy for p in self.pools.values()) / offered if offered > 0 else 0.0

    @property
    def error_rate(self) -> float:
        """Failures / processed over the rate window (0.0 when nothing was processed)."""
        return self.window_failures / self.window_processed if self.window_processed else 0.0

    def to_json(self) -> str:
        data = attrs.asdict(self, recurse=False)
        data["pools"] = {name: attrs.asdict(pool) for name, pool in self.pools.items()}
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        data: dict[str, Any] = json.loads(text)
        data["pools"] = {name: PoolSample(**pool) for name, pool in data.get("pools", {}).items()}
        for key in ("counts", "depths"):
            data[key] = tuple(tuple(row) for row in data.get(key, ()))
        for key in ("durations", "waits"):
            data[key] = tuple((*row[:3], tuple(row[3]), row[4], row[5]) for row in data.get(key, ()))
        known = {field.name for field in attrs.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def _sum_hists(rows: Iterable[HistRow]) -> tuple[HistRow, ...]:
    merged: dict[tuple[str, str, str], tuple[list[int], float, int]] = {}
    for job, priority, queue, buckets, total, count in rows:
        key = (job, priority, queue)
        if key not in merged:
            merged[key] = ([0] * len(buckets), 0.0, 0)
        acc, acc_sum, acc_count = merged[key]
        for i, n in enumerate(buckets):
            acc[i] += n
        merged[key] = (acc, acc_sum + total, acc_count + count)
    return tuple((*key, tuple(acc), total, count) for key, (acc, total, count) in sorted(merged.items()))


def merge(snapshots: Iterable[Snapshot], live: Iterable[int]) -> Snapshot:
    """One snapshot for a supervisor's children: counters of every snapshot, gauges of the ``live`` pids only."""
    every = list(snapshots)
    alive = set(live)
    current = [snap for snap in every if snap.pid in alive]
    counts: dict[tuple[str, str, str, str], int] = {}
    for snap in every:
        for job, priority, queue, status, n in snap.counts:
            key = (job, priority, queue, status)
            counts[key] = counts.get(key, 0) + n
    pools: dict[str, PoolSample] = {}
    for snap in current:
        for name, pool in snap.pools.items():
            had = pools.get(name)
            pools[name] = pool if had is None else PoolSample(
                had.concurrency + pool.concurrency, had.busy + pool.busy, had.busy_seconds + pool.busy_seconds,
                had.window_busy + pool.window_busy, had.window_slots + pool.window_slots)
    freshest = max(current, key=lambda snap: snap.taken_at, default=None)
    reasons = [f"pid {snap.pid}: {snap.reason}" for snap in current if not snap.ready]
    return Snapshot(
        pid=0,
        taken_at=freshest.taken_at if freshest else 0.0,
        started_at=min((snap.started_at for snap in every), default=0.0),
        counts=tuple((*key, n) for key, n in sorted(counts.items())),
        durations=_sum_hists(row for snap in every for row in snap.durations),
        waits=_sum_hists(row for snap in every for row in snap.waits),
        pools=pools,
        processed=sum(snap.processed for snap in every),
        failures=sum(snap.failures for snap in every),
        window_processed=sum(snap.window_processed for snap in current),
        window_failures=sum(snap.window_failures for snap in current),
        depths=freshest.depths if freshest else (),
        workers_alive=freshest.workers_alive if freshest else None,
        ready=any(snap.ready for snap in current),
        reason="; ".join(reasons) if reasons or current else "no worker process is running",
        processes=len(current),
    )
