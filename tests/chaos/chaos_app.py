"""The app the chaos drills run in real ``bananas worker`` processes (``--app chaos_app``).

Every execution is counted in a separate redis-server, the *ledger* (``CHAOS_LEDGER_URL``), never in the broker, so
the counts survive a broker crash:

=====================  ======  ==========================================================================
ledger key             type    contents
=====================  ======  ==========================================================================
``runs``               HASH    job key -> handler starts (any process)
``done``               HASH    job key -> handler ends without an exception
``succeeded``          HASH    job key -> ``bananas_job_succeeded`` calls: the kernel calls it only after an
                               ack that still held the lease, so a fenced (late) ack never counts here
``starts:<key>``       LIST    ``"<pid> <unix time>"`` of every start of ``key``
``running:<pid>``      SET     keys whose handler started in ``pid`` and has not returned
``inflight:<pid>``     SET     keys started in ``pid`` whose ack has not been confirmed (held by that process)
``pids``               SET     pids of every worker process that started (``bananas_worker_started``)
=====================  ======  ==========================================================================

Job ``work(key, secs=0.0, poison=None)`` sleeps ``secs``; ``poison="exit"`` calls ``os._exit(1)`` and
``poison="kill"`` SIGKILLs its own process, after counting the start.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import redis

from bananas import Bananas, hookimpl

_clients: dict[int, redis.Redis] = {}


def ledger() -> redis.Redis:
    """This process's client of the ledger (one per pid: a forked child never reuses its parent's sockets)."""
    pid = os.getpid()
    client = _clients.get(pid)
    if client is None:
        client = _clients[pid] = redis.Redis.from_url(os.environ["CHAOS_LEDGER_URL"], socket_timeout=10)
    return client


class Ledger:
    """Observer: worker starts and confirmed (unfenced) acks."""

    __name__ = "chaos-ledger"

    @hookimpl
    def bananas_worker_started(self, worker: Any) -> None:
        ledger().sadd("pids", worker.pid)

    @hookimpl
    def bananas_job_succeeded(self, job: Any, result: Any, duration: float) -> None:
        key = job.payload.get("key", job.id) if isinstance(job.payload, dict) else job.id
        pipe = ledger().pipeline(transaction=False)
        pipe.hincrby("succeeded", key, 1)
        pipe.srem(f"inflight:{os.getpid()}", key)
        pipe.execute()


app = Bananas(plugins=[Ledger()])


@app.job("work", max_retries=0)
def work(key: str, secs: float = 0.0, poison: str | None = None) -> str:
    pid = os.getpid()
    pipe = ledger().pipeline(transaction=False)
    pipe.hincrby("runs", key, 1)
    pipe.rpush(f"starts:{key}", f"{pid} {time.time():.6f}")
    pipe.sadd(f"running:{pid}", key)
    pipe.sadd(f"inflight:{pid}", key)
    pipe.execute()
    if poison == "exit":
        os._exit(1)
    if poison == "kill":
        os.kill(pid, signal.SIGKILL)
        time.sleep(5)
    end = time.monotonic() + secs
    while time.monotonic() < end:  # short steps: a JobInterrupt (timeout, shutdown) lands between them
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))
    pipe = ledger().pipeline(transaction=False)
    pipe.hincrby("done", key, 1)
    pipe.srem(f"running:{pid}", key)
    pipe.execute()
    return key
