"""The `bananas` CLI: user errors are one line and exit 2; config and worker --dry-run output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

APP = textwrap.dedent(
    """
    from bananas import Bananas

    app = Bananas()

    @app.job("hello")
    def hello(name: str) -> str:
        return "hi " + name
    """
)


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BANANAS_", "WORKER_", "REDIS_", "LOG_"))}
    return subprocess.run(
        [sys.executable, "-m", "bananas.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**base, **(env or {})},
        timeout=60,
    )


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        (
            "[worker]\nconcurrency = 5000\n",
            {},
            "Error: invalid worker.concurrency = 5000 (from file bananas.toml): must be an integer from 1 to 1000",
        ),
        (
            "",
            {"SCHEDULER_INTERVAL": "2m"},
            "Error: invalid worker.scheduler_interval = '2m' (from env SCHEDULER_INTERVAL): "
            "must be a duration from 100ms to 1m",
        ),
        (
            'serializer = "protobuf"\nbroker = "memory://"\n',
            {"BANANAS_LOAD_PLUGINS": ""},  # built-ins only, whatever serializer plugins are installed
            "Error: no serializer named 'protobuf'; installed: json — pip install bananas-protobuf",
        ),
    ],
)
def test_user_errors_print_one_line_and_exit_2(tmp_path: Path, toml: str, env: dict[str, str], message: str) -> None:
    # Given a bad configuration
    (tmp_path / "bananas.toml").write_text(toml)
    (tmp_path / "tasks.py").write_text(APP)
    # When a worker is started
    result = run("worker", "--app", "tasks:app", "--dry-run", cwd=tmp_path, env=env)
    # Then exactly one line names the problem, no traceback, exit 2
    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert "Traceback" not in result.stderr


def test_bad_app_reference_is_a_user_error(tmp_path: Path) -> None:
    result = run("worker", "--app", "nowhere.tasks:app", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: --app nowhere.tasks:app: cannot import 'nowhere.tasks'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_payload_json_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "bananas.toml").write_text('broker = "memory://"\n')
    result = run("enqueue", "hello", "--payload", "{oops", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("Error: --payload: not valid JSON")


def test_enqueue_prints_the_job_id(tmp_path: Path) -> None:
    (tmp_path / "bananas.toml").write_text('broker = "memory://"\n')
    result = run("enqueue", "hello", "--payload", '{"name": "x"}', "--priority", "high", "--delay", "5s", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip()) == 32


def test_worker_dry_run_prints_the_plan(tmp_path: Path) -> None:
    # Given an app module and env vars as the seed guide writes them
    (tmp_path / "tasks.py").write_text(APP)
    env = {"WORKER_MODE": "default", "WORKER_CONCURRENCY": "20", "ENABLE_SCHEDULER": "false",
           "BANANAS_BROKER": "memory://"}
    # When the plan is printed (found by module, without :app)
    result = run("worker", "--app", "tasks", "--dry-run", cwd=tmp_path, env=env)
    # Then it is the default mode's one pool over the three priority queues, scheduler off
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["mode"] == "default" and plan["scheduler"] is False
    assert plan["pools"][0]["concurrency"] == 20 and plan["pools"][0]["queues"] == ["high", "normal", "low"]


def test_worker_flags_win_over_env(tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text(APP)
    result = run(
        "worker", "--app", "tasks:app", "--dry-run", "--mode", "thin", "--concurrency", "7",
        cwd=tmp_path, env={"WORKER_MODE": "default", "WORKER_CONCURRENCY": "20", "BANANAS_BROKER": "memory://"},
    )
    plan = json.loads(result.stdout)
    assert plan["mode"] == "thin" and plan["pools"][0]["concurrency"] == 7


def test_config_json_shows_values_sources_and_redacts_secrets(tmp_path: Path) -> None:
    # Given a file, env vars and a secret in a URL
    (tmp_path / "bananas.toml").write_text('[worker]\nconcurrency = 12\n')
    env = {"BANANAS_BROKER": "memory://app:s3cret@cache:6379/0", "BANANAS_WORKER_CONCURRENCY": "14",
           "WORKER_CONCURRENCY": "13", "BANANAS_SIGNING_KEY": "hunter2"}
    # When `bananas config --json` runs
    result = run("config", "--json", cwd=tmp_path, env=env)
    # Then each value carries its source, the BANANAS_ form won, and no secret is printed
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    rows = {row["key"]: row for row in data["settings"]}
    assert data["config_file"] == "bananas.toml"
    assert rows["worker.concurrency"] == {"key": "worker.concurrency", "value": 14,
                                          "source": "env BANANAS_WORKER_CONCURRENCY", "owner": "bananas-queue",
                                          "env": ["BANANAS_WORKER_CONCURRENCY", "WORKER_CONCURRENCY"],
                                          "help": "Concurrent job slots of this worker."}
    assert rows["broker"]["value"] == "memory://app:***@cache:6379/0"
    assert rows["broker"]["source"] == "env BANANAS_BROKER"
    assert rows["signing_key"]["value"] == "***"  # the log tiers (LOG_ES_PASSWORD) left the kernel
    assert "s3cret" not in result.stdout and "hunter2" not in result.stdout


def test_config_text_output(tmp_path: Path) -> None:
    result = run("config", cwd=tmp_path, env={"BANANAS_BROKER": "memory://"})
    assert result.returncode == 0
    assert "worker.concurrency" in result.stdout and "(default)" in result.stdout


def test_demo_runs_and_tells_what_happened(tmp_path: Path) -> None:
    result = run("demo", "--jobs", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dead after 3 attempts (RuntimeError: card declined for 42)" in result.stdout
    assert "start order: send_email → resize_image → flaky_payment → cleanup" in result.stdout
    assert "sent 'delayed' to later@example.com" in result.stdout


def test_demo_runs_with_the_kernel_alone(tmp_path: Path) -> None:
    # Given no entry-point plugin at all: the thin mode, memory broker and JSON serializer are built in
    result = run("demo", "--jobs", "1", cwd=tmp_path, env={"BANANAS_LOAD_PLUGINS": ""})
    # Then the demo runs as with every plugin installed
    assert result.returncode == 0, result.stderr
    assert "no worker mode named" not in result.stderr
    assert "dead after 3 attempts (RuntimeError: card declined for 42)" in result.stdout
    assert "start order: send_email → resize_image → flaky_payment → cleanup" in result.stdout
    assert "sent 'delayed' to later@example.com" in result.stdout


def test_config_says_which_file_it_found_upwards_and_warns_about_unknown_variables(tmp_path: Path) -> None:
    # Given a project file two levels up and a misspelled variable
    (tmp_path / "bananas.toml").write_text('broker = "memory://proj"\n')
    deep = tmp_path / "src" / "app"
    deep.mkdir(parents=True)
    env = {"BANANAS_WORKER_CONCURENCY": "3"}
    # When `bananas config` runs there
    text = run("config", cwd=deep, env=env)
    data = run("config", "--json", cwd=deep, env=env)
    # Then it names the file and its broker, and reports the variable with a suggestion on stderr (exit 0)
    assert text.returncode == 0 and data.returncode == 0, text.stderr
    assert text.stdout.startswith(f"# config file: {tmp_path / 'bananas.toml'}\n")
    warning = ("environment variable BANANAS_WORKER_CONCURENCY matches no setting and is ignored; "
               "did you mean BANANAS_WORKER_CONCURRENCY?")
    assert text.stderr.strip() == f"Warning: {warning}"
    parsed = json.loads(data.stdout)
    assert parsed["config_file"] == str(tmp_path / "bananas.toml") and parsed["warnings"] == [warning]
    # and with no file anywhere above, it says what it searched
    alone = run("config", cwd=tmp_path.parent, env={"BANANAS_BROKER": "memory://"})
    assert f"# config file: none (no bananas.toml or [tool.bananas] in {tmp_path.parent} or above" in alone.stdout


def test_worker_start_lines_name_the_config_file_broker_and_result_backend(tmp_path: Path) -> None:
    (tmp_path / "bananas.toml").write_text('broker = "memory://w"\n')
    (tmp_path / "tasks.py").write_text(APP)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bananas.cli", "worker", "--app", "tasks:app"], cwd=tmp_path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**{k: v for k, v in os.environ.items() if not k.startswith(("BANANAS_", "WORKER_", "REDIS_", "LOG_"))},
             "WORKER_CONCURENCY": "3"},
    )
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if " started: " in line:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    output = "".join(lines)
    assert "config file: bananas.toml; broker memory://w (file bananas.toml); result backend memory://w" in output
    assert "WORKER_CONCURENCY matches no setting and is ignored; did you mean WORKER_CONCURRENCY?" in output


def test_worker_flags_keep_the_arguments_the_app_was_built_with(tmp_path: Path, monkeypatch) -> None:
    # Given an app whose broker and serializer are given in code, not in any config
    import click

    from bananas.cli import _app

    (tmp_path / "coded_app.py").write_text(textwrap.dedent(
        """
        from bananas import Bananas

        app = Bananas(broker="memory://coded-broker", result_backend="none", env={"BANANAS_LOAD_PLUGINS": ""})

        @app.job("hello")
        def hello() -> str:
            return "hi"
        """
    ))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    ctx = click.Context(click.Command("worker"), obj={"config": None})

    # When a flag overrides a setting (the CLI then rebuilds the app; --processes N children do it too)
    rebuilt = _app(ctx, "coded_app:app", {"worker.concurrency": 3}, {"worker.concurrency": "flag --concurrency"})

    # Then the code's arguments and handlers stay, under the flag
    assert rebuilt.broker_url == "memory://coded-broker" and rebuilt.result_backend_url is None
    assert rebuilt.settings["worker.concurrency"] == 3 and "hello" in rebuilt.handlers
    # and a flag for the broker itself beats the code's argument
    flagged = _app(ctx, "coded_app:app", {"broker": "memory://from-flag"}, {"broker": "flag --broker"})
    assert flagged.broker_url == "memory://from-flag"
