"""Drill 3: a worker behind a loopback TCP proxy gets latency, then a black hole longer than the lease, then a cut;
a second worker talks to Redis directly."""

from __future__ import annotations

import time

import pytest
from _support import Drill, report, wait_until
from proxy import ChaosProxy

LEASE = 2.0
REAPER = 0.5
JOBS = 120
JOB_SECS = 0.5  # a quarter of the lease
BLACKHOLE = 5.0  # > lease + reaper: every lease the partitioned worker holds expires


@pytest.mark.slow
@pytest.mark.chaos
def test_partitioned_worker_is_fenced_and_its_jobs_rerun_elsewhere(drill: Drill, record_property):
    started = time.monotonic()
    drill.configure(lease=LEASE, reaper_interval=REAPER, socket_timeout=3.0, retry_for=60.0)
    proxy = ChaosProxy(drill.broker_server.port).start()
    try:
        # Given worker A through the proxy and worker B direct, 4 slots each, and JOBS jobs of JOB_SECS
        a = drill.worker("worker-a-proxied", concurrency=4, broker=f"redis://127.0.0.1:{proxy.port}/0")
        b = drill.worker("worker-b-direct", concurrency=4)
        drill.wait_started(a, b)
        keys = drill.enqueue((f"job-{i:04d}" for i in range(JOBS)), secs=JOB_SECS)
        wait_until(lambda: drill.counts("done"), 10, "the first completion", drill.logs)
        time.sleep(1.0)

        # When A's link gets 50 ms of latency per chunk for 1.5 s, then a black hole for BLACKHOLE s, then a cut
        proxy.latency(0.05)
        time.sleep(1.5)
        assert drill.running(a.pid), f"worker A runs nothing at the partition\n{drill.logs()}"
        hole_at = time.time()
        proxy.blackhole()
        time.sleep(BLACKHOLE)
        partitioned = drill.inflight(a.pid)  # started in A, ack never confirmed (no ack can pass the hole)
        cut = proxy.cut()
        proxy.pass_through()
        healed_at = time.time()

        # Then every job completes and both workers are still up
        drain = drill.wait_completed(keys, timeout=60)
        # A store or ack sent between the cut and the heal is dropped by the proxy: it waits out its 3 s reply timeout
        # and is sent again; a job's ack comes after its result's store, so allow two timeouts and some backoff.
        wait_until(lambda: not drill.inflight(a.pid) - partitioned, 15,
                   "A's acks after the heal", lambda: f"unacked: {sorted(drill.inflight(a.pid) - partitioned)}\n"
                   f"partitioned: {sorted(partitioned)}\n{drill.logs()}")
        time.sleep(LEASE)  # late acks of A land (and are refused) meanwhile
        assert a.alive() and b.alive(), drill.logs()
    finally:
        proxy.stop()

    runs, done, succeeded = drill.counts("runs"), drill.counts("done"), drill.counts("succeeded")
    lost = [k for k in keys if done.get(k, 0) == 0]
    twice = {k for k in keys if runs.get(k, 0) > 1}
    unexplained = sorted(twice - partitioned)
    double_acked = sorted(k for k in keys if succeeded.get(k, 0) > 1)
    records = {k: drill.lookup(k) for k in keys}
    not_completed = sorted(k for k, r in records.items() if r is None or r.state != "completed")
    reruns_by_b = []
    for key in sorted(partitioned & twice):
        later = [(pid, t) for pid, t in drill.starts(key) if t > hole_at]
        reruns_by_b += [t - hole_at for pid, t in later if pid == b.pid]
    fenced_in_log = a.log().count("lease was lost")
    report(record_property, "partition", jobs=JOBS, partitioned=len(partitioned), lost=len(lost),
           duplicates=len(twice), unexplained_duplicates=len(unexplained), double_acked=len(double_acked),
           not_completed=len(not_completed), rerun_by_b=len(reruns_by_b),
           first_rerun_after_hole_s=min(reruns_by_b, default=0.0), fenced_log_lines=fenced_in_log,
           connections_cut=cut, dead_lettered=len(drill.dead_letters()), drain_after_heal_s=drain,
           heal_s=healed_at - hole_at, runtime_s=time.monotonic() - started)

    assert lost == [], f"{len(lost)} job(s) never completed: {lost[:10]}"
    assert not_completed == [], f"broker records not completed: {not_completed[:10]}"
    assert double_acked == [], f"jobs acked twice without fencing: {double_acked[:10]}"
    assert unexplained == [], f"jobs ran twice but A did not hold them at the partition: {unexplained[:10]}"
    assert partitioned, "A held no job during the partition"
    assert reruns_by_b, f"none of A's {len(partitioned)} partitioned job(s) was re-run by B\n{drill.logs()}"
    assert min(reruns_by_b) >= LEASE / 2, f"B re-ran a partitioned job before its lease could expire: {reruns_by_b}"
    assert fenced_in_log >= 1, f"A logged no lost lease or fenced ack\n{a.tail()}"
