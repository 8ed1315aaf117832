"""The metrics seam of one worker process: the sampler, the ``System metrics`` line, the worker registry
heartbeat, readiness, and the endpoint (see docs/OBSERVABILITY.md).

Counting happens in :mod:`bananas.worker.settlement` (outcomes) and :mod:`bananas.worker.pools` (busy slots) on
:class:`~bananas.metrics.stats.JobStats`. Everything else runs as duties of this process (:meth:`WorkerMetrics.duties`):

- **metrics-sample** (every second): copies the counters into an immutable
  :class:`~bananas.metrics.snapshot.Snapshot` that the endpoint thread renders (in a supervisor's child: also writes
  it to the supervisor's directory, see :mod:`bananas.metrics.multiprocess`);
- **system-metrics** (every ``METRICS_LOG_INTERVAL``): the ``System metrics`` log line;
- **worker-registry** (every :data:`~bananas.metrics.registry.HEARTBEAT` s): publishes this process's
  :class:`~bananas.metrics.registry.WorkerRecord` (broker capability ``worker_registry``); every
  :data:`DEPTH_EVERY`-th time also counts the live workers and reads the queue depths. Its success is the
  readiness probe of the broker.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

from loguru import logger

from bananas.broker_types import fetch_types
from bananas.metrics.config import MetricsConfig
from bananas.metrics.exposition import render
from bananas.metrics.http import Endpoint
from bananas.metrics.logline import system_metrics_fields
from bananas.metrics.multiprocess import SnapshotFile
from bananas.metrics.registry import HEARTBEAT, TTL, PoolRecord, WorkerRecord, bananas_version, decode_records
from bananas.metrics.snapshot import PoolSample, Snapshot
from bananas.worker.context import Duty
from bananas.worker.state import WorkerState, error_text

__all__ = ["LIVENESS_BOUND", "UTILIZATION_WINDOW", "WorkerMetrics"]

UTILIZATION_WINDOW = 10.0
"""Seconds over which ``bananas_worker_utilization`` and the registry's utilization are measured."""
RATE_WINDOW = 60.0
"""Seconds over which ``bananas_error_rate`` and the registry's throughput are measured."""
DEPTH_EVERY = 5
"""Queue depths and the live-worker count are read every this many registry heartbeats (10 s)."""
LIVENESS_BOUND = 2.0
"""``/healthz`` fails when the event loop does not run a callback within this many seconds."""

PENDING = "the first broker probe has not answered yet"

log = logger.bind(component="worker", log_source="bananas_internal")


