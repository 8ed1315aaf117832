"""The deployment examples' app: the job types of docs/WORKER_MODES.md, each a short stand-in.

Workers: ``bananas worker --app tasks:app`` (what every compose service runs). Producer: ``python tasks.py`` enqueues
one job of each type at each priority, plus a delayed one, and prints their ids.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bananas import Bananas

app = Bananas()  # bananas.toml in this folder, REDIS_URL from the environment

CPU_BOUND = ("generate_report", "process_analytics")
"""Sync handlers: they run in the worker's thread pool."""
IO_BOUND = ("send_email", "fetch_data", "upload_files", "process_images", "run_migrations", "backup_data", "cleanup",
            "nightly_report")
"""Async handlers: they run on the worker's event loop."""
JOB_TYPES = CPU_BOUND + IO_BOUND


def _sync(name: str) -> Any:
    def handler(seconds: float = 0.05, **_: Any) -> str:
        time.sleep(seconds)
        return name

    return handler


def _async(name: str) -> Any:
    async def handler(seconds: float = 0.05, **_: Any) -> str:
        await asyncio.sleep(seconds)
        return name

    return handler


for _name in CPU_BOUND:
    app.job(_name, timeout="2m")(_sync(_name))
for _name in IO_BOUND:
    app.job(_name, timeout="1m")(_async(_name))


def enqueue_demo(types: tuple[str, ...] = JOB_TYPES) -> list[Any]:
    """One job of each type at each priority, and one delayed ``cleanup``; returns the handles."""
    specs: list[dict[str, Any]] = [
        {"name": name, "payload": {}, "priority": priority} for name in types for priority in ("high", "normal", "low")
    ]
    specs.append({"name": "cleanup", "payload": {}, "delay": "1s"})
    return app.enqueue_many(specs)


if __name__ == "__main__":
    for handle in enqueue_demo():
        print(handle.id, handle.job.name, handle.job.priority.value, handle.job.queue)
    app.close()
