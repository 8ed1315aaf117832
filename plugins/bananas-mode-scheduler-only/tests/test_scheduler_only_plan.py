"""scheduler-only: zero pools, the scheduler loop only."""

from __future__ import annotations

import json

import pytest

from bananas import Bananas, ConfigError


def plan(tmp_path, monkeypatch, env):
    monkeypatch.chdir(tmp_path)
    return json.loads(json.dumps(Bananas(broker="memory://", env=env).plan().describe()))


def test_guide_scheduler_has_no_pools(tmp_path, monkeypatch):
    described = plan(tmp_path, monkeypatch, {"WORKER_MODE": "scheduler-only", "SCHEDULER_INTERVAL": "1s"})
    assert described == {"mode": "scheduler-only", "scheduler": True, "scheduler_interval": 1.0, "pools": []}


def test_interval_is_taken_from_the_settings(tmp_path, monkeypatch):
    described = plan(tmp_path, monkeypatch, {"WORKER_MODE": "scheduler-only", "SCHEDULER_INTERVAL": "250ms"})
    assert described["scheduler_interval"] == 0.25


def test_scheduler_disabled_is_refused(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as err:
        plan(tmp_path, monkeypatch, {"WORKER_MODE": "scheduler-only", "ENABLE_SCHEDULER": "false"})
    assert err.value.key == "worker.enable_scheduler" and err.value.source == "env ENABLE_SCHEDULER"


def test_runtime_runs_the_scheduler_with_zero_pools(tmp_path, monkeypatch):
    # Given a scheduler-only worker on the memory broker, and a delayed job
    import time
    import uuid

    monkeypatch.chdir(tmp_path)
    url = f"memory://sched-only-{uuid.uuid4().hex[:8]}"
    app = Bananas(broker=url, env={"WORKER_MODE": "scheduler-only", "SCHEDULER_INTERVAL": "100ms"})
    handle = app.enqueue("later", {}, delay=0.2)

    async def depth():
        return (await (await app.broker()).depths())["normal"]

    worker = app.worker()
    worker.fetch_wait = 0.2
    thread = worker.start_in_thread()
    try:
        # When it is due / Then the scheduler moved it to its ready queue and nothing ran it
        deadline = time.monotonic() + 10
        while app.run_sync(depth).ready != 1:
            assert time.monotonic() < deadline, "the scheduler-only worker never moved the due job"
            time.sleep(0.05)
        assert worker.processed == 0 and handle.id
    finally:
        worker.request_stop()
        thread.join(15)
        app.close()
