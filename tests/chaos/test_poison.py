"""Drill 5: poison jobs that kill their worker process, among good jobs, under ``--processes 2``."""

from __future__ import annotations

import time

import pytest
from _support import Drill, report, wait_until

LEASE = 1.0
REAPER = 0.5
MAX_CRASHES = 3
GOOD = 300
POISON = {"poison-exit-1": "exit", "poison-exit-2": "exit", "poison-exit-3": "exit", "poison-kill-1": "kill"}
"""Each crashes its process MAX_CRASHES times: 12 child deaths, and the supervisor's restart back-off (0.5 s doubling
while a child dies within 10 s of its start) dominates the drill's run time."""


@pytest.mark.slow
@pytest.mark.chaos
def test_poison_jobs_alone_go_to_the_dead_letters_under_two_processes(drill: Drill, record_property):
    started = time.monotonic()
    drill.configure(lease=LEASE, reaper_interval=REAPER, max_crash_deliveries=MAX_CRASHES, shutdown_timeout=2.0)

    # Given a supervisor with 2 worker processes of 4 slots each
    supervisor = drill.worker("supervisor", concurrency=4, processes=2)
    drill.wait_started(supervisor, count=2)

    # When GOOD short jobs are enqueued with the poison jobs spread among them
    good = [f"good-{i:04d}" for i in range(GOOD)]
    poison = list(POISON)
    step = GOOD // (len(poison) + 1)
    for n, chunk_start in enumerate(range(0, GOOD, step)):
        drill.enqueue(good[chunk_start:chunk_start + step], secs=0.02)
        if n < len(poison):
            drill.app.enqueue("work", {"key": poison[n], "poison": POISON[poison[n]]}, job_id=poison[n])

    # Then every good job completes and exactly the poison jobs end in the dead letters as crash_loop
    drain = drill.wait_completed(good, timeout=90)
    wait_until(lambda: len(drill.dead_letters()) >= len(poison), 30, "the poison jobs' dead letters", drill.logs)
    time.sleep(LEASE + REAPER)
    dead = {d.id: d.reason for d in drill.dead_letters()}
    runs = drill.counts("runs")
    child_deaths = supervisor.log().count(" died with ")
    report(record_property, "poison --processes 2", good=GOOD, poison=len(poison),
           lost=sum(1 for k in good if not drill.counts("done").get(k)), dead_lettered=len(dead),
           good_dead=len([k for k in dead if k not in POISON]),
           poison_runs=sum(runs.get(k, 0) for k in poison), good_duplicates=sum(1 for k in good if runs.get(k, 0) > 1),
           child_deaths=child_deaths, drain_s=drain, runtime_s=time.monotonic() - started)

    assert set(dead) == set(poison), f"dead letters {sorted(dead)} != poison jobs {sorted(poison)}"
    assert all(reason == "crash_loop" for reason in dead.values()), dead
    assert supervisor.alive(), supervisor.tail()
