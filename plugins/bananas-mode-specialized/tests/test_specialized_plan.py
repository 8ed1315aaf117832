"""specialized: one pool over WORKER_PRIORITIES only (the guide's three worker kinds)."""

from __future__ import annotations

import json

import pytest

from bananas import Bananas, ConfigError


def plan(tmp_path, monkeypatch, env, **overrides):
    monkeypatch.chdir(tmp_path)
    return json.loads(json.dumps(Bananas(broker="memory://", env=env, overrides=overrides).plan().describe()))


@pytest.mark.parametrize(
    ("priorities", "concurrency", "queues", "worker_id"),
    [("high", "50", ["high"], "high-1"), ("normal", "30", ["normal"], "normal-1"), ("low", "10", ["low"], "low-1")],
)
def test_guide_workers_read_only_their_priority(tmp_path, monkeypatch, priorities, concurrency, queues, worker_id):
    env = {"WORKER_MODE": "specialized", "WORKER_PRIORITIES": priorities, "WORKER_CONCURRENCY": concurrency}
    described = plan(tmp_path, monkeypatch, env)
    assert described["mode"] == "specialized" and described["scheduler"] is True
    assert described["pools"] == [
        {"name": priorities, "concurrency": int(concurrency), "queues": queues, "job_types": None,
         "worker_id": worker_id}
    ]


def test_several_priorities_are_read_highest_first(tmp_path, monkeypatch):
    env = {"WORKER_MODE": "specialized", "WORKER_PRIORITIES": "low,high", "ENABLE_SCHEDULER": "false"}
    described = plan(tmp_path, monkeypatch, env)
    assert described["scheduler"] is False
    assert described["pools"][0]["queues"] == ["high", "low"]
    assert described["pools"][0]["worker_id"] == "high-low-1"


def test_with_the_job_type_router_it_reads_every_queue_of_its_priority(tmp_path, monkeypatch):
    env = {"WORKER_MODE": "specialized", "WORKER_PRIORITIES": "high"}
    described = plan(tmp_path, monkeypatch, env, router="job-type", routes={"generate_report": "cpu"})
    assert described["pools"][0]["queues"] == ["high", "cpu.high"]
    # WORKER_QUEUES keeps it on the default queue
    described = plan(tmp_path, monkeypatch, {**env, "WORKER_QUEUES": "high"}, router="job-type",
                     routes={"generate_report": "cpu"})
    assert described["pools"][0]["queues"] == ["high"]


def test_priorities_are_required(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as err:
        plan(tmp_path, monkeypatch, {"WORKER_MODE": "specialized"})
    assert err.value.key == "worker.priorities"
    assert "WORKER_PRIORITIES=high" in str(err.value)
