"""End-to-end figures of the real runtime on a local Redis (printed, never asserted).

    .venv/bin/python benchmarks/bench_redis_e2e.py [--n 20000] [--lat-n 2000] [--rate 200] [--idle 30] [--aof]
                                                   [--modes thin,default] [--profile DIR] [--parts ...] [--repeat N]
                                                   [--metrics base,off,on --base DIR] [--scrape-every 1]
                                                   [--handler sync|async] [--concurrency N] [--processes 1,2,4]

Starts its own redis-server on a free loopback port (``bananas_redis.testing.RedisServer``; persistence off like the
peers' harness, ``--aof`` for ``appendfsync always``) and measures, with acks, leases and job records on:

* single enqueue: ``app.enqueue`` N times, one at a time;
* batch enqueue: ``app.enqueue_many`` in batches of 1,000;
* drain: N no-op jobs already queued, ONE ``bananas worker`` subprocess per mode; each job does one ``INCR`` on an
  async redis client and the first and last job stamp the time (first → last job, like the peers' harness);
* Redis commands per job during the drain (``INFO commandstats`` delta of the commands a client sends: EVALSHA,
  BLPOP, HKEYS, HMGET, HSETNX, SCRIPT; the jobs' own INCR/SET and the commands scripts run inside are left out);
* enqueue → start latency p50/p95/p99 of ``--lat-n`` jobs sent at ``--rate``/s to an idle worker;
* idle worker cost: client commands per second over ``--idle`` seconds with nothing to do, with one queue known and
  again after a job went to ``high`` and to ``low`` (three queues).

``--handler sync`` runs the same jobs as plain ``def`` handlers (a blocking redis-py ``INCR``, as most users write);
``--concurrency`` sets ``WORKER_CONCURRENCY``; ``--processes 1,2,4`` drains once per worker process count (each
drain's figures name it), so one run shows how a second and a fourth process scale on this machine. The worker's
CPU per job counts every process of the worker (supervisor and children); Redis's CPU per job is the server's own.

``--parts`` picks the measures (``enqueue,drain,latency,idle``); ``--repeat N`` repeats the enqueue figures and the
drain (each drain with a fresh worker process).

``--logging warning,info:json`` drains once per logging profile ``LEVEL[:FORMAT]`` (``LOG_LEVEL``, ``LOG_FORMAT`` of
the worker; its console goes to a log file), interleaved within each repeat, so the rows compare logging costs in one
run (``benchmarks/bench_logging.py`` runs it this way). Default: ``warning``.

``--metrics off,on`` runs each drain with the worker's metrics endpoint off (``METRICS_PORT=0``) and on (a free
port, scraped every ``--scrape-every`` seconds by this script: 1 by default, much more often than Prometheus's
usual 15-30 s), alternating, in the same run:
the cost of issue 13's metrics. Counting itself (settlement's counters, histograms and busy slot-seconds) runs in
both; ``benchmarks/bench_kernel.py`` prices it per job. ``base`` runs the worker on another source tree of the
kernel given with ``--base DIR`` (put first on its ``PYTHONPATH``), for example the main branch before the metrics:
``git archive main bananas | tar -x -C /tmp/base``. Drain rates on a shared machine vary by 10-20 % from one
drain to the next: use ``--repeat`` and compare medians (printed at the end), and the worker's CPU time per job
(``/proc``), which contention moves much less than the rate.

``--types K`` spreads the enqueued and drained jobs round-robin over K job types (``noop``, ``noop1`` ...; one
handler each), so a worker's fetches are typed over K types (issue 15: each take picks the oldest head among them).

``--profile DIR`` records a py-spy flame graph (``DIR/drain-<mode>.svg``) and a top-style text profile of the worker
during each drain (needs ``pip install py-spy``).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request

import redis
from bananas_redis.testing import RedisServer, find_redis_servers, free_port

from bananas import Bananas

TASKS = textwrap.dedent(
    """
    import os, time
    import redis.asyncio as aredis
    from bananas import Bananas

    app = Bananas()
    N = int(os.environ["BENCH_N"])
    _url = os.environ["BENCH_REDIS"]
    _r = None

    def _conn():
        global _r
        if _r is None:
            _r = aredis.Redis.from_url(_url)
        return _r

    async def noop():
        r = _conn()
        n = await r.incr("bench:done")
        if n == 1:
            await r.set("bench:t_first", repr(time.time()))
        if n == N:
            await r.set("bench:t_last", repr(time.time()))

    for _i in range(int(os.environ.get("BENCH_TYPES", "1"))):  # noop, noop1, noop2 ...: one handler, K job types
        app.job("noop" if _i == 0 else f"noop{_i}")(noop)

    @app.job("lat")
    async def lat(ts):
        now = time.time()
        await _conn().rpush("bench:lat", repr(now - float(ts)))
    """
)

SYNC_TASKS = textwrap.dedent(
    """
    import os, time
    import redis
    from bananas import Bananas

    app = Bananas()
    N = int(os.environ["BENCH_N"])
    _r = redis.Redis.from_url(os.environ["BENCH_REDIS"])  # thread-safe: one pooled connection per slot thread

    @app.job("noop")
    def noop():
        n = _r.incr("bench:done")
        if n == 1:
            _r.set("bench:t_first", repr(time.time()))
        if n == N:
            _r.set("bench:t_last", repr(time.time()))

    @app.job("lat")
    def lat(ts):
        now = time.time()
        _r.rpush("bench:lat", repr(now - float(ts)))
    """
)
"""The same jobs as synchronous handlers (``--handler sync``): one blocking redis-py call each, as most users write."""

PLUGINS = "bananas-redis"
"""The entry points the bench loads (``BANANAS_LOAD_PLUGINS``): the broker and the two worker modes it runs."""

CLIENT_COMMANDS = ("evalsha", "eval", "blpop", "hkeys", "hsetnx", "script", "ping")
"""Commands the broker sends from Python. HMGET also runs inside scripts; the broker only sends it to look up queue
numbers it has not cached, and the scripts' HMGETs are on job records of settle paths, so it is reported apart."""


