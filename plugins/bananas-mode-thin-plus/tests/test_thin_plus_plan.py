"""thin_plus: a priority pool and a scheduled pool in one process, scheduler always on."""

from __future__ import annotations

import json

import pytest

from bananas import Bananas, ConfigError

GUIDE = {
    "WORKER_MODE": "thin_plus",
    "WORKER_PRIORITY_CONCURRENCY": "10",
    "WORKER_PRIORITY_QUEUES": "high,normal,low",
    "WORKER_SCHEDULED_CONCURRENCY": "5",
    "WORKER_SCHEDULED_QUEUES": "scheduled",
}


def plan(tmp_path, monkeypatch, env, **overrides):
    monkeypatch.chdir(tmp_path)
    return json.loads(json.dumps(Bananas(broker="memory://", env=env, overrides=overrides).plan().describe()))


def test_guide_configuration(tmp_path, monkeypatch):
    described = plan(tmp_path, monkeypatch, {**GUIDE, "ENABLE_SCHEDULER": "false"})
    assert described["mode"] == "thin_plus" and described["scheduler"] is True  # always on, as in thin
    assert described["pools"] == [
        {"name": "priority", "concurrency": 10, "queues": ["high", "normal", "low"], "job_types": None,
         "worker_id": "priority-1"},
        {"name": "scheduled", "concurrency": 5, "queues": ["scheduled"], "job_types": None,
         "worker_id": "scheduled-1"},
    ]


def test_defaults_with_the_job_type_router_split_the_queues(tmp_path, monkeypatch):
    routes = {"nightly_report": "scheduled", "generate_report": "cpu"}
    described = plan(tmp_path, monkeypatch, {"WORKER_MODE": "thin_plus"}, router="job-type", routes=routes)
    priority, scheduled = described["pools"]
    assert priority["queues"] == ["high", "cpu.high", "normal", "cpu.normal", "low", "cpu.low"]
    assert scheduled["queues"] == ["scheduled.high", "scheduled.normal", "scheduled.low"]


def test_guide_priority_queues_include_the_routed_queues_of_those_priorities(tmp_path, monkeypatch):
    routes = {"nightly_report": "scheduled", "generate_report": "cpu"}
    described = plan(tmp_path, monkeypatch, GUIDE, router="job-type", routes=routes)
    priority, scheduled = described["pools"]
    assert priority["queues"] == ["high", "cpu.high", "normal", "cpu.normal", "low", "cpu.low"]
    assert scheduled["queues"] == ["scheduled.high", "scheduled.normal", "scheduled.low"]


def test_a_priority_given_to_the_scheduled_pool_leaves_the_priority_pool(tmp_path, monkeypatch):
    described = plan(tmp_path, monkeypatch, {**GUIDE, "WORKER_SCHEDULED_QUEUES": "low"})
    assert [pool["queues"] for pool in described["pools"]] == [["high", "normal"], ["low"]]


def test_a_named_queue_in_both_pools_is_refused(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as err:
        plan(tmp_path, monkeypatch, {**GUIDE, "WORKER_PRIORITY_QUEUES": "emails,low", "WORKER_SCHEDULED_QUEUES": "low"})
    assert err.value.key == "worker.priority_queues" and "'low'" in str(err.value)


def test_an_empty_priority_pool_is_refused(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as err:
        plan(tmp_path, monkeypatch, {**GUIDE, "WORKER_PRIORITY_QUEUES": "low", "WORKER_SCHEDULED_QUEUES": "low"})
    assert err.value.key == "worker.priority_queues" and "no queue left" in str(err.value)


def test_worker_queues_is_refused(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as err:
        plan(tmp_path, monkeypatch, {**GUIDE, "WORKER_QUEUES": "high"})
    assert err.value.key == "worker.queues"
