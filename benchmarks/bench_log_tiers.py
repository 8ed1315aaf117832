"""What the log tiers cost (printed, never asserted): per call at the call site, and the Redis drain rate.

    .venv/bin/python benchmarks/bench_log_tiers.py [--calls 20000] [--n 10000] [--parts calls,drain] [--repeat 5]
                                                   [--job-records 0,1] [--logger job_logger]

Needs the kernel, bananas-logfile, bananas-elasticsearch and bananas-redis (``requirements-dev.txt``). The
Elasticsearch tier talks to the wire-level stand-in of ``bananas_elasticsearch.testing`` (a real HTTP server on
127.0.0.1, gzip ndjson, in a process of its own), never to a real cluster. On a 2-core machine the stand-in's work
still competes for the same cores, which a real cluster elsewhere would not.

* **Per call** (in this process, loguru configured by the kernel's ``configure_logging`` from settings, stderr sent
  to /dev/null): ``--calls`` calls of ``job_logger.info("job succeeded")`` inside a job (the kernel's direct route
  to the tiers, ``bananas.log_route``) and of ``log.info("job succeeded")`` on a plain loguru logger bound to five
  job fields (loguru's own path, what an application's ``logger`` calls take), for a disabled level
  (``LOG_LEVEL=warning``), the console in JSON, the file tier, the Elasticsearch tier, the JSON console with each of
  them and with both, and, for comparison, loguru's own file sink with ``enqueue=True`` (what the file tier's writer
  thread replaces). The figures are the caller's wall time per call with the tier's background threads running and
  the process's CPU time (every thread, the tier's closing included) per record: what a record costs the process in
  all. The cases run interleaved ``--repeat`` times (medians). The lines written (or indexed) show that nothing was
  dropped.
* **Drain** (``benchmarks/bench_redis_e2e.py``'s drain: ``--n`` no-op jobs already queued on a local redis-server,
  ONE ``bananas worker`` subprocess, first → last job), in the same run, with each job's handler logging
  ``--job-records`` info lines (``0``: the issue's own benchmark, nothing per job at info since the kernel logs job
  start and success at debug; ``1``: a typical handler) through ``--logger`` (``job_logger``, ``stdlib``:
  ``logging.getLogger(__name__).info``, or ``loguru``: a plain bound loguru logger): ``LOG_LEVEL=warning`` (the
  baseline), then ``LOG_LEVEL=info`` with the JSON console, + the file tier, + the Elasticsearch tier, + both, and the
  Elasticsearch tier alone at ``info`` (console at ``warning``). The cases run interleaved ``--repeat`` rounds, each
  round in a rotated order (so that no case always follows the same one). Reported per case: **logging's own CPU**,
  which the worker accounts for itself between its first and last job (the handler's log calls by the thread's CPU
  clock around them, the log tiers' threads by their CPU clocks) against the rest of the same drain's CPU — measured
  in the same seconds, so the machine's load weighs on both alike: the steady figure on a shared machine (at
  ``warning`` it is the measurement's own price, ~5 µs, and the console thread's wake-ups; subtract it); the
  worker's CPU time per job during the drain (``/proc/<pid>/stat``, every thread, first → last job); and the drain
  rate; for the last two the median of each round's own ratio to that round's ``warning`` drain with the range of
  those ratios (the noise).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bananas_elasticsearch import build_client
from bananas_redis.testing import RedisServer, find_redis_servers
from loguru import logger

from bananas import Bananas, job_logger
from bananas.job import Job
from bananas.job_context import JobContext
from bananas.log_context import CURRENT_JOB
from bananas.logs import configure_logging
from bananas.plugin_api import json_line

HERE = Path(__file__).resolve().parent


def _e2e():
    spec = importlib.util.spec_from_file_location("bench_redis_e2e", HERE / "bench_redis_e2e.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def stderr_to_devnull():
    """The console tier writes to fd 2: point it at /dev/null while measuring, then back."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class StandInProcess:
    """The stand-in in its own process (``python -m bananas_elasticsearch.testing``), so that the server's work
    is not counted in this process's per-call figures; stopped by pid."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bananas_elasticsearch.testing"], stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        self.client = build_client({"addresses": [self.url]})

    def count(self) -> int:
        return int(self.client.count(index="*")["count"])

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _lines(directory: Path, pattern: str) -> int:
    return sum(len(path.read_bytes().splitlines()) for path in directory.glob(pattern))


def per_call(calls: int, workdir: Path, es: StandInProcess, repeat: int = 1) -> list[tuple[str, str]]:
    es_url = es.url
    base = {"BANANAS_LOAD_PLUGINS": "bananas-logfile,bananas-elasticsearch", "LOG_FORMAT": "json",
            "LOG_COLOR": "false"}
    file_env = {"LOG_FILE_ENABLED": "true", "LOG_FILE_PATH": str(workdir / "calls" / "bananas.log")}
    es_env = {"LOG_ES_ENABLED": "true", "LOG_ES_ADDRESSES": es_url, "LOG_ES_FLUSH_INTERVAL": "1s",
              "LOG_ES_FLUSH_BYTES": str(1 << 20)}
    cases = [
        ("disabled level (info call, LOG_LEVEL=warning)", {"LOG_LEVEL": "warning"}),
        ("console JSON (stderr → /dev/null)", {"LOG_LEVEL": "info"}),
        ("file tier only (console at warning)", {"LOG_LEVEL": "warning", "LOG_FILE_LEVEL": "info", **file_env}),
        ("elasticsearch tier only (console at warning)", {"LOG_LEVEL": "warning", "LOG_ES_LEVEL": "info", **es_env}),
        ("console JSON + file", {"LOG_LEVEL": "info", **file_env}),
        ("console JSON + elasticsearch", {"LOG_LEVEL": "info", **es_env}),
        ("console JSON + file + elasticsearch", {"LOG_LEVEL": "info", **file_env, **es_env}),
    ]
    rows = []
    log = logger.bind(component="worker", job_id="0123456789abcdef", job_name="send_email", queue="high",
                      priority="high", attempt=1)
    scope = JobContext(Job(name="send_email", queue="high", priority="high", attempts=1), "solo-1", "bench-1",
                       "thin")
    loggers = {"job_logger": job_logger, "loguru": log}
    site: dict[tuple[str, str], list[float]] = {(c, w): [] for c, _ in cases for w in loggers}
    cpu: dict[tuple[str, str], list[float]] = {(c, w): [] for c, _ in cases for w in loggers}
    written: dict[str, str] = {}
    token = CURRENT_JOB.set(scope)  # job_logger's records carry this job's fields
    for _ in range(repeat):  # the cases interleaved, so that a noisy minute hits all of them
        for label, env in cases:
            for which, caller in loggers.items():
                app = Bananas(broker="memory://", env={**base, **env})
                lines_before, docs_before = _lines(workdir / "calls", "bananas-*.log"), es.count()
                with stderr_to_devnull():
                    close = configure_logging(app.settings, app.plugins)
                    cpu_started = time.process_time()  # every thread of this process: the tiers' threads too
                    started = time.perf_counter()
                    for _ in range(calls):
                        caller.info("job succeeded")
                    elapsed = time.perf_counter() - started
                    close()
                    used = time.process_time() - cpu_started
                site[label, which].append(elapsed / calls)
                cpu[label, which].append(used / calls)
                shown = []
                if "LOG_FILE_ENABLED" in env:
                    shown.append(f"{_lines(workdir / 'calls', 'bananas-*.log') - lines_before} in the file")
                if "LOG_ES_ENABLED" in env:
                    shown.append(f"{es.count() - docs_before} indexed")
                written[label] = ", ".join(shown)
                print(f"per call: {label}, {which}: {elapsed / calls * 1e6:.1f} µs at the call site, "
                      f"{used / calls * 1e6:.1f} µs CPU{'; ' + written[label] if written[label] else ''}",
                      flush=True)
                app.close()
    CURRENT_JOB.reset(token)
    for label, _ in cases:
        for which in loggers:
            rows.append((f"per call: {label}, {which}",
                         f"{statistics.median(site[label, which]) * 1e6:6.1f} µs at the call site, "
                         f"{statistics.median(cpu[label, which]) * 1e6:6.1f} µs CPU (all threads; medians of "
                         f"{repeat}; runs {', '.join(f'{v * 1e6:.1f}' for v in cpu[label, which])})"
                         f"{'; ' + written[label] if written[label] else ''}"))

    # loguru's own rotating file sink with enqueue=True: the call site formats, pickles and pipes each message
    def fmt(record):
        record["extra"]["_line"] = json_line(record)
        return "{extra[_line]}\n"

    logger.remove()
    logger.add(str(workdir / "calls" / "loguru-enqueue.log"), format=fmt, enqueue=True, rotation="100 MB",
               compression="gz", level="INFO")
    started = time.perf_counter()
    for _ in range(calls):
        log.info("job succeeded")
    elapsed = time.perf_counter() - started
    closing = time.perf_counter()
    logger.remove()
    closed = time.perf_counter() - closing
    rows.append(("per call: loguru file sink, enqueue=True (comparison)",
                 f"{elapsed / calls * 1e6:6.1f} µs at the call site, {(elapsed + closed) / calls * 1e6:6.1f} µs with "
                 f"the background work; {_lines(workdir / 'calls', 'loguru-enqueue.log')} in the file"))
    print(rows[-1], flush=True)
    logger.add(sys.stderr)
    return rows


TASKS_LOGGING = textwrap.dedent(
    """
    import json as _json
    import logging as _logging
    import threading as _threading

    from loguru import logger as _logger

    from bananas import job_logger as _job_logger

    _RECORDS = int(os.environ.get("BENCH_JOB_RECORDS", "1"))
    _LOG = {
        "job_logger": _job_logger,  # the kernel's route to the tiers, the job's fields per record
        "stdlib": _logging.getLogger("bench.handler"),  # the intercept handler, the job's fields per record
        "loguru": _logger.bind(component="worker", log_source="bananas_job", job_name="noop"),  # loguru's own path
    }[os.environ.get("BENCH_JOB_LOGGER", "job_logger")]
    _TIERS = ("bananas-console", "bananas-logfile", "bananas-es")  # the log tiers' own threads
    _seen = 0
    _spent = 0  # ns of CPU this thread spent inside the handler's log calls


    def _accounts():
        \"\"\"This process's CPU so far: all of it, the log calls', and each log tier thread's.\"\"\"
        tiers = {}
        for thread in _threading.enumerate():
            if thread.name.startswith(_TIERS) and thread.ident is not None:
                try:
                    tiers[thread.name] = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
                except OSError:  # the thread just ended
                    pass
        return _json.dumps({"process": time.process_time(), "call_site": _spent / 1e9, "tiers": tiers})


    @app.job("noop_logged")
    async def noop_logged():
        global _seen, _spent
        if _RECORDS:
            started = time.thread_time_ns()
            for _ in range(_RECORDS):
                _LOG.info("noop done")
            _spent += time.thread_time_ns() - started
        _seen += 1
        if _seen == 1 or _seen == N:  # one worker process runs every job: its first and its last
            await _conn().set("bench:cpu_first" if _seen == 1 else "bench:cpu_last", _accounts())
        await noop()
    """
)


def _log_share(first: dict[str, Any], last: dict[str, Any]) -> tuple[float, float, float]:
    """From the worker's own accounts at its first and last job: (CPU of the process, of the handler's log calls,
    of the log tiers' threads), in seconds between the two."""
    tiers = sum(last["tiers"].get(name, 0.0) - cpu for name, cpu in first["tiers"].items())
    tiers += sum(cpu for name, cpu in last["tiers"].items() if name not in first["tiers"])  # started in between
    return last["process"] - first["process"], last["call_site"] - first["call_site"], tiers