def pct(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    return values[max(0, math.ceil(p / 100 * len(values)) - 1)]


def commandstats(client: redis.Redis) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in client.info("commandstats").items()}


def redis_cpu(client: redis.Redis) -> float:
    """CPU seconds the Redis server has used (user + system, all its threads)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


def client_commands(d: dict[str, int], *, with_hmget: bool = True) -> int:
    names = CLIENT_COMMANDS if with_hmget else tuple(c for c in CLIENT_COMMANDS if c != "hmget")
    return sum(d.get(name, 0) for name in names)


class WorkerProc:
    """``python -m bananas.cli worker`` as a subprocess, stopped by pid (SIGTERM, then SIGKILL)."""

    def __init__(self, workdir: str, env: dict[str, str], log_path: str, processes: int = 1) -> None:
        self.workdir, self.env, self.log_path, self.processes = workdir, env, log_path, processes
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProc:
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "bananas.cli", "worker", "--app", "bench_tasks"]
        if self.processes > 1:
            cmd += ["--processes", str(self.processes)]
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.log.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its descendants so far (Linux ``/proc``; 0.0 elsewhere):
    with ``--processes N`` the supervisor's children do the work."""
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, cpu seconds)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += stats.get(current, (0, 0.0))[1]
        todo += [child for child, (parent, _) in stats.items() if parent == current]
    return total


def scrape_every(port: int, seconds: float, stop: threading.Event, sizes: list[int]) -> None:
    """GET /metrics every ``seconds`` until ``stop`` (1 s: what a very eager Prometheus would do)."""
    while not stop.wait(seconds):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                sizes.append(len(reply.read()))
        except OSError:
            pass


def wait_for(pred, timeout: float, interval: float = 0.005):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    return None


