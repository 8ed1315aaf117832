"""job-specialized: reads the queues WORKER_JOB_TYPES are routed to (the priority queues without [routes]), by type."""

from __future__ import annotations

import json

import pytest

from bananas import Bananas, ConfigError

ROUTES = {"generate_report": "cpu", "process_analytics": "cpu", "fetch_data": "io", "upload_files": "io"}


def plan(tmp_path, monkeypatch, env, routes=ROUTES, router="job-type"):
    monkeypatch.chdir(tmp_path)
    app = Bananas(broker="memory://", env={"WORKER_MODE": "job-specialized", **env},
                  overrides={"router": router, "routes": routes})
    return json.loads(json.dumps(app.plan().describe()))


def test_guide_cpu_worker_reads_the_cpu_queues(tmp_path, monkeypatch):
    env = {"WORKER_JOB_TYPES": "generate_report,process_analytics", "WORKER_CONCURRENCY": "10"}
    described = plan(tmp_path, monkeypatch, env)
    assert described["mode"] == "job-specialized"
    assert described["pools"] == [
        {"name": "job-types", "concurrency": 10, "queues": ["cpu.high", "cpu.normal", "cpu.low"],
         "job_types": ["generate_report", "process_analytics"], "worker_id": "job-types-1"}
    ]


def test_types_of_two_queues_and_a_priority_filter(tmp_path, monkeypatch):
    env = {"WORKER_JOB_TYPES": "fetch_data,upload_files,generate_report,process_analytics",
           "WORKER_PRIORITIES": "high,normal", "ENABLE_SCHEDULER": "false"}
    described = plan(tmp_path, monkeypatch, env)
    assert described["scheduler"] is False
    assert described["pools"][0]["queues"] == ["io.high", "cpu.high", "io.normal", "cpu.normal"]


def test_job_types_are_required(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as err:
        plan(tmp_path, monkeypatch, {})
    assert err.value.key == "worker.job_types"
    assert "needs the job types" in str(err.value) and "WORKER_JOB_TYPES=" in str(err.value)


def test_an_unrouted_type_is_read_from_the_default_queues_beside_the_routed_ones(tmp_path, monkeypatch):
    described = plan(tmp_path, monkeypatch, {"WORKER_JOB_TYPES": "generate_report,process_analytics,send_email"})
    (pool,) = described["pools"]
    assert pool["queues"] == ["cpu.high", "high", "cpu.normal", "normal", "cpu.low", "low"]
    assert pool["job_types"] == ["generate_report", "process_analytics", "send_email"]


def test_the_guide_as_written_needs_no_routes_the_priority_queues_are_read_by_type(tmp_path, monkeypatch):
    # The user guide's job-specialized worker, configured by environment variables only (issue 15)
    env = {"WORKER_JOB_TYPES": "send_email,generate_report,process_analytics", "WORKER_CONCURRENCY": "10"}
    described = plan(tmp_path, monkeypatch, env, routes={}, router="priority")
    assert described["pools"] == [
        {"name": "job-types", "concurrency": 10, "queues": ["high", "normal", "low"],
         "job_types": ["send_email", "generate_report", "process_analytics"], "worker_id": "job-types-1"}
    ]


def test_a_queue_shared_with_an_unlisted_type_is_read_by_type(tmp_path, monkeypatch):
    # process_analytics is routed to cpu too: this worker reads cpu.* but fetches only generate_report from it
    described = plan(tmp_path, monkeypatch, {"WORKER_JOB_TYPES": "generate_report"})
    (pool,) = described["pools"]
    assert pool["queues"] == ["cpu.high", "cpu.normal", "cpu.low"] and pool["job_types"] == ["generate_report"]


def test_a_type_without_a_handler_in_the_app_refuses_to_start_naming_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = Bananas(broker="memory://", env={"WORKER_MODE": "job-specialized",
                                           "WORKER_JOB_TYPES": "send_email,generate_report"})

    @app.job("send_email")
    def send_email() -> None: ...

    with pytest.raises(ConfigError) as err:
        app.worker()
    assert err.value.key == "worker.job_types" and err.value.source == "env WORKER_JOB_TYPES"
    assert "no handler for generate_report in this app" in str(err.value)
    assert "\n" not in str(err.value)


def test_worker_queues_cannot_be_combined(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as err:
        plan(tmp_path, monkeypatch, {"WORKER_JOB_TYPES": "fetch_data,upload_files", "WORKER_QUEUES": "io"})
    assert err.value.key == "worker.queues"
