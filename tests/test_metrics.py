"""Worker metrics on the memory broker: counters by outcome, utilization, the System metrics line, the endpoint,
the worker registry, and the merge of several processes' snapshots."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from loguru import logger

import bananas
from bananas import Bananas
from bananas.broker import Envelope
from bananas.metrics import stats as stats_module
from bananas.metrics.exposition import render
from bananas.metrics.logline import format_duration, format_percent
from bananas.metrics.registry import WorkerRecord, decode_records
from bananas.metrics.snapshot import PoolSample, Snapshot, merge
from bananas.metrics.stats import DURATION_BUCKETS, JobStats, PoolUsage, percentile
from bananas.worker_mode import PoolPlan, WorkerPlan


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text exposition (labels must match exactly)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def plan(app: Bananas, concurrency: int = 4) -> WorkerPlan:
    queues = app.router.queues(priorities=["high", "normal", "low"])
    return WorkerPlan(mode="test", pools=(PoolPlan("main", concurrency, queues, worker_id="main-1"),),
                      scheduler_interval=0.1)


# -- counting in settlement -----------------------------------------------------------------------------------------
def test_outcomes_are_counted_by_job_priority_queue_and_status(make_app, run_worker, wait_for) -> None:
    # Given 3 jobs that succeed, 2 that fail twice (one retry, then dead), 2 malformed bodies, 1 without a handler
    # (taken and dead-lettered: unknown_job_types = "dead-letter"; by default it would wait for a worker with one)
    app = make_app(overrides={"worker.unknown_job_types": "dead-letter"})

    @app.job("ok")
    def ok() -> None:
        return None

    @app.job("boom", max_retries=1)
    def boom() -> None:
        raise RuntimeError("no")

    for _ in range(3):
        app.enqueue("ok", priority="high")
    for _ in range(2):
        app.enqueue("boom")
    app.enqueue("ghost")  # no handler in this worker

    async def garbage() -> None:
        bad = [Envelope("bad-1", "normal", b"\x00junk"), Envelope("bad-2", "normal", b"{")]
        await (await app.broker()).enqueue(bad)

    app.run_sync(garbage)

    # When a worker settles them all
    worker = run_worker(app, plan(app))
    stats = worker.stats
    wait_for(lambda: stats.dead == 5, timeout=15)

    # Then every outcome is counted once, with its labels; malformed and no-handler jobs are dead and failures
    counts = {(job, priority, queue, status): n for (job, priority, queue, status), n in stats.counts.items()}
    assert counts == {
        ("ok", "high", "high", "completed"): 3,
        ("boom", "normal", "normal", "failed"): 4,
        ("boom", "normal", "normal", "retried"): 2,
        ("boom", "normal", "normal", "dead"): 2,
        ("ghost", "normal", "normal", "dead"): 1,
        ("<malformed>", "unknown", "normal", "dead"): 2,
    }
    assert (stats.completed, stats.failed, stats.rejected) == (3, 4, 3)
    assert stats.processed == 10 and stats.failures == 7
    assert stats.runs == 7  # handler runs: durations observed for each, none for the rejected
    assert sum(h.count for h in stats.waits.values()) == 7


def test_queue_wait_is_measured_from_enqueue_to_start(make_app, run_worker, wait_for) -> None:
    # Given a job that waited about 0.3 s in its queue before a worker started
    app = make_app()

    @app.job("ok")
    def ok() -> None:
        return None

    app.enqueue("ok")
    time.sleep(0.3)

    # When a worker runs it
    worker = run_worker(app, plan(app))
    wait_for(lambda: worker.stats.completed == 1)

    # Then the wait histogram saw one wait of at least 0.3 s
    (hist,) = worker.stats.waits.values()
    assert hist.count == 1 and 0.3 <= hist.sum < 5.0


# -- utilization --------------------------------------------------------------------------------------------------
def test_pool_usage_integrates_busy_slots_over_time(monkeypatch) -> None:
    # Given a pool of 4 slots on a controlled clock
    now = [100.0]
    monkeypatch.setattr(stats_module.time, "monotonic", lambda: now[0])
    usage = PoolUsage(4)

    # When two jobs run for 10 s and one more for the last 5 s of those
    usage.enter()
    usage.enter()
    now[0] = 105.0
    usage.enter()
    now[0] = 110.0
    for _ in range(3):
        usage.leave()

    # Then the pool was busy 2×10 + 5 = 25 slot-seconds of 40 offered
    assert usage.busy_seconds(110.0) == pytest.approx(25.0)
    assert usage.busy == 0


def test_half_of_the_slots_busy_reads_about_half_utilization(make_app, run_worker, wait_for) -> None:
    # Given a 4-slot worker with 2 jobs that sleep for 5 s
    app = make_app()

    @app.job("nap")
    async def nap() -> None:
        await asyncio.sleep(5.0)

    worker = run_worker(app, plan(app, concurrency=4))
    app.enqueue("nap")
    app.enqueue("nap")
    usage = worker.stats.pools["main-1"]
    wait_for(lambda: usage.busy == 2)

    # When the busy slot-seconds are read one second apart while both run
    t1 = time.monotonic()
    b1 = usage.busy_seconds(t1)
    time.sleep(1.0)
    t2 = time.monotonic()
    b2 = usage.busy_seconds(t2)

    # Then the pool was busy half of the slot-seconds it offered, and the snapshot says so too
    assert (b2 - b1) / (4 * (t2 - t1)) == pytest.approx(0.5, abs=0.01)
    snap = worker.metrics.snapshot
    assert snap.pools["main-1"].concurrency == 4 and 0.0 < snap.utilization <= 0.5 + 1e-9


# -- the System metrics line ----------------------------------------------------------------------------------------
def test_system_metrics_line_has_the_seed_fields(make_app, run_worker, wait_for) -> None:
    # Given a worker logging System metrics every second, and 4 jobs of which one fails for good
    app = make_app(overrides={"metrics.log_interval": 1.0})
    lines: list[dict[str, Any]] = []
    sink = logger.add(lambda m: lines.append(dict(m.record["extra"])),
                      filter=lambda r: r["message"] == "System metrics")

    @app.job("ok")
    def ok() -> None:
        time.sleep(0.01)

    @app.job("boom", max_retries=0)
    def boom() -> None:
        raise RuntimeError("no")

    try:
        for _ in range(3):
            app.enqueue("ok")
        app.enqueue("boom")
        worker = run_worker(app, plan(app))
        wait_for(lambda: worker.stats.processed == 4)

        # When the next line is logged
        seen = len(lines)
        wait_for(lambda: len(lines) > seen, timeout=5)
    finally:
        logger.remove(sink)

    # Then it carries the seed's fields with the right numbers and formats
    line = lines[-1]
    assert (line["jobs_processed"], line["jobs_completed"], line["jobs_failed"]) == (4, 3, 1)
    assert line["error_rate"] == "25.00%"
    assert line["avg_duration_ms"] >= 5
    assert line["worker_utilization"].endswith("%")
    assert line["uptime"].endswith("s")
    assert line["component"] == "worker" and line["log_source"] == "bananas_internal"


def test_formats_of_the_line() -> None:
    assert format_duration(2 * 3600 + 15 * 60 + 30) == "2h15m30s"
    assert format_duration(59.9) == "59s"
    assert format_duration(61) == "1m1s"
    assert format_percent(0.783) == "78.3%"
    assert format_percent(0.0049, 2) == "0.49%"
    assert format_percent(0) == "0.0%"


@given(st.lists(st.floats(min_value=0, max_value=1e3), min_size=1, max_size=200), st.sampled_from([0.5, 0.95, 0.99]))
def test_percentile_is_a_value_with_enough_values_at_or_below_it(values, q) -> None:
    # Given / When the nearest-rank percentile
    p = percentile(values, q)

    # Then it is one of the values, at least q of them are <= it, and fewer than q are below it
    assert p in values
    assert sum(v <= p for v in values) >= q * len(values) - 1e-9
    assert sum(v < p for v in values) < q * len(values) + 1e-9


# -- the endpoint -------------------------------------------------------------------------------------------------
def test_endpoint_serves_metrics_health_and_readiness(make_app, run_worker, wait_for, free_port) -> None:
    # Given a worker with its endpoint on a free port, after two jobs
    port = free_port
    app = make_app(overrides={"metrics.port": port})

    @app.job("ok")
    def ok() -> None:
        return None

    worker = run_worker(app, plan(app))
    app.enqueue("ok")
    app.enqueue("ok", priority="low")
    wait_for(lambda: worker.stats.completed == 2)

    # When it is probed and scraped (the sampler runs every second)
    wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=10)
    wait_for(lambda: "bananas_jobs_total" in get(port, "/metrics")[1] and
             sample_value(get(port, "/metrics")[1], "bananas_jobs_total", job="ok", priority="low", queue="low",
                          status="completed") == 1.0, timeout=10)
    status, text = get(port, "/metrics")

    # Then liveness and readiness answer 200, and the scrape has the metric names
    assert get(port, "/healthz") == (200, "ok\n")
    assert status == 200
    for name in ("bananas_jobs_total", "bananas_job_duration_seconds_bucket", "bananas_job_wait_seconds_bucket",
                 "bananas_queue_depth", "bananas_worker_utilization", "bananas_error_rate", "bananas_workers_alive"):
        assert name in text, name
    assert sample_value(text, "bananas_workers_alive") == 1.0
    # (queue depths are read every 10 s: "low" appears at the first read after its first job)
    wait_for(lambda: sample_value(get(port, "/metrics")[1], "bananas_queue_depth", queue="low", priority="low",
                                  state="ready") == 0.0, timeout=15)
    assert get(port, "/nope")[0] == 404

    # And when the worker stops, the port is free again
    worker.request_stop()
    wait_for(lambda: _refused(port), timeout=15)


def _refused(port: int) -> bool:
    try:
        get(port, "/healthz")
    except (urllib.error.URLError, ConnectionError):
        return True
    return False


def test_a_taken_port_is_logged_and_the_worker_runs_without_endpoint(make_app, run_worker, wait_for) -> None:
    # Given a port someone else holds
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        app = make_app(overrides={"metrics.port": port})
        errors: list[str] = []
        sink = logger.add(lambda m: errors.append(m.record["message"]), level="ERROR")

        @app.job("ok")
        def ok() -> None:
            return None

        try:
            # When a worker starts on it
            worker = run_worker(app, plan(app))
            app.enqueue("ok")

            # Then it says so and still runs jobs
            wait_for(lambda: worker.stats.completed == 1)
        finally:
            logger.remove(sink)
        assert any("metrics endpoint not started" in line for line in errors)


def test_liveness_fails_when_the_event_loop_is_blocked(make_app, run_worker, wait_for) -> None:
    # Given a worker whose event loop is blocked by a handler that sleeps without awaiting
    app = make_app()

    @app.job("hog")
    async def hog() -> None:
        time.sleep(6.0)  # blocks the loop on purpose

    worker = run_worker(app, plan(app))
    assert worker.metrics.healthz()[0]
    app.enqueue("hog")
    wait_for(lambda: worker.stats.pools["main-1"].busy == 1)

    # When liveness is checked during the block
    ok, reason = worker.metrics.healthz()

    # Then it fails, naming the bound
    assert not ok and "did not answer within" in reason


# -- the worker registry ----------------------------------------------------------------------------------------
def test_a_running_worker_is_in_the_registry_and_leaves_it_when_it_stops(make_app, run_worker, wait_for) -> None:
    # Given a running worker
    app = make_app()
    worker = run_worker(app, plan(app, concurrency=3))

    def listed() -> list[WorkerRecord]:
        async def read() -> list[bytes]:
            return await (await app.broker()).list_workers()

        return decode_records(app.run_sync(read))

    # When the registry is read
    wait_for(lambda: len(listed()) == 1)
    (record,) = listed()

    # Then it describes the process
    assert record.id == worker.id and record.mode == "test" and record.pools[0].concurrency == 3
    assert record.pools[0].queues == ("high", "normal", "low")
    assert record.version == bananas.__version__ != "unknown" and record.started_at <= record.heartbeat_at

    # And when it stops, its record is removed at once
    worker.request_stop()
    wait_for(lambda: listed() == [], timeout=15)


# -- several processes ----------------------------------------------------------------------------------------------
def _snap(pid: int, completed: int, busy: int = 0) -> Snapshot:
    return Snapshot(pid=pid, taken_at=time.time(), started_at=1.0,
                    counts=(("ok", "normal", "normal", "completed", completed),),
                    durations=(("ok", "normal", "normal", (completed,) + (0,) * len(DURATION_BUCKETS), 0.1 * completed,
                                completed),),
                    pools={"p": PoolSample(2, busy, 1.0, 1.0, 2.0)}, processed=completed, ready=True, reason="ok")


@given(st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=6), st.data())
def test_merge_sums_counters_of_every_process_and_gauges_of_live_ones(completed, data) -> None:
    # Given one snapshot per process (some of them dead: restarted children left their last file)
    snaps = [_snap(pid, n, busy=1) for pid, n in enumerate(completed, start=100)]
    live = data.draw(st.sets(st.sampled_from([s.pid for s in snaps])))

    # When they are merged
    merged = merge(snaps, live)

    # Then counters are the sum over every process, never counted twice; gauges cover live processes only
    assert merged.counts == ((("ok", "normal", "normal", "completed", sum(completed)),) if snaps else ())
    assert merged.durations[0][5] == sum(completed)
    assert merged.processes == len(live)
    assert sum(p.busy for p in merged.pools.values()) == len(live)
    assert merged.ready == bool(live)


def test_snapshot_json_round_trip_and_render() -> None:
    # Given a snapshot
    snap = _snap(7, 5, busy=1)

    # When it goes through JSON (a child's file) and is rendered
    again = Snapshot.from_json(snap.to_json())
    text = render(lambda: again).decode()

    # Then nothing is lost and the histogram is cumulative with +Inf
    assert again == snap
    assert 'bananas_job_duration_seconds_bucket{job="ok",le="0.005",priority="normal",queue="normal"} 5.0' in text
    assert 'bananas_job_duration_seconds_bucket{job="ok",le="+Inf",priority="normal",queue="normal"} 5.0' in text
    assert sample_value(text, "bananas_pool_busy_slots", pool="p") == 1.0


def test_job_stats_counts_without_locks() -> None:
    # Given / When counts of several statuses
    stats = JobStats({"p": 2})
    stats.count("a", "high", "high", "completed")
    stats.count("a", "high", "high", "completed")
    stats.count("a", "high", "high", "failed")

    # Then the totals follow
    assert stats.counts[("a", "high", "high", "completed")] == 2
    assert (stats.completed, stats.failed, stats.processed) == (2, 1, 3)
