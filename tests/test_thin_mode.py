"""The built-in thin mode: one pool, every priority and job type, scheduler always on, concurrency 5 unless set.

Its plans with the job-type router: plugins/bananas-router-job-type/tests/test_kernel_modes_routed.py."""

from __future__ import annotations

import json

from bananas import Bananas


def plan(tmp_path, monkeypatch, env, **overrides):
    monkeypatch.chdir(tmp_path)
    return json.loads(json.dumps(Bananas(broker="memory://", env=env, overrides=overrides).plan().describe()))


def test_guide_configuration(tmp_path, monkeypatch):
    described = plan(tmp_path, monkeypatch, {"WORKER_MODE": "thin", "WORKER_CONCURRENCY": "5"})
    assert described == {
        "mode": "thin",
        "scheduler": True,
        "scheduler_interval": 1.0,
        "pools": [{"name": "thin", "concurrency": 5, "queues": ["high", "normal", "low"], "job_types": None,
                   "worker_id": "thin-1"}],
    }


def test_default_concurrency_is_5_and_scheduler_cannot_be_turned_off(tmp_path, monkeypatch):
    described = plan(tmp_path, monkeypatch, {"WORKER_MODE": "thin", "ENABLE_SCHEDULER": "false"})
    assert described["pools"][0]["concurrency"] == 5 and described["scheduler"] is True

