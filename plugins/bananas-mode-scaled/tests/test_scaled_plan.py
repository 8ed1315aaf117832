"""scaled: N pools per priority, worker ids high-1, high-2, …; each pool reads only its priority."""

from __future__ import annotations

import json

import pytest

from bananas import Bananas, ConfigError

GUIDE = {
    "WORKER_MODE": "scaled",
    "WORKER_HIGH_COUNT": "3",
    "WORKER_HIGH_CONCURRENCY": "10",
    "WORKER_NORMAL_COUNT": "2",
    "WORKER_NORMAL_CONCURRENCY": "10",
    "WORKER_LOW_COUNT": "1",
    "WORKER_LOW_CONCURRENCY": "5",
    "WORKER_SCHEDULED_COUNT": "1",
    "WORKER_SCHEDULED_CONCURRENCY": "5",
}


def plan(tmp_path, monkeypatch, env, **overrides):
    monkeypatch.chdir(tmp_path)
    return json.loads(json.dumps(Bananas(broker="memory://", env=env, overrides=overrides).plan().describe()))


def test_guide_configuration(tmp_path, monkeypatch):
    described = plan(tmp_path, monkeypatch, GUIDE)
    assert described["mode"] == "scaled" and described["scheduler"] is True
    rows = [(p["name"], p["worker_id"], p["concurrency"], p["queues"]) for p in described["pools"]]
    assert rows == [
        ("high", "high-1", 10, ["high"]),
        ("high", "high-2", 10, ["high"]),
        ("high", "high-3", 10, ["high"]),
        ("normal", "normal-1", 10, ["normal"]),
        ("normal", "normal-2", 10, ["normal"]),
        ("low", "low-1", 5, ["low"]),
        ("scheduled", "scheduled-1", 5, ["scheduled"]),
    ]


def test_zero_count_drops_a_priority_and_routed_queues_follow_their_priority(tmp_path, monkeypatch):
    env = {**GUIDE, "WORKER_LOW_COUNT": "0", "WORKER_NORMAL_COUNT": "1", "ENABLE_SCHEDULER": "false"}
    routes = {"generate_report": "cpu", "nightly_report": "scheduled"}
    described = plan(tmp_path, monkeypatch, env, router="job-type", routes=routes)
    assert described["scheduler"] is False
    rows = [(p["worker_id"], p["queues"]) for p in described["pools"]]
    assert rows == [
        ("high-1", ["high", "cpu.high"]),
        ("high-2", ["high", "cpu.high"]),
        ("high-3", ["high", "cpu.high"]),
        ("normal-1", ["normal", "cpu.normal"]),
        ("scheduled-1", ["scheduled.high", "scheduled.normal", "scheduled.low"]),
    ]


def test_without_scheduled_pools_the_priority_pools_keep_every_queue(tmp_path, monkeypatch):
    env = {"WORKER_MODE": "scaled", "WORKER_HIGH_COUNT": "1", "WORKER_NORMAL_COUNT": "0", "WORKER_LOW_COUNT": "0",
           "WORKER_SCHEDULED_COUNT": "0"}
    described = plan(tmp_path, monkeypatch, env, router="job-type", routes={"nightly_report": "scheduled"})
    assert [(p["worker_id"], p["queues"]) for p in described["pools"]] == [("high-1", ["high", "scheduled.high"])]


def test_no_pool_at_all_is_refused(tmp_path, monkeypatch):
    env = {"WORKER_MODE": "scaled", **dict.fromkeys(
        ["WORKER_HIGH_COUNT", "WORKER_NORMAL_COUNT", "WORKER_LOW_COUNT", "WORKER_SCHEDULED_COUNT"], "0")}
    with pytest.raises(ConfigError) as err:
        plan(tmp_path, monkeypatch, env)
    assert err.value.key == "worker.high_count" and "at least one pool" in str(err.value)
