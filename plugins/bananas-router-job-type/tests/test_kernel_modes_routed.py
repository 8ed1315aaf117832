"""The kernel's built-in thin and default modes with the job-type router: every routed queue, high first."""

from __future__ import annotations

import json

from bananas import Bananas


def plan(tmp_path, monkeypatch, env, **overrides):
    monkeypatch.chdir(tmp_path)
    return json.loads(json.dumps(Bananas(broker="memory://", env=env, overrides=overrides).plan().describe()))


def test_thin_sees_routed_queues_too(tmp_path, monkeypatch):
    described = plan(tmp_path, monkeypatch, {"WORKER_MODE": "thin"}, router="job-type",
                     routes={"generate_report": "cpu"})
    assert described["pools"][0]["queues"] == ["high", "cpu.high", "normal", "cpu.normal", "low", "cpu.low"]


def test_catch_all_reads_every_routed_queue_all_high_first(tmp_path, monkeypatch):
    routes = {"generate_report": "cpu", "fetch_data": "io"}
    described = plan(tmp_path, monkeypatch, {"WORKER_MODE": "default"}, router="job-type", routes=routes)
    assert described["pools"][0]["queues"] == [
        "high", "cpu.high", "io.high", "normal", "cpu.normal", "io.normal", "low", "cpu.low", "io.low",
    ]


def test_queues_flag_reads_a_routed_queue(tmp_path, monkeypatch):
    described = plan(tmp_path, monkeypatch, {"WORKER_QUEUES": "cpu"}, router="job-type",
                     routes={"generate_report": "cpu"})
    assert described["pools"][0]["queues"] == ["cpu.high", "cpu.normal", "cpu.low"]
