"""job-specialized: reads exactly the routed queues of WORKER_JOB_TYPES, or refuses with a clear error."""

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


def test_an_unrouted_type_is_refused_naming_the_type_and_the_routes_key(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as err:
        plan(tmp_path, monkeypatch, {"WORKER_JOB_TYPES": "generate_report,process_analytics,send_email"})
    message = str(err.value)
    assert err.value.key == "worker.job_types" and err.value.source == "env WORKER_JOB_TYPES"
    assert "job type 'send_email' is not routed" in message and '[routes] send_email = "<queue>"' in message


def test_the_priority_router_is_refused_with_a_hint(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as err:
        plan(tmp_path, monkeypatch, {"WORKER_JOB_TYPES": "generate_report"}, routes={}, router="priority")
    assert '[routes] generate_report = "<queue>" and set router = "job-type"' in str(err.value)


def test_a_queue_shared_with_an_unlisted_type_is_refused(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as err:
        plan(tmp_path, monkeypatch, {"WORKER_JOB_TYPES": "generate_report"})
    message = str(err.value)
    assert err.value.key == "routes.process_analytics"
    assert "'process_analytics' shares queue 'cpu.high' with generate_report" in message
    assert "add process_analytics to WORKER_JOB_TYPES" in message


def test_worker_queues_cannot_be_combined(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as err:
        plan(tmp_path, monkeypatch, {"WORKER_JOB_TYPES": "fetch_data,upload_files", "WORKER_QUEUES": "io"})
    assert err.value.key == "worker.queues"
