"""Periodic-job end-to-end helpers on a real redis-server (test support, like :mod:`bananas_redis.e2e`): an app
whose processes record every periodic job they enqueue and run, and readers of those records.

The app (``cronapp.py``, written by :func:`write_cron_app`) has one async handler, ``beat``; its schedules come from
``BANANAS_PERIODIC`` (:func:`periodic_env`). Each process pushes to Redis: ``e2e:started`` when its worker started
(so :meth:`~bananas_redis.e2e.Fleet.wait_started` works), ``cron:enqueued`` for every periodic job it enqueued (id,
schedule, tick, process name, pid) and ``cron:runs`` for every job start. Start processes with
``fleet.start(name, env, command=cron_worker())``.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from bananas_redis.e2e import Fleet

__all__ = ["CRON_APP", "cron_worker", "enqueued", "periodic_env", "runs", "ticks_of", "write_cron_app"]

CRON_APP = '''
"""The periodic e2e app: one handler, and a recorder of every periodic enqueue and job start."""
import json
import os
import time

import redis

from bananas import Bananas, hookimpl

WORKER = os.environ.get("TEST_WORKER_NAME", "unnamed")
_redis = redis.Redis.from_url(os.environ["REDIS_URL"])


class Recorder:
    @hookimpl
    def bananas_worker_started(self, worker):
        row = {"worker": WORKER, "pid": os.getpid(), "child": None, "at": time.time()}
        _redis.rpush("e2e:started", json.dumps(row))

    @hookimpl
    def bananas_job_enqueued(self, job):
        if "periodic" in job.headers:
            row = {"id": job.id, "schedule": job.headers["periodic"], "tick": float(job.headers["periodic-tick"]),
                   "worker": WORKER, "pid": os.getpid(), "at": time.time()}
            _redis.rpush("cron:enqueued", json.dumps(row))

    @hookimpl
    def bananas_job_started(self, job, pool_id):
        _redis.rpush("cron:runs", json.dumps({"id": job.id, "worker": WORKER, "at": time.time()}))


app = Bananas(plugins=[Recorder()])


@app.job()
async def beat():
    return None
'''


def write_cron_app(root: Path) -> None:
    """Write ``cronapp.py`` into ``root``."""
    (root / "cronapp.py").write_text(textwrap.dedent(CRON_APP))


def cron_worker(*args: str) -> list[str]:
    """The command of one ``bananas worker --app cronapp`` process."""
    return [sys.executable, "-m", "bananas.cli", "worker", "--app", "cronapp", *args]


def periodic_env(*schedules: dict[str, Any], **env: str) -> dict[str, str]:
    """``BANANAS_PERIODIC`` for ``schedules`` (job ``beat`` unless given), plus ``env``."""
    tables = [{"job": "beat", **schedule} for schedule in schedules]
    return {"BANANAS_PERIODIC": json.dumps(tables), **env}


def enqueued(fleet: Fleet) -> list[dict[str, Any]]:
    """Every periodic enqueue recorded so far, in order."""
    return [json.loads(row) for row in fleet.redis.lrange("cron:enqueued", 0, -1)]


def runs(fleet: Fleet) -> list[dict[str, Any]]:
    """Every job start recorded so far."""
    return [json.loads(row) for row in fleet.redis.lrange("cron:runs", 0, -1)]


def ticks_of(rows: list[dict[str, Any]], schedule: str) -> list[float]:
    """The ticks of ``schedule`` in ``rows``, sorted (a duplicate shows up twice)."""
    return sorted(row["tick"] for row in rows if row["schedule"] == schedule)
