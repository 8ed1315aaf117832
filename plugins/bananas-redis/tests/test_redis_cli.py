"""``bananas queues`` against a real redis-server, through ``python -m bananas.cli`` (the kernel command; the same
tests on memory:// are in tests/test_cli_admin.py). ``bananas dlq`` on Redis: test_redis_worker.py and
test_redis_faults.py."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from bananas.broker import Envelope


def _env(job_id: str, queue: str, eta: float | None = None) -> Envelope:
    return Envelope(job_id, queue, job_id.encode(), eta)


def _queues(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANANAS_", "WORKER_", "LOG_", "REDIS_"))}
    env["BANANAS_LOAD_PLUGINS"] = "bananas-redis"
    return subprocess.run(
        [sys.executable, "-m", "bananas.cli", "queues", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _config(tmp_path: Path, url: str, prefix: str) -> None:
    (tmp_path / "bananas.toml").write_text(
        textwrap.dedent(
            f"""
            broker = "{url}"

            [broker_options]
            prefix = "{prefix}"
            """
        )
    )


async def test_queues_without_any_queue_says_so(redis_url, prefix, tmp_path):
    _config(tmp_path, redis_url, prefix)
    out = await asyncio.to_thread(_queues, tmp_path)
    assert (out.returncode, out.stdout) == (0, "no queues (nothing was enqueued yet)\n"), out.stderr
    as_json = await asyncio.to_thread(_queues, tmp_path, "--json")
    assert (as_json.returncode, json.loads(as_json.stdout)) == (0, []), as_json.stderr


async def test_queues_lists_ready_scheduled_running_and_dead_per_queue(make_broker, redis_url, prefix, tmp_path):
    # Given "a": 3 ready, 1 running, 2 dead; "b": 1 scheduled far in the future
    broker = await make_broker()
    await broker.enqueue([_env(f"a{i}", "a") for i in range(6)] + [_env("b0", "b", eta=4102444800.0)])
    fetched = await broker.fetch(["a"], 3, 0)
    for d in fetched[:2]:
        assert await broker.dead_letter(d, body=d.body, reason="boom")
    _config(tmp_path, redis_url, prefix)

    # When `bananas queues --json` runs / Then one row per known queue with the broker's depths
    out = await asyncio.to_thread(_queues, tmp_path, "--json")
    assert out.returncode == 0, out.stderr
    rows = {row["queue"]: row for row in json.loads(out.stdout)}
    types = {queue: [(t["type"], t["ready"]) for t in row.pop("types")] for queue, row in rows.items()}
    assert rows == {
        "a": {"queue": "a", "ready": 3, "scheduled": 0, "running": 1, "dead": 2},
        "b": {"queue": "b", "ready": 0, "scheduled": 1, "running": 0, "dead": 0},
    }
    assert types == {"a": [("", 3)], "b": []}  # the envelopes carry no job type

    # And the table says the same, then the waiting job types
    table = await asyncio.to_thread(_queues, tmp_path)
    assert table.returncode == 0, table.stderr
    queues_part, types_part = table.stdout.split("\n\n")
    lines = [line.split() for line in queues_part.splitlines()]
    assert lines[0] == ["QUEUE", "READY", "SCHEDULED", "RUNNING", "DEAD"]
    assert sorted(lines[1:]) == [["a", "3", "0", "1", "2"], ["b", "0", "1", "0", "0"]]
    assert [line.split()[:3] for line in types_part.splitlines()[1:]] == [["a", "(untyped)", "3"]]
