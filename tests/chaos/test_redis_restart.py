"""Drill 2: SIGKILL the broker's redis-server (AOF, ``appendfsync everysec``) under a producer and two workers,
restart it on the same port and directory after ~2 s, and check what survived."""

from __future__ import annotations

import sys
import textwrap
import time

import pytest
from _support import Drill, report, wait_until

AOF_WINDOW = 1.5
"""everysec fsyncs once a second: acked enqueues of the last ~1 s before a SIGKILL may be lost; older ones may not."""

PRODUCER = textwrap.dedent(
    '''
    """Enqueue one job every few ms until the stop file appears; log "<id> <unix time>" of each acked enqueue."""
    import os, sys, time
    from bananas import Bananas
    from bananas.errors import BrokerUnavailable

    app = Bananas(config=os.environ["BANANAS_CONFIG"], env={"BANANAS_LOAD_PLUGINS": "bananas-redis"})
    acked = open(sys.argv[1], "a", buffering=1)
    stop = sys.argv[2]
    n = failed = 0
    while not os.path.exists(stop):
        key = f"p-{n:06d}"
        n += 1
        try:
            app.enqueue("work", {"key": key, "secs": 0.005}, job_id=key)
        except BrokerUnavailable as exc:
            failed += 1
            if failed % 20 == 1:
                print(f"enqueue {key} failed: {exc}", flush=True)
            time.sleep(0.05)
            continue
        acked.write(f"{key} {time.time():.6f}\\n")
        time.sleep(0.004)
    print(f"producer stopped after {n} attempts, {failed} failed", flush=True)
    app.close()
    '''
)


@pytest.mark.slow
@pytest.mark.chaos
def test_redis_sigkill_and_restart_under_load_loses_only_the_aof_window(make_drill, record_property):
    started = time.monotonic()
    drill: Drill = make_drill(aof_everysec=True)
    drill.configure(lease=2.0, reaper_interval=0.5, retry_for=60.0, socket_timeout=3.0)
    (drill.root / "producer.py").write_text(PRODUCER)
    acked_path, stop_path = drill.root / "acked.txt", drill.root / "stop"

    def acked() -> list[tuple[str, float]]:
        out = []
        for line in acked_path.read_text().splitlines() if acked_path.exists() else []:
            parts = line.split()
            if len(parts) == 2:
                out.append((parts[0], float(parts[1])))
        return out

    # Given two workers and a producer enqueueing continuously
    workers = [drill.worker(f"worker-{i}", concurrency=4) for i in (1, 2)]
    drill.wait_started(*workers)
    producer = drill.process("producer", [sys.executable, str(drill.root / "producer.py"), str(acked_path),
                                          str(stop_path)])
    wait_until(lambda: len(acked()) >= 300, 30, "300 acked enqueues", drill.logs)
    time.sleep(1.0)

    # When redis-server is SIGKILLed, stays down ~2 s, and is restarted on the same port and AOF directory
    kill_at = time.time()
    drill.broker_server.stop(kill=True)
    acked_at_kill = len(acked())
    done_at_kill = sum(drill.counts("done").values())
    time.sleep(2.0)
    drill.broker_server.start()
    restart_at = time.time()

    # Then the producer and the workers continue by themselves (none of them is restarted)
    wait_until(lambda: sum(1 for _, t in acked() if t > restart_at) >= 200, 30,
               "the producer to ack 200 enqueues after the restart", drill.logs)
    wait_until(lambda: sum(drill.counts("done").values()) >= done_at_kill + 200, 30,
               "200 completions after the restart", drill.logs)
    recovered_enqueue = min(t for _, t in acked() if t > restart_at) - restart_at
    stop_path.touch()
    code, _ = producer.wait_exit(15)
    assert code == 0, f"producer exit status {code}\n{producer.tail()}"
    assert all(w.alive() for w in workers), drill.logs()

    # And every acked job completes, except possibly those acked in the last AOF_WINDOW s before the kill
    rows = acked()
    must = [k for k, t in rows if t < kill_at - AOF_WINDOW or t > restart_at]
    window = [k for k, t in rows if kill_at - AOF_WINDOW <= t <= kill_at]
    done_keys = {k for k, v in drill.counts("done").items() if v > 0}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not set(must) <= done_keys:
        time.sleep(0.2)
        done_keys = {k for k, v in drill.counts("done").items() if v > 0}
    lost = [k for k in must if k not in done_keys]
    lost_in_window = [k for k in window if k not in done_keys]
    runs = drill.counts("runs")
    report(record_property, "redis sigkill+restart", acked=len(rows), acked_before_kill=acked_at_kill,
           lost=len(lost), lost_in_aof_window=len(lost_in_window), window_jobs=len(window),
           duplicates=sum(1 for k in done_keys if runs.get(k, 0) > 1), dead_lettered=len(drill.dead_letters()),
           outage_s=restart_at - kill_at, producer_recovery_s=recovered_enqueue,
           runtime_s=time.monotonic() - started)
    assert lost == [], f"{len(lost)} acked job(s) lost outside the AOF window: {lost[:10]}\n{drill.logs()}"
