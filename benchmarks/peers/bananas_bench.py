"""Bananas in the peers' harness: ``app.enqueue()`` one at a time; ``app.enqueue_many()`` in batches of 1,000 as
"bulk" (one round trip per batch). Worker = ``bananas worker --app bananas_tasks`` (one process, asyncio, acks after
the run, leases renewed by a heartbeat, job records kept 24 h).

Run it next to the other ``<lib>_bench.py`` files (the harness lives in ``$BENCH_PEERS``, default
``../shared/bench/peers`` beside the repository), with a redis-server on the harness's port (6399, no persistence)::

    BENCH_N=20000 BENCH_RUNS=1 .venv/bin/python benchmarks/peers/bananas_bench.py --variant thin

Variants: ``thin``, ``default`` (async handlers, the mode's slots), ``c50``, ``sync`` (default mode, 8 slots, sync
handlers, like Dramatiq's 8 threads), ``sync-c16``, and the process sweep ``sync-p2``, ``sync-p4``, ``async-p2``,
``async-p4`` (``bananas worker --processes N``).
"""

import os
import sys
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.environ.get(
    "BENCH_PEERS", str(Path(__file__).resolve().parents[3] / "shared" / "bench" / "peers")
)  # ../shared beside the repository
sys.path[:0] = [HERE, PEERS]

import bananas_tasks  # noqa: E402
from common import dist_versions, run_bench  # noqa: E402

BIN = os.path.dirname(sys.executable)
BATCH = 1_000


class Client:
    def enqueue_noop(self) -> None:
        bananas_tasks.app.enqueue("noop")

    def enqueue_lat(self, ts: float) -> None:
        bananas_tasks.app.enqueue("lat", {"ts": ts})

    def bulk(self, n: int) -> None:
        for start in range(0, n, BATCH):
            bananas_tasks.app.enqueue_many([{"name": "noop"}] * min(BATCH, n - start))

    def close(self) -> None:
        bananas_tasks.app.close()


def queued(r) -> int:  # noqa: ANN001
    # ready jobs: the per-type ready sets' shared counter (bananas-redis 0.2) plus 0.1's single ready list
    return int(r.get("{bananas:normal}:count") or 0) + r.llen("{bananas:normal}:ready")


def pending(r) -> int:  # noqa: ANN001
    # a job is pending until its ack: ready + running leases
    return queued(r) + r.zcard("{bananas:normal}:leases")


def variant(mode: str, concurrency: int | None, handler: str = "async", processes: int = 1) -> dict:
    env = {"WORKER_MODE": mode, "LOG_LEVEL": "warning", "PYTHONPATH": os.pathsep.join([HERE, PEERS]),
           "BANANAS_BENCH_HANDLER": handler, "METRICS_PORT": "0"}
    label = f"bananas-{mode}-{handler}"
    if concurrency:
        env["WORKER_CONCURRENCY"] = str(concurrency)
        label += f"-c{concurrency}"
    slots = concurrency or {"thin": 5, "default": 10}[mode]
    command = [os.path.join(BIN, "bananas"), "worker", "--app", "bananas_tasks"]
    if processes > 1:
        command += ["--processes", str(processes)]
        label += f"-p{processes}"
    return {
        "label": label,
        "worker_env": env,
        "worker_cmd": command,
        "worker_config": f"bananas worker, {mode} mode, {slots} slots, {handler} handler, {processes} process(es); "
        "Redis broker: leases + heartbeat, batched acks, job records and results kept",
    }


VARIANTS = {
    "thin": variant("thin", None),
    "default": variant("default", None),
    "c50": variant("default", 50),
    "sync": variant("default", 8, "sync"),
    "sync-c16": variant("default", 16, "sync"),
    **{f"sync-p{n}": variant("default", 8, "sync", n) for n in (2, 4)},
    **{f"async-p{n}": variant("default", None, "async", n) for n in (2, 4)},
}

spec = {
    "lib": "bananas",
    "versions": lambda: dist_versions("bananas-queue", "bananas-redis", "redis", "hiredis"),
    "is_async": False,
    "make_client": Client,
    "enqueue_desc": "app.enqueue()",
    "bulk": True,
    "bulk_desc": "app.enqueue_many() in batches of 1,000 (one round trip per batch)",
    "queued": queued,
    "pending": pending,
    "variants": VARIANTS,
}
spec.update(variant("thin", None))

if __name__ == "__main__":
    run_bench(spec)
