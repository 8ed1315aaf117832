"""``bananas es-init`` and a real ``bananas worker`` with ``LOG_ES_ENABLED=true``, as subprocesses against the
stand-in. Every process is stopped by its pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from bananas_elasticsearch.templates import ilm_policy, index_template


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANANAS_", "WORKER_", "LOG_", "REDIS_"))}
    return {**env, "LOG_COLOR": "false", **extra}


def es_init(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bananas.cli", "es-init", *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=60)


def test_es_init_installs_and_is_idempotent(standin, tmp_path):
    for _ in range(2):
        result = es_init(tmp_path, LOG_ES_ADDRESSES=standin.url, LOG_ES_INDEX_PREFIX="bananas-logs-prod")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == (
            "es-init: ILM policy bananas-logs-prod-policy and index template bananas-logs-prod "
            f"(indices bananas-logs-prod-*) installed on {standin.url}"
        )
    assert standin.templates == {"bananas-logs-prod": index_template("bananas-logs-prod")}
    assert standin.policies == {"bananas-logs-prod-policy": {"policy": ilm_policy()}}


def test_es_init_print_sends_nothing(standin, tmp_path):
    result = es_init(tmp_path, "--print", LOG_ES_ADDRESSES=standin.url)
    assert result.returncode == 0 and standin.requests == []
    printed = json.loads(result.stdout)
    assert printed["index_template"]["bananas-logs"]["index_patterns"] == ["bananas-logs-*"]
    assert printed["policy"]["bananas-logs-policy"]["policy"]["phases"]["delete"]["min_age"] == "90d"


def test_es_init_unreachable_is_one_line(standin, tmp_path):
    url = standin.url
    standin.stop()
    result = es_init(tmp_path, LOG_ES_ADDRESSES=url)
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: cannot reach Elasticsearch at {url}: ConnectionError")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_es_init_refused_is_one_line(standin, tmp_path):
    standin.refuse = 401  # a secured cluster without credentials
    result = es_init(tmp_path, LOG_ES_ADDRESSES=standin.url)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: Elasticsearch at {standin.url} refused es-init: 401 missing authentication credentials for REST "
        "request"
    ]


def test_es_init_bad_setting_is_a_usage_error(tmp_path):
    result = es_init(tmp_path, LOG_ES_NUM_WORKERS="0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "Error: invalid logging.elasticsearch.num_workers = 0 (from env LOG_ES_NUM_WORKERS): "
        "must be an integer from 1 to 64"
    ]


APP = textwrap.dedent(
    '''
    from loguru import logger
    from bananas import Bananas

    app = Bananas()


    @app.job("greet")
    def greet(who):
        logger.bind(log_source="bananas_job", job_name="greet").warning(f"hello {who}")


    app.enqueue_many([{"name": "greet", "payload": {"who": f"w{n}"}} for n in range(3)])
    '''
)


def test_a_worker_ships_its_records_to_elasticsearch(standin, tmp_path):
    (tmp_path / "esapp.py").write_text(APP)
    env = _env(BANANAS_BROKER="memory://es-e2e", LOG_ES_ENABLED="true", LOG_ES_ADDRESSES=standin.url,
               LOG_ES_FLUSH_INTERVAL="200ms", PYTHONPATH=str(tmp_path))
    out = open(tmp_path / "worker.out", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "bananas.cli", "worker", "--app", "esapp"], cwd=tmp_path,
                            env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while sum(d["msg"].startswith("hello") for d in standin.docs()) < 3:
            assert time.monotonic() < deadline, (tmp_path / "worker.out").read_text()[-3000:]
            assert proc.poll() is None, (tmp_path / "worker.out").read_text()[-3000:]
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()
    docs = standin.docs("bananas-logs-*")
    jobs = [d for d in docs if d["log_source"] == "bananas_job"]
    assert sorted(d["msg"] for d in jobs) == ["hello w0", "hello w1", "hello w2"]
    assert all(d["job_name"] == "greet" and d["level"] == "WARNING" for d in jobs)
    assert any(d["log_source"] == "bananas_internal" and "stopped" in d["msg"] for d in docs)  # flushed at exit
