"""The Prometheus text format of a :class:`~bananas.metrics.snapshot.Snapshot` (``/metrics``), with
``prometheus_client``.

The worker counts in plain Python objects (:mod:`bananas.metrics.stats`); a custom collector turns the newest
snapshot into metric families at scrape time, so a settled job never touches ``prometheus_client`` (whose metric
objects take a lock per update). Every metric is listed in docs/OBSERVABILITY.md ("## Metrics").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from bananas.metrics.snapshot import HistRow, Snapshot
from bananas.metrics.stats import DURATION_BUCKETS, WAIT_BUCKETS

__all__ = ["CONTENT_TYPE", "SnapshotCollector", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

JOB_LABELS = ["job", "priority", "queue"]


def _histogram(name: str, doc: str, rows: tuple[HistRow, ...], bounds: tuple[float, ...]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=JOB_LABELS)
    edges = [*(repr(float(b)) for b in bounds), "+Inf"]
    for job, priority, queue, counts, total, _ in rows:
        running = 0
        buckets = []
        for edge, n in zip(edges, counts, strict=True):
            running += n
            buckets.append((edge, running))
        family.add_metric([job, priority, queue], buckets, total)
    return family


class SnapshotCollector(Collector):
    """Collects the snapshot ``source()`` returns at each scrape."""

    def __init__(self, source: Callable[[], Snapshot]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        snap = self.source()
        jobs = CounterMetricFamily(
            "bananas_jobs", "Jobs by outcome: completed and failed handler runs, retries scheduled, dead letters.",
            labels=["job", "priority", "queue", "status"])
        for job, priority, queue, status, n in snap.counts:
            jobs.add_metric([job, priority, queue, status], n)
        yield jobs
        yield _histogram("bananas_job_duration_seconds", "Handler run time of each attempt.", snap.durations,
                         DURATION_BUCKETS)
        yield _histogram("bananas_job_wait_seconds", "Time a job waited in its queue before its run started.",
                         snap.waits, WAIT_BUCKETS)
        depth = GaugeMetricFamily("bananas_queue_depth", "Jobs per queue and state (ready, scheduled, running, dead).",
                                  labels=["queue", "priority", "state"])
        for queue, state, n in snap.depths:
            depth.add_metric([queue, _priority_of(queue), state], n)
        yield depth
        yield GaugeMetricFamily("bananas_worker_utilization",
                                "Busy slot-seconds / offered slot-seconds of every pool over the last 10 s (0-1).",
                                value=snap.utilization)
        pool_util = GaugeMetricFamily("bananas_pool_utilization", "Utilization of one pool over the last 10 s (0-1).",
                                      labels=["pool"])
        slots = GaugeMetricFamily("bananas_pool_slots", "Job slots of one pool.", labels=["pool"])
        busy = GaugeMetricFamily("bananas_pool_busy_slots", "Jobs running in one pool now.", labels=["pool"])
        busy_total = CounterMetricFamily("bananas_pool_busy_seconds", "Busy slot-seconds of one pool.",
                                         labels=["pool"])
        for name, pool in sorted(snap.pools.items()):
            pool_util.add_metric([name], pool.utilization)
            slots.add_metric([name], pool.concurrency)
            busy.add_metric([name], pool.busy)
            busy_total.add_metric([name], pool.busy_seconds)
        yield from (pool_util, slots, busy, busy_total)
        yield GaugeMetricFamily("bananas_error_rate",
                                "Failed / processed jobs over the last 60 s (0-1; 0 when nothing was processed).",
                                value=snap.error_rate)
        if snap.workers_alive is not None:
            yield GaugeMetricFamily("bananas_workers_alive", "Worker processes in the broker's worker registry.",
                                    value=snap.workers_alive)
        yield GaugeMetricFamily("bananas_worker_processes", "Worker processes behind this endpoint.",
                                value=snap.processes)
        yield GaugeMetricFamily("bananas_worker_ready", "1 while the worker is ready (see /readyz), else 0.",
                                value=1.0 if snap.ready else 0.0)
        uptime = max(0.0, time.time() - snap.started_at) if snap.started_at else 0.0
        yield GaugeMetricFamily("bananas_worker_uptime_seconds", "Seconds since the worker started.", value=uptime)


def _priority_of(queue: str) -> str:
    """The priority a queue name carries (``high``, ``cpu.high`` → ``high``), or ``""`` for other names."""
    last = queue.rsplit(".", 1)[-1].rsplit(":", 1)[-1]
    return last if last in ("high", "normal", "low") else ""


def render(source: Callable[[], Snapshot]) -> bytes:
    """The Prometheus text exposition of ``source()`` (a fresh registry each time: nothing global)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(source))
    return generate_latest(registry)