class WorkerMetrics:
    """Metrics, health and registry of one worker process (built by the worker; started once it runs)."""

    def __init__(self, state: WorkerState, config: MetricsConfig) -> None:
        self.state = state
        self.stats = state.stats
        self.config = config
        self.started_at = time.time()
        self.snapshot = Snapshot(pid=state.info.pid, started_at=self.started_at)
        self.broker_problem: str | None = PENDING
        self.workers_alive: int | None = None
        self.depths: tuple[tuple[str, str, int], ...] = ()
        self._pool_samples: dict[str, deque[tuple[float, float]]] = {}
        self._rate_samples: deque[tuple[float, int, int]] = deque(maxlen=int(RATE_WINDOW) + 2)
        self._last_line = (time.monotonic(), 0.0)  # (when, busy slot-seconds) of the last System metrics line
        self._file = SnapshotFile(config.directory) if config.directory else None
        self._endpoint: Endpoint | None = None
        self._published = False
        self._beats = 0
        self._rendered: tuple[Snapshot | None, bytes] = (None, b"")

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Serve the endpoint (unless the port is 0 or a supervisor serves it); a taken port is logged, not fatal."""
        self.sample()
        if not self.config.port or self._file is not None:
            return
        try:
            self._endpoint = Endpoint(self.config.bind, self.config.port, self.exposition,
                                      self.healthz, self.readyz).start()
        except OSError as exc:
            log.error("metrics endpoint not started on {bind}:{port}: {error}; the worker runs without it",
                      bind=self.config.bind, port=self.config.port, error=exc)
            return
        log.info("metrics and health endpoint on http://{bind}:{port} (/metrics, /healthz, /readyz)",
                 bind=self.config.bind, port=self.config.port)

    async def stop(self) -> None:
        """Leave the registry, write the last snapshot, stop the endpoint (bounded: never holds up the stop)."""
        registry = self.state._caps.worker_registry
        if registry is not None and self._published:
            try:
                async with asyncio.timeout(2.0):
                    await registry.remove_worker(self.state.id)
            except Exception as exc:  # noqa: BLE001 - the record expires by itself
                log.warning("could not leave the worker registry ({error}); the record expires in {ttl:g}s",
                            error=error_text(exc) if str(exc) else "no reply", ttl=TTL)
        self.sample()
        if self._endpoint is not None:
            self._endpoint.stop()

    def duties(self) -> list[Duty]:
        return [
            Duty("metrics-sample", 1.0, self._sample_duty),
            Duty("system-metrics", self.config.log_interval, self._log_duty, at_start=False),
            Duty("worker-registry", HEARTBEAT, self._registry_duty),
        ]

    # -- probes (called from the endpoint thread) ------------------------------------------------------------------
    def exposition(self) -> bytes:
        """``/metrics``: the newest snapshot rendered, once per snapshot (scrapers and HA pairs share it)."""
        snap, cached = self._rendered
        if snap is not self.snapshot:
            snap = self.snapshot
            cached = render(lambda: snap)
            self._rendered = (snap, cached)
        return cached

    def healthz(self) -> tuple[bool, str]:
        loop = self.state._loop
        if loop is None or loop.is_closed():
            return False, "event loop not running"
        answered = threading.Event()
        try:
            loop.call_soon_threadsafe(answered.set)
        except RuntimeError:
            return False, "event loop closed"
        if not answered.wait(LIVENESS_BOUND):
            return False, f"event loop did not answer within {LIVENESS_BOUND:g}s"
        return True, "ok"

    def readyz(self) -> tuple[bool, str]:
        return self._readiness()

    def _readiness(self) -> tuple[bool, str]:
        state = self.state
        if not state._started.is_set():
            return False, "starting: waiting for the broker"
        if state._stop_requested():
            return False, "stopping: taking no new jobs"
        if self.broker_problem == PENDING:
            return False, f"starting: {PENDING}"
        if self.broker_problem is not None:
            return False, f"broker unreachable: {self.broker_problem}"
        heartbeat = state._heartbeat
        if state._paused or (heartbeat is not None and not heartbeat.healthy()):
            problem = heartbeat.problem if heartbeat is not None else None
            return False, f"not taking jobs: leases cannot be renewed ({problem or 'unknown'})"
        return True, "ok"

    # -- the sampler -----------------------------------------------------------------------------------------------
    async def _sample_duty(self, _: object) -> None:
        self.sample()

    def sample(self) -> Snapshot:
        """Copy the counters into a new snapshot (event loop thread only)."""
        stats, now, wall = self.stats, time.monotonic(), time.time()
        pools: dict[str, PoolSample] = {}
        for pool_id, usage in stats.pools.items():
            busy_seconds = usage.busy_seconds(now)
            window = self._pool_samples.setdefault(pool_id, deque([(now, busy_seconds)]))
            window.append((now, busy_seconds))
            while len(window) > 2 and now - window[1][0] >= UTILIZATION_WINDOW:
                window.popleft()
            then, before = window[0]
            pools[pool_id] = PoolSample(usage.concurrency, usage.busy, busy_seconds, busy_seconds - before,
                                        usage.concurrency * (now - then))
        processed, failures = stats.processed, stats.failures
        rates = self._rate_samples
        rates.append((now, processed, failures))
        while len(rates) > 2 and now - rates[1][0] >= RATE_WINDOW:
            rates.popleft()
        ready, reason = self._readiness()
        self.snapshot = snap = Snapshot(
            pid=self.state.info.pid,
            taken_at=wall,
            started_at=self.started_at,
            counts=tuple((job, str(priority), queue, status, n)
                         for (job, priority, queue, status), n in list(stats.counts.items())),
            durations=tuple((*k, tuple(h.counts), h.sum, h.count) for k, h in list(stats.durations.items())),
            waits=tuple((*k, tuple(h.counts), h.sum, h.count) for k, h in list(stats.waits.items())),
            pools=pools,
            processed=processed,
            failures=failures,
            window_processed=processed - rates[0][1],
            window_failures=failures - rates[0][2],
            depths=self.depths,
            workers_alive=self.workers_alive,
            ready=ready,
            reason=reason,
        )
        if self._file is not None:
            try:
                self._file.write(snap)
            except OSError as exc:
                log.warning("could not write the metrics snapshot for the supervisor: {error}", error=exc)
        return snap

    # -- the System metrics line -----------------------------------------------------------------------------------
    async def _log_duty(self, _: object) -> None:
        now = time.monotonic()
        busy = sum(usage.busy_seconds(now) for usage in self.stats.pools.values())
        slots = sum(usage.concurrency for usage in self.stats.pools.values())
        then, before = self._last_line
        self._last_line = (now, busy)
        offered = slots * (now - then)
        utilization = (busy - before) / offered if offered > 0 else 0.0
        fields = system_metrics_fields(self.stats, utilization, time.time() - self.started_at, self.state.running())
        log.bind(**fields).info("System metrics")

    # -- the registry heartbeat, queue depths, the broker probe -----------------------------------------------------
    def record(self) -> WorkerRecord:
        info, snap = self.state.info, self.snapshot
        pools = tuple(
            PoolRecord(p.pool_id, p.queues, p.concurrency, snap.pools[p.pool_id].busy if p.pool_id in snap.pools
                       else 0, round(snap.pools[p.pool_id].utilization, 4) if p.pool_id in snap.pools else 0.0)
            for p in info.pools)
        return WorkerRecord(
            id=info.process_id, host=info.host, pid=info.pid, mode=info.mode, pools=pools,
            jobs_running=self.state.running(), utilization=round(snap.utilization, 4), started_at=self.started_at,
            heartbeat_at=time.time(), version=bananas_version(), jobs_processed=snap.processed,
            throughput=snap.window_processed, scheduler=info.scheduler, job_types=self._fetched_types())

    def _fetched_types(self) -> tuple[str, ...] | None:
        """The job types this worker's pools fetch (``None``: every type, or a broker without typed fetches)."""
        if not self.state._caps.typed_fetch:
            return None
        found: set[str] = set()
        for pool in self.state.plan.pools:
            types = fetch_types(pool.job_types, self.state.context.handlers, self.state.unknown_job_types)
            if types is None:
                return None
            found |= types
        return tuple(sorted(found))

    async def _registry_duty(self, _: object) -> None:
        broker, caps = self.state._broker, self.state._caps
        assert broker is not None
        try:
            async with asyncio.timeout(max(HEARTBEAT * 2, 5.0)):
                registry = caps.worker_registry
                # The deployment-wide reads (every record, every queue) only every DEPTH_EVERY-th beat: each worker
                # makes them, so their cost grows with workers × queues. Without a registry they are the probe.
                survey = registry is None or self._beats % DEPTH_EVERY == 0 or self.broker_problem is not None
                self._beats += 1
                if registry is not None:
                    await registry.publish_worker(self.state.id, self.record().encode(), TTL)
                    self._published = True
                    if survey:
                        self.workers_alive = len(decode_records(await registry.list_workers()))
                if survey:
                    queues = await caps.admin.known_queues() if caps.admin is not None else self._plan_queues()
                    depths = await broker.depths(queues) if queues else {}
        except Exception as exc:  # noqa: BLE001 - an outage makes the worker unready, never kills the duty
            problem = error_text(exc) if str(exc) else f"{type(exc).__name__}: no reply"
            if self.broker_problem is None:
                log.warning("broker probe failed: {error}; /readyz answers 503 until it works again", error=problem)
            self.broker_problem = problem
            return
        if self.broker_problem is not None and self.broker_problem != PENDING:
            log.info("broker probe works again; ready")
        self.broker_problem = None
        if survey:
            self.depths = tuple((queue, state, getattr(depth, state)) for queue, depth in sorted(depths.items())
                                for state in ("ready", "scheduled", "running", "dead"))

    def _plan_queues(self) -> list[str]:
        return sorted({queue for pool in self.state.plan.pools for queue in pool.queues})
