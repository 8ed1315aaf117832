"""Drain throughput on one Redis node vs a 3-master Redis Cluster, with 1, 2 and 4 worker processes (printed, never
asserted).

    .venv/bin/python benchmarks/bench_redis_cluster.py [--n 6000] [--queues 6] [--procs 1,2,4] [--repeat 1]

Starts its own redis-server (``RedisServer``) and 3-node cluster (``LocalCluster``) on free loopback ports, in the same
run. For each target and process count: ``--n`` no-op jobs are enqueued (``app.enqueue_many``, batches of 1,000)
over ``--queues`` queues (``router = "job-type"``: job type ``noop-<i>`` goes to ``b<i>.normal``; on the cluster the
queue names are picked so that each shard holds the same number of queues), then that many ``bananas worker``
subprocesses (``thin`` mode, every queue) drain them; the drain time runs from the workers' start to the moment
every queue is empty with no job running (``depths()`` polled every 20 ms; the workers' start-up, about 0.4 s, is
included). Jobs are no-ops: the figures are the broker's and the runtime's cost per job. Each row also prints the
CPU each redis-server spent per 1,000 jobs (``INFO cpu``, enqueue and drain): the share of the work each shard
carries, which bounds how far throughput can grow with shards once Redis, not the workers, is the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

from bananas_redis import RedisOptions, redis_broker
from bananas_redis.testing import RedisServer
from bananas_redis.testing_ha import LocalCluster, command, ha_binary
from redis.crc import key_slot

from bananas import Bananas

PLUGINS = "bananas-redis,bananas-router-job-type"
PREFIX = "bench"


def tasks(queues: int) -> str:
    return textwrap.dedent(
        f"""
        from bananas import Bananas

        app = Bananas()

        async def noop():
            return None

        for i in range({queues}):
            app.job(f"noop-{{i}}")(noop)
        """
    )


def queue_names(cluster: LocalCluster | None, count: int) -> list[str]:
    """``count`` base names; on a cluster the same number on each shard (round robin over the nodes)."""
    if cluster is None:
        return [f"b{i}" for i in range(count)]
    owners: dict[int, int] = {}
    for start, end, master, *_ in command(cluster.nodes[0].port, "CLUSTER", "SLOTS"):  # type: ignore[union-attr]
        for slot in range(int(start), int(end) + 1):
            owners[slot] = int(master[1])
    ports = sorted(set(owners.values()))
    out: list[str] = []
    n = 0
    while len(out) < count:
        want = ports[len(out) % len(ports)]
        name = f"b{n}"
        if owners[key_slot(f"{{{PREFIX}:{name}.normal}}".encode())] == want:
            out.append(name)
        n += 1
    return out


def write_config(workdir: str, url: str, bases: list[str]) -> None:
    routes = "".join(f'"noop-{i}" = "{b}"\n' for i, b in enumerate(bases))
    with open(os.path.join(workdir, "bananas.toml"), "w") as f:
        f.write(
            f'broker = "{url}"\nrouter = "job-type"\n\n[worker]\nmode = "thin"\nshutdown_timeout = "2s"\n\n'
            f'[broker_options]\nprefix = "{PREFIX}"\n\n[routes]\n{routes}'
        )
    with open(os.path.join(workdir, "bench_cluster_tasks.py"), "w") as f:
        f.write(tasks(len(bases)))


async def wait_empty(url: str, queues: list[str], timeout: float) -> None:
    broker = redis_broker(url, RedisOptions(prefix=PREFIX))
    await broker.connect()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            depths = await broker.depths(queues)
            if all(d.ready == 0 and d.running == 0 and d.scheduled == 0 for d in depths.values()):
                return
            await asyncio.sleep(0.02)
        raise SystemExit(f"drain not done in {timeout}s: {depths}")
    finally:
        await broker.close()


def redis_cpu(ports: list[int]) -> list[float]:
    """CPU seconds (user + sys) each redis-server used so far (``INFO cpu``)."""
    out = []
    for port in ports:
        info = command(port, "INFO", "cpu")
        assert isinstance(info, dict)
        out.append(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))
    return out


def drain(workdir: str, url: str, bases: list[str], n: int, procs: int) -> tuple[float, float]:
    """Enqueue ``n`` jobs, start ``procs`` workers, wait until empty: (seconds, jobs per second)."""
    write_config(workdir, url, bases)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANANAS_", "WORKER_", "LOG_"))}
    env.update(BANANAS_LOAD_PLUGINS=PLUGINS, LOG_LEVEL="warning", METRICS_PORT="0",
               WORKER_QUEUES=",".join(f"{b}.normal" for b in bases),
               PYTHONPATH=workdir + os.pathsep + os.environ.get("PYTHONPATH", ""))
    app = Bananas(config=os.path.join(workdir, "bananas.toml"), env={"BANANAS_LOAD_PLUGINS": PLUGINS})
    try:
        for start in range(0, n, 1000):
            app.enqueue_many([{"name": f"noop-{i % len(bases)}"} for i in range(start, min(n, start + 1000))])
    finally:
        app.close()
    workers = []
    started = time.monotonic()
    try:
        for p in range(procs):
            log = open(os.path.join(workdir, f"worker-{p}.log"), "ab")  # noqa: SIM115 - closed below
            cmd = [sys.executable, "-m", "bananas.cli", "worker", "--app", "bench_cluster_tasks"]
            workers.append((subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        asyncio.run(wait_empty(url, [f"{b}.normal" for b in bases], timeout=300))
        took = time.monotonic() - started
    finally:
        for proc, _ in workers:  # every worker is told first, then each is waited for (killed after 15 s)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc, log in workers:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
            finally:
                log.close()
    return took, n / took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--queues", type=int, default=6)
    ap.add_argument("--procs", default="1,2,4")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    binary = ha_binary()
    if binary is None:
        raise SystemExit("needs redis-server 7+ and redis-cli")
    workdir = tempfile.mkdtemp(prefix="bench-cluster-")
    single = RedisServer(binary).start()
    cluster = LocalCluster(binary).start()
    rows: list[tuple[str, int, float, float]] = []
    try:
        targets = [("1 node", single.url, None), ("3-master cluster", cluster.url, cluster)]
        for _ in range(args.repeat):
            for procs in (int(p) for p in args.procs.split(",")):
                for name, url, which in targets:  # interleaved, so machine noise hits both alike
                    command(single.port, "FLUSHALL")
                    if which is not None:
                        which.flush()
                    ports = [single.port] if which is None else [node.port for node in which.nodes]
                    cpu_before = redis_cpu(ports)
                    took, rate = drain(workdir, url, queue_names(which, args.queues), args.n, procs)
                    cpu = [after - before for after, before in zip(redis_cpu(ports), cpu_before, strict=True)]
                    rows.append((name, procs, took, rate))
                    per_k = ", ".join(f"{1000 * c / args.n * 1000:.0f}" for c in cpu)
                    print(f"{name:>18}  {procs} proc  {args.n} jobs / {args.queues} queues  {took:6.2f} s  "
                          f"{rate:8.0f} jobs/s   redis CPU per 1000 jobs (ms, per node; includes enqueue): {per_k}",
                          flush=True)
    finally:
        single.cleanup()
        cluster.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\ncpus: {os.cpu_count()}; drain time includes worker start-up (~0.4 s per run)")


if __name__ == "__main__":
    main()
