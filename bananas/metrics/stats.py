"""In-process job statistics of one worker process: counters, histograms, busy slot-seconds.

Everything here is updated from the worker's event loop only (settlement and the pools' job tasks), so nothing
takes a lock on the hot path: a settled job costs one dict update per counter and one bucket search per
histogram. Readers in other threads (the HTTP endpoint) never read these objects directly: the sampler duty copies
them into an immutable :class:`~bananas.metrics.snapshot.Snapshot` every second (see
:mod:`bananas.metrics.service`).
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable

from bananas.job import Job

__all__ = [
    "CANCELLED",
    "COMPLETED",
    "DEAD",
    "EXPIRED",
    "DURATION_BUCKETS",
    "FAILED",
    "RETRIED",
    "STATUSES",
    "WAIT_BUCKETS",
    "Histogram",
    "JobStats",
    "PoolUsage",
    "percentile",
]

COMPLETED, FAILED, RETRIED, DEAD = "completed", "failed", "retried", "dead"
CANCELLED, EXPIRED = "cancelled", "expired"
STATUSES = (COMPLETED, FAILED, RETRIED, DEAD, CANCELLED, EXPIRED)
"""The ``status`` label of ``bananas_jobs_total``: a handler run that succeeded (acked) or failed (each attempt),
a retry scheduled, a job moved to the dead letters (after its last retry, malformed, or without a handler here),
a job whose run a worker stopped or skipped after ``client.cancel``, a job dropped unrun past its ``expires``."""

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Upper bounds (seconds) of ``bananas_job_duration_seconds``; ``+Inf`` is implied."""
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
"""Upper bounds (seconds) of ``bananas_job_wait_seconds``; ``+Inf`` is implied."""

RECENT = 10_000
"""Durations kept for the percentiles of the ``System metrics`` line (the newest ones of the interval)."""

Labels = tuple[str, str, str]
"""``(job, priority, queue)``."""


class Histogram:
    """Bucket counts (one per bound plus ``+Inf``, not cumulative), their sum and count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by the nearest-rank method; 0.0 for no values."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = min(max(math.ceil(q * len(ordered) - 1e-9), 1), len(ordered))
    return ordered[rank - 1]


class PoolUsage:
    """Busy slot-seconds of one pool: the time integral of its running jobs, advanced at each start and end."""

    __slots__ = ("busy", "concurrency", "integral", "last")

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.busy = 0
        self.integral = 0.0
        self.last = time.monotonic()

    def _advance(self, now: float) -> None:
        self.integral += self.busy * (now - self.last)
        self.last = now

    def enter(self) -> None:
        """A job took a slot."""
        self._advance(time.monotonic())
        self.busy += 1

    def leave(self, _: object = None) -> None:
        """A job freed its slot (usable as a task done-callback)."""
        self._advance(time.monotonic())
        self.busy -= 1

    def busy_seconds(self, now: float) -> float:
        """Busy slot-seconds since the pool started, up to ``now`` (monotonic)."""
        return self.integral + self.busy * (now - self.last)


class JobStats:
    """The counters and histograms of one worker process, labelled by job name, priority and queue."""

    def __init__(self, pools: dict[str, int] | None = None) -> None:
        self.counts: dict[tuple[str, str, str, str], int] = {}
        self.durations: dict[Labels, Histogram] = {}
        self.waits: dict[Labels, Histogram] = {}
        self._pairs: dict[Labels, tuple[Histogram, Histogram]] = {}  # (durations, waits) by labels, one lookup
        self.recent: deque[float] = deque(maxlen=RECENT)  # durations since the last System metrics line
        self.pools = {pool_id: PoolUsage(n) for pool_id, n in (pools or {}).items()}
        self.completed = self.failed = self.retried = self.dead = 0
        self.rejected = 0  # no handler ran (malformed, no handler here); the caller counts them dead too
        self.duration_sum = 0.0  # seconds, every handler run
        self.runs = 0

    def pool(self, pool_id: str, concurrency: int = 1) -> PoolUsage:
        usage = self.pools.get(pool_id)
        if usage is None:
            usage = self.pools[pool_id] = PoolUsage(concurrency)
        return usage

    def count(self, job: str, priority: str, queue: str, status: str) -> None:
        """One outcome (``status`` one of :data:`STATUSES`); ``priority`` may be the job's ``Priority`` itself."""
        key = (job, priority, queue, status)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        if status == COMPLETED:
            self.completed += 1
        elif status == FAILED:
            self.failed += 1
        elif status == RETRIED:
            self.retried += 1
        elif status == DEAD:
            self.dead += 1

    def ran(self, job: str, priority: str, queue: str, duration: float, wait: float | None) -> None:
        """A handler ran for ``duration`` seconds after the job waited ``wait`` seconds in its queue."""
        durations, waits = self._series((job, priority, queue))
        durations.observe(duration)
        self.recent.append(duration)
        self.duration_sum += duration
        self.runs += 1
        if wait is not None:
            waits.observe(max(wait, 0.0))

    def job_ran(self, job: Job, queue: str, duration: float) -> None:
        """:meth:`ran` for a decoded job, inlined (the per-job path): it became ready at its enqueue time, or later
        at its eta or retry time (``scheduled_at``). The priority is the ``Priority`` itself: a ``StrEnum`` hashes
        and compares like its value, and ``.value`` costs an enum descriptor call per job."""
        labels = (job.name, job.priority, queue)
        pair = self._pairs.get(labels)
        if pair is None:
            pair = self._series(labels)
        hist, waits = pair
        hist.counts[bisect_left(DURATION_BUCKETS, duration)] += 1
        hist.sum += duration
        hist.count += 1
        self.recent.append(duration)
        self.duration_sum += duration
        self.runs += 1
        ready = job.scheduled_at or job.enqueued_at
        started = job.started_at
        if ready and started:
            wait = started - ready if started > ready else 0.0
            waits.counts[bisect_left(WAIT_BUCKETS, wait)] += 1
            waits.sum += wait
            waits.count += 1

    def _series(self, labels: Labels) -> tuple[Histogram, Histogram]:
        pair = self._pairs.get(labels)
        if pair is None:
            key = (str(labels[0]), str(labels[1]), str(labels[2]))  # plain strings in snapshots
            pair = self._pairs[labels] = (self.durations.setdefault(key, Histogram(DURATION_BUCKETS)),
                                          self.waits.setdefault(key, Histogram(WAIT_BUCKETS)))
        return pair

    @property
    def processed(self) -> int:
        """Settled outcomes: handler runs that succeeded or failed, and jobs no handler ran for."""
        return self.completed + self.failed + self.rejected

    @property
    def failures(self) -> int:
        """Handler runs that failed and jobs no handler ran for (the numerator of the error rate)."""
        return self.failed + self.rejected

    def take_recent(self) -> list[float]:
        """The durations since the last call (for one ``System metrics`` line)."""
        recent = list(self.recent)
        self.recent.clear()
        return recent