def main() -> None:  # noqa: PLR0915 - a linear script
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--lat-n", type=int, default=2_000)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--idle", type=float, default=30.0, help="seconds per idle window (>= the lease: 30 s)")
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--modes", default="thin,default")
    ap.add_argument("--handler", choices=("async", "sync"), default="async", help="handler kind of the jobs")
    ap.add_argument("--processes", default="1",
                    help="bananas worker --processes; a comma-separated sweep (1,2,4) drains once per count")
    ap.add_argument("--concurrency", type=int, default=None, help="WORKER_CONCURRENCY (default: the mode's)")
    ap.add_argument("--aof", action="store_true", help="appendonly yes, appendfsync always")
    ap.add_argument("--profile", metavar="DIR", help="py-spy the worker during each drain into DIR")
    ap.add_argument("--parts", default="enqueue,drain,latency,idle", help="which measures to take (comma-separated)")
    ap.add_argument("--repeat", type=int, default=1, help="measure each enqueue figure and drain this many times")
    ap.add_argument("--logging", default="warning", help="worker logging profiles LEVEL[:FORMAT], comma-separated")
    ap.add_argument("--metrics", default="off", help="drains with the metrics endpoint off and/or on (off,on), "
                    "or on the --base kernel (base)")
    ap.add_argument("--base", metavar="DIR", help="a source tree of the kernel for --metrics base")
    ap.add_argument("--scrape-every", type=float, default=1.0, help="seconds between two scrapes with --metrics on")
    ap.add_argument("--types", type=int, default=1, help="job types the jobs are spread over (round-robin)")
    args = ap.parse_args()
    sweep = [int(n) for n in str(args.processes).split(",")]

    binary = os.environ.get("BANANAS_TEST_REDIS_SERVER") or find_redis_servers()[0][1]
    server = RedisServer(binary, appendonly=args.aof).start()
    workdir = tempfile.mkdtemp(prefix="bananas-bench-")
    rows: list[tuple[str, str]] = []
    drains: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}  # worker CPU seconds per job: steadier than wall-clock rates on a busy machine
    try:
        with open(os.path.join(workdir, "bench_tasks.py"), "w") as f:
            f.write(SYNC_TASKS if args.handler == "sync" else TASKS)
        probe = redis.Redis.from_url(server.url)
        env = dict(os.environ)
        env.update(
            BANANAS_BROKER=server.url,
            BENCH_REDIS=server.url,
            BENCH_N=str(args.n),
            BENCH_TYPES=str(args.types),
            LOG_LEVEL="warning",
            BANANAS_LOAD_PLUGINS=PLUGINS,
            PYTHONPATH=workdir + os.pathsep + env.get("PYTHONPATH", ""),
        )
        env.pop("BANANAS_CONFIG", None)
        if args.concurrency:
            env["WORKER_CONCURRENCY"] = str(args.concurrency)
        app = Bananas(broker=server.url, env={"BANANAS_LOAD_PLUGINS": PLUGINS})
        print(f"redis {binary} on {server.url} (aof {'on' if args.aof else 'off'}), N={args.n}, "
              f"{args.types} job type(s)", flush=True)

        # -- enqueue ----------------------------------------------------------------------------------------------
        parts = set(args.parts.split(","))
        app.enqueue("noop", {})  # connect and load scripts outside the timing
        names = ["noop", *(f"noop{i}" for i in range(1, args.types))]
        specs = [{"name": names[i % len(names)], "payload": {}} for i in range(args.batch)]
        for _ in range(args.repeat if "enqueue" in parts else 0):
            probe.flushdb()
            t0 = time.perf_counter()
            for _ in range(args.n):
                app.enqueue("noop", {})
            single = args.n / (time.perf_counter() - t0)
            rows.append(("single enqueue (app.enqueue)", f"{single:,.0f} jobs/s"))
            print(rows[-1], flush=True)
            probe.flushdb()
            t0 = time.perf_counter()
            for _ in range(args.n // args.batch):
                app.enqueue_many(specs)
            batch = (args.n // args.batch * args.batch) / (time.perf_counter() - t0)
            rows.append((f"batch enqueue (enqueue_many × {args.batch})", f"{batch:,.0f} jobs/s"))
            print(rows[-1], flush=True)

        # -- drain + latency + idle, per mode -----------------------------------------------------------------------
        profiles = [tuple(p.split(":", 1)) if ":" in p else (p, "text") for p in args.logging.split(",")]

        def measure(mode: str, *, drain: bool, latency: bool, idle: bool, profile: tuple[str, ...] = (),
                    metrics: str = "off", processes: int = 1) -> None:
            probe.flushdb()
            for _ in range(args.n // args.batch if drain else 0):
                app.enqueue_many(specs)
            port = free_port() if metrics == "on" else 0
            wenv = dict(env, WORKER_MODE=mode, METRICS_PORT=str(port))
            label = mode
            if profile:
                wenv.update(LOG_LEVEL=profile[0], LOG_FORMAT=profile[1])
                label = f"{mode} (LOG_LEVEL={profile[0]}, {profile[1]})" if len(profiles) > 1 else mode
            if metrics == "base":
                if not args.base:
                    raise SystemExit("--metrics base needs --base DIR")
                wenv["PYTHONPATH"] = args.base + os.pathsep + wenv["PYTHONPATH"]
            before = commandstats(probe)
            worker = WorkerProc(workdir, wenv, os.path.join(workdir, f"worker-{mode}.log"), processes).start()
            scraping = threading.Event()
            scrapes: list[int] = []
            if port:
                threading.Thread(target=scrape_every, args=(port, args.scrape_every, scraping, scrapes),
                                 daemon=True).start()
            try:
                assert worker.proc is not None
                if drain:
                    variant = f", metrics {metrics}" if len(metric_runs) > 1 else ""
                    variant += f", {processes} process(es)" if len(sweep) > 1 else ""
                    take_drain(label, worker, before, variant, processes)
                    if port:
                        rows.append((f"  /metrics scrapes during the drain ({mode})", f"{len(scrapes)} "
                                     f"(last {scrapes[-1] if scrapes else 0} bytes)"))
                        print(rows[-1], flush=True)
                else:
                    time.sleep(1.0)  # the worker starts
                if latency:
                    take_latency(mode)
                if idle:
                    take_idle(mode)
            finally:
                scraping.set()
                worker.stop()

        def take_drain(mode: str, worker: WorkerProc, before: dict[str, int], variant: str = "",
                       processes: int = 1) -> None:
            spy: subprocess.Popen[bytes] | None = None
            assert worker.proc is not None
            try:
                first = wait_for(lambda: probe.get("bench:t_first"), 60)
                if first is None:
                    raise RuntimeError(f"{mode}: no job ran; see {worker.log_path}")
                cpu_first = cpu_seconds(worker.proc.pid)
                redis_first = redis_cpu(probe)
                pyspy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
                if args.profile and pyspy:
                    os.makedirs(args.profile, exist_ok=True)
                    out = os.path.join(args.profile, f"drain-{mode}")
                    spy = subprocess.Popen(
                        [pyspy, "record", "-p", str(worker.proc.pid), "-o", out + ".txt", "-f", "raw", "-r", "200",
                         "--gil"],  # only the thread holding the GIL: where the worker's CPU goes
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                last = wait_for(lambda: probe.get("bench:t_last"), 300)
                if last is None:
                    raise RuntimeError(f"{mode}: drain incomplete: {probe.get('bench:done')} of {args.n}")
                drain = (args.n - 1) / (float(last) - float(first))
                cpu_per_job = (cpu_seconds(worker.proc.pid) - cpu_first) / (args.n - 1)
                redis_per_job = (redis_cpu(probe) - redis_first) / (args.n - 1)
                if spy is not None:
                    os.kill(spy.pid, signal.SIGINT)
                    spy.wait(30)
                    spy = None
                wait_for(lambda: probe.zcard("{bananas:normal}:leases") == 0, 10)
                used = delta(commandstats(probe), before)
                per_job = client_commands(used) / args.n
                detail = ", ".join(f"{k} {used.get(k, 0) / args.n:.3f}" for k in CLIENT_COMMANDS if used.get(k))
                counted = "" if len(sweep) > 1 else f", {processes} process(es)"  # (the variant names it)
                rows.append((f"drain, {mode} mode{variant}, {args.handler} handler{counted}",
                             f"{drain:,.0f} jobs/s"))
                drains.setdefault(f"{mode} mode{variant}", []).append(drain)
                cpu.setdefault(f"{mode} mode{variant}", []).append(cpu_per_job)
                print(rows[-1], flush=True)
                rows.append((f"  worker CPU per job ({mode}{variant})", f"{cpu_per_job * 1e6:.1f} µs"))
                print(rows[-1], flush=True)
                rows.append((f"  Redis CPU per job ({mode}{variant})", f"{redis_per_job * 1e6:.1f} µs"))
                print(rows[-1], flush=True)
                rows.append((f"  client commands per job ({mode}{variant})", f"{per_job:.3f}  ({detail})"))
                print(rows[-1], flush=True)
            finally:
                if spy is not None and spy.poll() is None:
                    os.kill(spy.pid, signal.SIGKILL)

        def take_latency(mode: str) -> None:
            time.sleep(2.0)  # idle worker, then paced latency jobs
            probe.delete("bench:lat")
            t0 = time.perf_counter()
            for i in range(args.lat_n):
                pause = t0 + i / args.rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                app.enqueue("lat", {"ts": time.time()})
            wait_for(lambda: probe.llen("bench:lat") >= args.lat_n, 60, 0.01)
            lat = sorted(float(x) * 1000 for x in probe.lrange("bench:lat", 0, -1))
            rows.append(
                (
                    f"  enqueue→start p50/p95/p99 ({mode})",
                    f"{pct(lat, 50):.2f} / {pct(lat, 95):.2f} / {pct(lat, 99):.2f} ms  (max {lat[-1]:.1f}, "
                    f"{len(lat)} jobs)",
                )
            )
            print(rows[-1], flush=True)

        def take_idle(mode: str) -> None:
            for label in ("one queue", "three queues"):
                if label == "three queues":  # a job on high and low too: three queues to reap and schedule
                    app.enqueue("noop", {}, priority="high")
                    app.enqueue("noop", {}, priority="low")
                time.sleep(2.0)
                queues = len(probe.hkeys("bananas:queues"))
                before_idle = commandstats(probe)
                time.sleep(args.idle)
                idle = delta(commandstats(probe), before_idle)
                detail = ", ".join(f"{k} {v}" for k, v in sorted(idle.items()) if k in CLIENT_COMMANDS)
                rows.append(
                    (
                        f"  idle worker, {label} ({mode})",
                        f"{client_commands(idle) / args.idle:.2f} commands/s  ({detail}; {queues} known queues, "
                        f"{args.idle:g} s)",
                    )
                )
                print(rows[-1], flush=True)

        metric_runs = args.metrics.split(",")
        for mode in args.modes.split(","):
            for run in range(args.repeat if "drain" in parts else 1):
                last_run = run == args.repeat - 1 or "drain" not in parts
                runs = [(profile, metrics, n) for profile in profiles for metrics in metric_runs for n in sweep]
                for index, (profile, metrics, n) in enumerate(runs):
                    last = last_run and index == len(runs) - 1
                    measure(mode, drain="drain" in parts, latency=last and "latency" in parts,
                            idle=last and "idle" in parts, profile=profile, metrics=metrics, processes=n)
        app.close()
    finally:
        server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)

    width = max(len(k) for k, _ in rows)
    print()
    print(f"| {'measure':<{width}} | result |")
    print(f"|{'-' * (width + 2)}|--------|")
    for key, value in rows:
        print(f"| {key:<{width}} | {value} |")
    for key, rates in drains.items():
        if len(rates) > 1:
            ordered = sorted(rates)
            print(f"median drain, {key}: {ordered[len(ordered) // 2]:,.0f} jobs/s over {len(rates)} drains "
                  f"(min {ordered[0]:,.0f}, max {ordered[-1]:,.0f})")
            used = sorted(cpu[key])
            print(f"median worker CPU per job, {key}: {used[len(used) // 2] * 1e6:.1f} µs "
                  f"(min {used[0] * 1e6:.1f}, max {used[-1] * 1e6:.1f})")


if __name__ == "__main__":
    main()
