"""Drill 4: malformed entries written straight into the broker's Redis structures, among good jobs."""

from __future__ import annotations

import time

import pytest
from _support import PREFIX, QUEUE, Drill, report, wait_until
from bananas_redis.keys import queue_keys

GOOD = 40


@pytest.mark.slow
@pytest.mark.chaos
def test_malformed_broker_entries_are_dead_lettered_or_dropped_and_good_jobs_run_once(drill: Drill,
                                                                                        record_property):
    started = time.monotonic()
    drill.configure(lease=2.0, reaper_interval=0.5)
    qk = queue_keys(PREFIX, QUEUE)
    r = drill.broker_redis()
    now = time.time()

    # Given good jobs enqueued through the app, then bad ids pushed straight into the ready list, then more good jobs
    good = drill.enqueue(f"good-{i:03d}" for i in range(GOOD // 2))
    _, envelope = drill.app.build("work", {"key": "bad-completed"}, job_id="bad-completed")
    bad = {
        "bad-string": lambda key: r.set(key, "not a hash"),
        "bad-list": lambda key: r.rpush(key, "a", "b"),
        "bad-missing": lambda key: None,
        "bad-nobody": lambda key: r.hset(key, mapping={"state": "ready", "seq": 1, "updated_at": now}),
        "bad-completed": lambda key: r.hset(key, mapping={"state": "completed", "body": envelope.body,
                                                          "updated_at": now}),
        "bad-garbage": lambda key: r.hset(key, mapping={"state": "ready", "body": b"\x00\xff\xfegarbage{{",
                                                        "seq": 2, "updated_at": now}),
    }
    for job_id, write in bad.items():
        write(qk.job(job_id))
        r.rpush(qk.ready, job_id)
        r.rpush(qk.signal, "1")
    good += drill.enqueue(f"good-{i:03d}" for i in range(GOOD // 2, GOOD))

    # When a worker runs
    worker = drill.worker("worker", concurrency=4)
    drill.wait_started(worker)
    drain = drill.wait_completed(good, timeout=30)

    def settled() -> bool:
        d = drill.depths().get(QUEUE)
        return d is not None and d.ready == 0 and d.running == 0

    wait_until(settled, 15, "the ready list and the leases to empty", drill.logs)
    time.sleep(1.0)

    # Then every good job ran exactly once, and every bad id is a dead letter with a reason or a logged drop
    runs = drill.counts("runs")
    dead = {d.id: d.reason for d in drill.dead_letters()}
    log = worker.log()
    outcome = {}
    for job_id in bad:
        if job_id in dead:
            outcome[job_id] = f"dead: {dead[job_id]}"
        elif any(job_id in line and ("WARNING" in line or "ERROR" in line) for line in log.splitlines()):
            outcome[job_id] = "dropped (logged)"
        else:
            outcome[job_id] = "UNACCOUNTED"
    not_once = {k: runs.get(k, 0) for k in good if runs.get(k, 0) != 1}
    fetch_errors = log.count("fetch from")
    report(record_property, "bad entries", good=len(good), bad=len(bad), lost=sum(1 for k in good if not runs.get(k)),
           good_not_once=len(not_once), dead_lettered=len([j for j in bad if j in dead]),
           dropped_logged=sum(1 for v in outcome.values() if v.startswith("dropped")),
           unaccounted=sum(1 for v in outcome.values() if v == "UNACCOUNTED"), fetch_errors=fetch_errors,
           drain_s=drain, runtime_s=time.monotonic() - started)
    for job_id, what in outcome.items():
        print(f"  {job_id}: {what}")

    assert not_once == {}, f"good jobs not run exactly once: {not_once}"
    assert worker.alive(), worker.tail()
    assert runs.get("bad-completed", 0) == 0, "a completed record in the ready list ran again"
    assert [j for j, v in outcome.items() if v == "UNACCOUNTED"] == [], f"{outcome}\n{worker.tail()}"
    assert dead.get("bad-garbage", "").startswith("malformed job"), outcome
    assert all(reason for reason in dead.values()), dead
