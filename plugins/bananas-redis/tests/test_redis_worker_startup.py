"""``bananas worker`` started before Redis: it waits (with backoff, saying so) and then works; with a bound
(``WORKER_BROKER_WAIT``) it gives up with one line and exit status 1, which is not a usage error (2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from bananas_redis.testing import RedisServer, find_redis_servers, free_port

APP = textwrap.dedent(
    """
    import os
    from bananas import Bananas

    app = Bananas()

    @app.job("touch")
    def touch(key):
        with open(os.environ["TEST_LOG"], "a") as f:
            f.write(key + "\\n")
    """
)


def _env(tmp_path: Path, url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANANAS_", "WORKER_", "REDIS_"))}
    env.update(
        BANANAS_LOAD_PLUGINS="bananas-redis",
        REDIS_URL=url,
        TEST_LOG=str(tmp_path / "done.log"),
        PYTHONPATH=str(tmp_path),
        LOG_COLOR="false",
        **extra,
    )
    return env


def test_a_bounded_wait_for_an_unreachable_broker_ends_in_one_line_and_status_1(tmp_path: Path) -> None:
    (tmp_path / "wapp.py").write_text(APP)
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "bananas.cli", "worker", "--app", "wapp"],
        cwd=tmp_path,
        env=_env(tmp_path, url, WORKER_BROKER_WAIT="1s"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 30
    assert "Traceback" not in result.stderr
    assert "waiting for the broker" in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "unavailable during connect" in errors[0], result.stderr
    assert "hunter2" not in result.stderr


def test_a_worker_started_before_redis_waits_then_runs_jobs(tmp_path: Path) -> None:
    (tmp_path / "wapp.py").write_text(APP)
    binary = find_redis_servers()[0][1]
    server = RedisServer(binary)
    log = tmp_path / "worker.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bananas.cli", "worker", "--app", "wapp"],
            cwd=tmp_path,
            env=_env(tmp_path, server.url, SHUTDOWN_TIMEOUT="2s"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while "waiting for the broker" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        time.sleep(1.0)
        assert proc.poll() is None, log.read_text()  # still waiting, not exited
        server.start()
        env = _env(tmp_path, server.url)
        for i in range(5):
            subprocess.run(
                [sys.executable, "-m", "bananas.cli", "enqueue", "touch", "--payload", f'{{"key": "k{i}"}}'],
                cwd=tmp_path, env=env, check=True, capture_output=True, timeout=60,
            )
        done = tmp_path / "done.log"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (done.exists() and len(done.read_text().split()) == 5):
            time.sleep(0.1)
        assert sorted(done.read_text().split()) == [f"k{i}" for i in range(5)], log.read_text()
        assert "broker reachable after" in log.read_text()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        server.cleanup()
