"""The FastAPI recipe of docs/INTEGRATION.md against a real Redis and a real worker process (the kernel's test suite
runs every recipe on memory://; this one shows the same files work unchanged on the configured broker).

The recipe's ``tasks.py`` and ``fastapi_app.py`` are written into a directory with its ``bananas.toml`` pointing at
a throwaway redis-server; ``bananas worker --app tasks`` runs there as a subprocess (stopped by its pid), and the
FastAPI app runs in this process, opened through its lifespan, with an ``httpx.AsyncClient``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from bananas_redis.e2e import clean_env, e2e_server, wait_until

ROOT = Path(__file__).resolve().parents[3]
BLOCK = re.compile(r"```(?:python|toml)\n# ([\w./-]+)\n(.*?)\n```", re.S)

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("fastapi", "httpx")),
    reason="the FastAPI recipe needs fastapi and httpx (test dependencies in requirements-dev.txt)",
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The recipe's files on a fresh redis-server, a worker process running them, this process in that directory."""
    files = dict(BLOCK.findall((ROOT / "docs" / "INTEGRATION.md").read_text(encoding="utf-8")))
    with e2e_server() as server:
        for name in ("bananas.toml", "tasks.py", "fastapi_app.py"):
            (tmp_path / name).write_text(files[name].replace("redis://127.0.0.1:6379/0", server.url))
        log = tmp_path / "worker.log"
        with log.open("wb") as out:
            worker = subprocess.Popen([sys.executable, "-m", "bananas.cli", "worker", "--app", "tasks"],
                                      cwd=tmp_path, env={**clean_env(), "PYTHONPATH": "."}, stdout=out,
                                      stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: "started: mode" in log.read_text(errors="replace") or worker.poll() is not None,
                       30, "the worker to start", lambda: log.read_text(errors="replace")[-3000:])
            assert worker.poll() is None, log.read_text(errors="replace")[-3000:]
            monkeypatch.chdir(tmp_path)
            monkeypatch.syspath_prepend(str(tmp_path))
            for key in [k for k in os.environ if k.startswith(("BANANAS_", "REDIS_"))]:
                monkeypatch.delenv(key)
            yield tmp_path
        finally:
            for module in ("tasks", "fastapi_app"):
                sys.modules.pop(module, None)
            if worker.poll() is None:
                os.kill(worker.pid, signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(worker.pid, signal.SIGKILL)
                worker.wait(20)


async def test_the_fastapi_recipe_enqueues_on_redis_and_awaits_the_workers_result(project):
    # Given the recipe's FastAPI app on the configured Redis, opened through its lifespan
    import httpx
    import tasks
    from fastapi_app import api

    assert tasks.app.broker_url.startswith("redis://")
    transport = httpx.ASGITransport(app=api)
    async with api.router.lifespan_context(api), httpx.AsyncClient(transport=transport,
                                                                     base_url="http://api") as client:
        # When a request enqueues and awaits the result, and another only enqueues
        now = await client.post("/images/3/resize-now", params={"width": 640})
        later = (await client.post("/images/4/resize")).json()["job_id"]

        async def completed() -> bool:
            return (await client.get(f"/jobs/{later}")).json()["status"] == "completed"

        for _ in range(200):
            if await completed():
                break
            await asyncio.sleep(0.05)

        # Then the worker process ran both, and the first request got its result
        assert now.status_code == 200, now.text
        assert now.json()["result"] == "image 3 resized to 640px"
        assert await completed()
        assert await tasks.app.get_result_async(later) == "image 4 resized to 800px"
