"""contrib/: the compose files of docs/WORKER_MODES.md start for real.

Docker is not available in CI, so ``contrib/run_local.py --smoke`` runs each compose file's services as local
processes (same commands, same environment, ``REDIS_URL`` pointed at a throwaway loopback redis-server), runs one
job of every type at every priority plus a delayed one, and stops them by pid; every process must exit 0.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONTRIB = ROOT / "contrib"
COMPOSE_FILES = sorted((CONTRIB / "compose").glob("*.yml"))
DEPLOYED = ("bananas-redis", "bananas-router-job-type", "bananas-mode-thin-plus", "bananas-mode-specialized",
            "bananas-mode-job-specialized", "bananas-mode-scaled", "bananas-mode-scheduler-only")
"""What contrib/Dockerfile installs besides the kernel; the smoke run needs them all."""


def _missing() -> list[str]:
    missing = []
    for dist in DEPLOYED:
        try:
            distribution(dist)
        except PackageNotFoundError:
            missing.append(dist)
    return missing


def _run_local():
    spec = importlib.util.spec_from_file_location("contrib_run_local", CONTRIB / "run_local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _services(path: Path) -> dict[str, dict]:
    return _run_local().parse_compose(path.read_text())["services"]


def _env(service: dict) -> dict[str, str]:
    return dict(item.split("=", 1) for item in service["environment"])


def test_every_deployment_pattern_has_a_compose_file():
    names = {path.name for path in COMPOSE_FILES}
    assert names == {"thin.yml", "default.yml", "specialized.yml", "job-specialized.yml", "mixed.yml",
                     "thin-plus.yml", "scaled.yml"}
    assert (CONTRIB / "Dockerfile").is_file() and (CONTRIB / "run-local.sh").is_file()


def test_the_dockerfile_installs_every_deployed_plugin_and_no_removed_one():
    text = (CONTRIB / "Dockerfile").read_text()
    assert all(f"/src/plugins/{dist}" in text for dist in DEPLOYED)
    installed = {line.strip().rstrip(" \\").removeprefix("/src/plugins/") for line in text.splitlines()
                 if line.strip().startswith("/src/plugins/")}
    assert installed == set(DEPLOYED)
    assert all((ROOT / "plugins" / dist / "pyproject.toml").is_file() for dist in installed)


def test_compose_files_use_the_guides_variables():
    # Pattern 2 of the guide: high 3 × 50, normal 2 × 30, low 1 × 10, plus the dedicated scheduler
    services = _services(CONTRIB / "compose" / "specialized.yml")
    rows = {name: (_env(s).get("WORKER_PRIORITIES"), _env(s).get("WORKER_CONCURRENCY"), s["deploy"]["replicas"])
            for name, s in services.items() if name != "redis"}
    assert rows == {"worker-high": ("high", "50", 3), "worker-normal": ("normal", "30", 2),
                    "worker-low": ("low", "10", 1), "scheduler": (None, None, 1)}
    assert _env(services["scheduler"])["WORKER_MODE"] == "scheduler-only"
    assert services["worker-high"]["command"] == ["bananas", "worker", "--app", "tasks:app"]
    assert services["worker-high"]["deploy"]["resources"]["limits"] == {"cpus": "4", "memory": "4G"}
    # Pattern 3: the job-specialized workers and the catch-all
    services = _services(CONTRIB / "compose" / "job-specialized.yml")
    assert _env(services["worker-cpu"])["WORKER_JOB_TYPES"] == "generate_report,process_analytics"
    assert _env(services["worker-general"])["WORKER_MODE"] == "default"


def test_the_subset_parser():
    parse = _run_local().parse_compose
    text = """
    # a comment
    name: x   # trailing comment
    services:
      a:
        command: ["bananas", "worker"]
        environment:
          - A=1
          - B=x#y
        deploy:
          replicas: 2
          flag: true
        quoted: 'q # not a comment'
        list_at_key_indent:
        - one
    """
    import textwrap

    assert parse(textwrap.dedent(text)) == {
        "name": "x",
        "services": {"a": {"command": ["bananas", "worker"], "environment": ["A=1", "B=x#y"],
                           "deploy": {"replicas": 2, "flag": True}, "quoted": "q # not a comment",
                           "list_at_key_indent": ["one"]}},
    }


@pytest.mark.slow
@pytest.mark.skipif(bool(_missing()), reason=f"the deployments need {', '.join(_missing())} installed")
def test_every_compose_file_starts_and_runs_the_demo_jobs(tmp_path):
    # Given every compose file, each run as local processes on its own throwaway Redis, all at once
    runs = {}
    for path in COMPOSE_FILES:
        logs = tmp_path / path.stem
        command = [sys.executable, str(CONTRIB / "run_local.py"), str(path), "--smoke", "--timeout", "60",
                   "--logs", str(logs)]
        runs[path.name] = (subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT), logs)
    deadline = time.monotonic() + 150
    failures = {}
    try:
        for name, (proc, logs) in runs.items():
            # When each finishes / Then its services started, ran every demo job and stopped with status 0
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            text = out.decode(errors="replace")
            if proc.returncode != 0 or "31 demo jobs completed" not in text:
                worker_logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in logs.glob("*.log"))
                failures[name] = f"{text}\n{worker_logs}"
    finally:
        for proc, _ in runs.values():
            if proc.poll() is None:  # our own child, by its pid: SIGTERM makes it stop its services first
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
    assert failures == {}, "\n\n".join(f"== {name}\n{text}" for name, text in failures.items())


# -- contrib/elasticsearch: the local cluster and the Kibana dashboard of docs/LOG_TIERS.md ---------------------------

ES = CONTRIB / "elasticsearch"
KQL_FIELD = re.compile(r"([A-Za-z_@][\w.]*)\s*(?::|>=|<=|>|<)")
"""A field name in a KQL query: ``level:ERROR``, ``duration_ms >= 1000``."""


def _saved_objects() -> list[dict]:
    lines = (ES / "kibana-dashboard.ndjson").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _fields_used(obj: dict) -> set[str]:
    """Every field name a saved object refers to: time field, columns, sort, aggregation fields, KQL queries."""
    attrs = obj["attributes"]
    fields: set[str] = set()
    if obj["type"] == "index-pattern":
        fields.add(attrs["timeFieldName"])
    fields.update(attrs.get("columns", []))
    fields.update(field for field, _ in attrs.get("sort", []))
    if "visState" in attrs:
        aggs = json.loads(attrs["visState"])["aggs"]
        fields.update(agg["params"]["field"] for agg in aggs if "field" in agg["params"])
    search_source = attrs.get("kibanaSavedObjectMeta", {}).get("searchSourceJSON")
    if search_source:
        fields.update(KQL_FIELD.findall(json.loads(search_source)["query"]["query"]))
    return fields


def test_the_elasticsearch_compose_file_runs_elasticsearch_and_kibana_single_node():
    services = _run_local().parse_compose((ES / "docker-compose.yml").read_text())["services"]
    assert set(services) == {"elasticsearch", "kibana"}
    es_env = _env(services["elasticsearch"])
    assert es_env["discovery.type"] == "single-node" and services["elasticsearch"]["ports"] == ["9200:9200"]
    assert _env(services["kibana"])["ELASTICSEARCH_HOSTS"] == "http://elasticsearch:9200"
    assert services["kibana"]["ports"] == ["5601:5601"]
    es_major = services["elasticsearch"]["image"].rpartition(":")[2].split(".")[0]
    assert services["kibana"]["image"].rpartition(":")[2].split(".")[0] == es_major


def test_the_kibana_dashboard_uses_only_the_flat_models_field_names():
    from bananas.log_record import CONTEXT_FIELDS, FIXED_FIELDS

    model = set(FIXED_FIELDS) | set(CONTEXT_FIELDS)
    objects = _saved_objects()
    used = {field for obj in objects for field in _fields_used(obj)}
    assert {"time", "level", "log_source", "job_name", "duration_ms", "error.keyword"} <= used  # the parser works
    assert {field.removesuffix(".keyword") for field in used} <= model, used - model
    pattern = next(obj for obj in objects if obj["type"] == "index-pattern")
    assert pattern["attributes"]["title"] == "bananas-logs-*"  # the plugin's default LOG_ES_INDEX_PREFIX


def test_the_kibana_dashboards_references_resolve():
    objects = _saved_objects()
    ids = {(obj["type"], obj["id"]) for obj in objects}
    assert len(ids) == len(objects)
    for obj in objects:
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in ids, (obj["id"], ref)
    (dashboard,) = [obj for obj in objects if obj["type"] == "dashboard"]
    panels = json.loads(dashboard["attributes"]["panelsJSON"])
    names = {ref["name"] for ref in dashboard["references"]}
    assert len(panels) == len(names) >= 6 and {panel["panelRefName"] for panel in panels} == names
    queries = {json.loads(obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])["query"]["query"]
               for obj in objects if obj["type"] in ("search", "visualization")}
    assert "log_source:bananas_job and level:ERROR" in queries  # docs/OBSERVABILITY.md's example query
