"""contrib/prometheus/: the alert rules pass ``promtool check rules`` and their unit tests (``promtool test rules``),
the scrape example passes ``promtool check config``, a real ``/metrics`` scrape of a worker passes ``promtool check
metrics``, and the dashboard and the alerts name only metrics a worker really exposes.

promtool comes from Debian's ``prometheus`` package (``.ci/run`` installs it); without it these tests skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bananas.worker_mode import PoolPlan, WorkerPlan

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "contrib" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")
METRIC = re.compile(r"\bbananas_[a-z_]+")


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=PROM, input=stdin, capture_output=True, text=True, timeout=60)


@pytest.fixture
def scrape(make_app, run_worker, wait_for, free_port) -> str:
    """The /metrics text of a real worker after jobs of every outcome."""
    port = free_port
    app = make_app(overrides={"metrics.port": port})

    @app.job("ok")
    def ok() -> None:
        return None

    @app.job("boom", max_retries=1)
    def boom() -> None:
        raise RuntimeError("no")

    queues = app.router.queues(priorities=["high", "normal", "low"])
    worker = run_worker(app, WorkerPlan(mode="test", pools=(PoolPlan("main", 2, queues, worker_id="main-1"),)))
    for priority in ("high", "normal", "low"):
        app.enqueue("ok", priority=priority)
    app.enqueue("boom")
    wait_for(lambda: worker.stats.dead == 1 and worker.stats.completed == 3, timeout=15)

    def text() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return reply.read().decode()

    wait_for(lambda: 'status="dead"' in text() and "bananas_workers_alive" in text(), timeout=10)
    return text()


@needs_promtool
def test_alert_rules_pass_promtool_check_rules():
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


@needs_promtool
def test_alert_rules_pass_their_unit_tests():
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_scrape_example_passes_promtool_check_config():
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_a_real_scrape_passes_promtool_check_metrics(scrape):
    result = promtool("check", "metrics", stdin=scrape)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


def test_dashboard_and_alerts_use_only_exposed_metric_names(scrape):
    # Given the names of a real scrape (families and their samples: _total, _bucket, _sum, _count)
    exposed = set()
    for family in text_string_to_metric_families(scrape):
        exposed.add(family.name)
        exposed.update(sample.name for sample in family.samples)

    # When the dashboard's and the alerts' expressions are read
    dashboard = json.loads((PROM / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    exprs.append((PROM / "alerts.yml").read_text())

    # Then every bananas_* name they use is exposed, and the names are all there
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used and used <= exposed, sorted(used - exposed)
    for name in ("bananas_jobs_total", "bananas_job_duration_seconds_bucket", "bananas_job_wait_seconds_bucket",
                 "bananas_queue_depth", "bananas_worker_utilization", "bananas_error_rate", "bananas_workers_alive"):
        assert name in exposed, name
