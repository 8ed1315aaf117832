"""The built-in default mode: one pool over WORKER_PRIORITIES high → normal → low, every job type, scheduler
per ENABLE_SCHEDULER.

Its plans with the job-type router: plugins/bananas-router-job-type/tests/test_kernel_modes_routed.py."""

from __future__ import annotations

import json

from bananas import Bananas


def plan(tmp_path, monkeypatch, env, **overrides):
    monkeypatch.chdir(tmp_path)
    return json.loads(json.dumps(Bananas(broker="memory://", env=env, overrides=overrides).plan().describe()))


def test_guide_configuration(tmp_path, monkeypatch):
    env = {"WORKER_MODE": "default", "WORKER_CONCURRENCY": "20", "WORKER_PRIORITIES": "high,normal,low",
           "ENABLE_SCHEDULER": "false"}
    described = plan(tmp_path, monkeypatch, env)
    assert described == {
        "mode": "default",
        "scheduler": False,
        "scheduler_interval": 1.0,
        "pools": [{"name": "default", "concurrency": 20, "queues": ["high", "normal", "low"], "job_types": None,
                   "worker_id": "default-1"}],
    }


def test_it_is_the_default_mode(tmp_path, monkeypatch):
    described = plan(tmp_path, monkeypatch, {})
    assert described["mode"] == "default" and described["scheduler"] is True
    assert described["pools"][0]["concurrency"] == 10