def _spread(values: list[float]) -> str:
    """Median of ratios as a signed percent, with their range: ``+3.1 % (-2.0 … +7.5)``."""
    mid = statistics.median(values)
    return f"{(mid - 1) * 100:+.1f} % ({(min(values) - 1) * 100:+.1f} … {(max(values) - 1) * 100:+.1f})"


def drains(n: int, repeat: int, workdir: Path, es: StandInProcess, job_records: int,
           job_logger_name: str = "job_logger") -> list[tuple[str, str]]:
    e2e = _e2e()
    binary = os.environ.get("BANANAS_TEST_REDIS_SERVER") or find_redis_servers()[0][1]
    server = RedisServer(binary).start()
    rows: list[tuple[str, str]] = []
    try:
        (workdir / "bench_tasks.py").write_text(e2e.TASKS + TASKS_LOGGING)
        import redis

        probe = redis.Redis.from_url(server.url)
        plugins = "bananas-redis,bananas-logfile,bananas-elasticsearch"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LOG_", "BANANAS_LOG"))}
        env.update(BANANAS_BROKER=server.url, BENCH_REDIS=server.url, BENCH_N=str(n), LOG_FORMAT="json",
                   BENCH_JOB_RECORDS=str(job_records), BENCH_JOB_LOGGER=job_logger_name,
                   LOG_COLOR="false", BANANAS_LOAD_PLUGINS=plugins, WORKER_MODE="thin",
                   PYTHONPATH=str(workdir) + os.pathsep + env.get("PYTHONPATH", ""))
        env.pop("BANANAS_CONFIG", None)
        file_env = {"LOG_FILE_ENABLED": "true", "LOG_FILE_PATH": str(workdir / "drain" / "bananas.log")}
        es_env = {"LOG_ES_ENABLED": "true", "LOG_ES_ADDRESSES": es.url, "LOG_ES_FLUSH_INTERVAL": "1s"}
        cases = [
            ("LOG_LEVEL=warning (baseline)", {"LOG_LEVEL": "warning"}),
            ("LOG_LEVEL=info, JSON console", {"LOG_LEVEL": "info"}),
            ("  + file tier", {"LOG_LEVEL": "info", **file_env}),
            ("  + elasticsearch tier (stand-in)", {"LOG_LEVEL": "info", **es_env}),
            ("  + file and elasticsearch tiers", {"LOG_LEVEL": "info", **file_env, **es_env}),
            ("elasticsearch tier only (console at warning)", {"LOG_LEVEL": "warning", "LOG_ES_LEVEL": "info",
                                                               **es_env}),
        ]
        app = Bananas(broker=server.url, env={"BANANAS_LOAD_PLUGINS": "bananas-redis"})
        specs = [{"name": "noop_logged", "payload": {}} for _ in range(1000)]
        shipped_before = es.count()
        rates: dict[str, list[float]] = {label: [] for label, _ in cases}
        cpu: dict[str, list[float]] = {label: [] for label, _ in cases}
        logging_cpu: dict[str, list[float]] = {label: [] for label, _ in cases}
        tier_cpu: dict[str, list[float]] = {label: [] for label, _ in cases}
        shares: dict[str, list[float]] = {label: [] for label, _ in cases}
        standin: dict[str, list[float]] = {label: [] for label, _ in cases}  # the stand-in's CPU: same two cores
        for run in range(repeat):  # the cases interleaved, each round in a rotated order
            for label, extra in cases[run % len(cases):] + cases[:run % len(cases)]:
                probe.flushdb()
                for _ in range(n // 1000):
                    app.enqueue_many(specs)
                worker = e2e.WorkerProc(str(workdir), {**env, **extra}, str(workdir / "worker.log")).start()
                try:
                    first = e2e.wait_for(lambda: probe.get("bench:t_first"), 60)
                    cpu_first, es_first = _cpu(worker.proc.pid), _cpu(es.proc.pid)
                    last = e2e.wait_for(lambda: probe.get("bench:t_last"), 300)
                    cpu_last, es_last = _cpu(worker.proc.pid), _cpu(es.proc.pid)
                    standin[label].append((es_last - es_first) / (n - 1))
                    if first is None or last is None:
                        raise RuntimeError(f"{label}: drain incomplete; see {workdir / 'worker.log'}")
                    rates[label].append((n - 1) / (float(last) - float(first)))
                    cpu[label].append((cpu_last - cpu_first) / (n - 1))
                    accounts = e2e.wait_for(lambda: probe.get("bench:cpu_last"), 10)
                    process, call_site, tiers = _log_share(json.loads(probe.get("bench:cpu_first")),
                                                           json.loads(accounts))
                    logging_cpu[label].append((call_site + tiers) / (n - 1))
                    tier_cpu[label].append(tiers / (n - 1))
                    # what logging adds to the rest of the same drain's work (measured in the same seconds, so the
                    # machine's load weighs on both alike)
                    shares[label].append((call_site + tiers) / (process - call_site - tiers))
                finally:
                    worker.stop()
                print(f"round {run + 1}: {label}: {rates[label][-1]:,.0f} jobs/s, "
                      f"{cpu[label][-1] * 1e6:,.0f} µs CPU per job, of which logging "
                      f"{logging_cpu[label][-1] * 1e6:,.1f} µs (tier threads {tier_cpu[label][-1] * 1e6:,.1f}): "
                      f"{shares[label][-1] * 100:+.1f} % on the rest; the stand-in "
                      f"{standin[label][-1] * 1e6:,.0f} µs", flush=True)
        app.close()
        base = cases[0][0]
        for label, values in logging_cpu.items():
            every = ", ".join(f"{v * 100:+.1f}" for v in shares[label])
            rows.append((f"logging's own CPU per job: {label}",
                         f"{statistics.median(values) * 1e6:,.1f} µs (tier threads "
                         f"{statistics.median(tier_cpu[label]) * 1e6:,.1f}); on the rest of the drain's CPU "
                         f"{statistics.median(shares[label]) * 100:+.1f} % (rounds {every})"))
        for label, values in cpu.items():
            every = ", ".join(f"{v * 1e6:,.0f}" for v in values)
            ratios = [v / b for v, b in zip(values, cpu[base], strict=True)]
            rows.append((f"worker CPU per job: {label}",
                         f"{statistics.median(values) * 1e6:,.0f} µs; vs warning, median of the rounds' ratios "
                         f"{_spread(ratios)}; rounds {every}"))
        for label, values in standin.items():
            if "LOG_ES_ENABLED" in dict(cases)[label]:
                rows.append((f"Elasticsearch stand-in's CPU per job (same cores): {label}",
                             f"{statistics.median(values) * 1e6:,.0f} µs (rounds "
                             f"{', '.join(f'{v * 1e6:,.0f}' for v in values)})"))
        for label, values in rates.items():
            every = ", ".join(f"{v:,.0f}" for v in values)
            ratios = [v / b for v, b in zip(values, rates[base], strict=True)]
            rows.append((f"drain: {label}", f"{statistics.median(values):,.0f} jobs/s; vs warning, median of the "
                                            f"rounds' ratios {_spread(ratios)}; rounds {every}"))
        shipped = sum("LOG_ES_ENABLED" in extra for _, extra in cases) * repeat * (n // 1000 * 1000)
        rows.append(("  records per job at info (stand-in documents / jobs)",
                     f"{(es.count() - shipped_before) / shipped:.3f}"))
        rows.append(("  machine load (1, 5, 15 min) at the end", " ".join(f"{x:.1f}" for x in os.getloadavg())))
    finally:
        server.cleanup()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5,
                    help="run the per-call and the drain cases this many times, interleaved (medians reported)")
    ap.add_argument("--parts", default="calls,drain")
    ap.add_argument("--job-records", type=lambda text: [int(x) for x in text.split(",")], default=[0, 1],
                    help="info records each job's handler logs, one drain series per value (e.g. 0,1)")
    ap.add_argument("--logger", default="job_logger", choices=("job_logger", "stdlib", "loguru"),
                    help="what the handler logs its records with")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    es = StandInProcess()
    rows: list[tuple[str, str]] = [("machine load (1, 5, 15 min) at the start",
                                    " ".join(f"{x:.1f}" for x in os.getloadavg()))]
    with tempfile.TemporaryDirectory(prefix="bananas-bench-logs-") as tmp:
        try:
            if "calls" in parts:
                rows += per_call(args.calls, Path(tmp), es, args.repeat)
            if "drain" in parts:
                for records in args.job_records:
                    rows.append((f"drain with {records} handler record(s) per job ({args.logger}), "
                                 f"{args.n} jobs, {args.repeat} rounds", ""))
                    rows += drains(args.n, args.repeat, Path(tmp), es, records, args.logger)
        finally:
            es.stop()
    width = max(len(k) for k, _ in rows)
    print()
    print(f"| {'measure':<{width}} | result |")
    print(f"|{'-' * (width + 2)}|--------|")
    for key, value in rows:
        print(f"| {key:<{width}} | {value} |")


if __name__ == "__main__":
    main()
