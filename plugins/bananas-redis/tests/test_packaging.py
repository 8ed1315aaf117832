"""Every package of the repository builds a wheel and an sdist, and a clean venv given only
``pip install "bananas-queue[redis]"`` (from those files) runs a worker that completes a job on a real Redis.

This is what a user gets from PyPI once the packages are published, and what the README's install section does today
from a checkout. It runs in CI as part of the README's test command.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from bananas_redis.e2e import e2e_server

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = [ROOT, *sorted(p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file())]

TASKS = textwrap.dedent(
    """
    from bananas import Bananas

    app = Bananas()

    @app.job("add")
    def add(a: int, b: int) -> int:
        return a + b
    """
)


def _run(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result


def _clean_env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("BANANAS_", "WORKER_", "REDIS_", "LOG_"))}
    keep.pop("VIRTUAL_ENV", None)
    return {**keep, **extra}


@pytest.mark.slow
def test_every_package_builds_and_the_redis_extra_runs_a_job_from_a_clean_venv(tmp_path: Path) -> None:
    # Given a wheel and an sdist of every package (python -m build; hatchling comes from the test venv)
    dist = tmp_path / "dist"
    for package in PACKAGES:
        _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, package)
    built = sorted(path.name for path in dist.iterdir())
    for package in PACKAGES:
        name = (package / "pyproject.toml").read_text().split('name = "', 1)[1].split('"', 1)[0]
        stem = name.replace("-", "_")
        assert any(n.startswith(stem + "-") and n.endswith(".whl") for n in built), (name, built)
        assert any(n.startswith(stem + "-") and n.endswith(".tar.gz") for n in built), (name, built)

    # When a clean venv installs the kernel with its redis extra, from those files
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    _run(venv / "bin" / "pip", "install", "-q", "--find-links", dist, "bananas-queue[redis]", env=_clean_env())
    installed = _run(venv / "bin" / "pip", "list", "--format=freeze", env=_clean_env()).stdout
    ours = sorted(line.split("==")[0] for line in installed.splitlines() if line.lower().startswith("bananas"))
    assert ours == ["bananas-queue", "bananas-redis"]

    # Then `bananas worker` runs a job against a real Redis, and the client gets its result with no other setting
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "tasks.py").write_text(TASKS)
    with e2e_server() as server:
        env = _clean_env(REDIS_URL=server.url)
        worker = subprocess.Popen([venv / "bin" / "bananas", "worker", "--app", "tasks:app"], cwd=app_dir, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            client = (
                "from bananas import Client; "
                f"print(Client({server.url!r}).submit_and_wait('add', {{'a': 2, 'b': 3}}, timeout=60))"
            )
            assert _run(venv / "bin" / "python", "-c", client, cwd=app_dir, env=env).stdout.strip() == "5"
        finally:
            worker.terminate()
            output, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0, output
        assert "Traceback" not in output
        assert "worker" in output and " started: mode default" in output
