"""Run a compose file of contrib/compose as local processes: the same commands and environment, no Docker.

    python contrib/run_local.py contrib/compose/default.yml                 # until Ctrl-C
    python contrib/run_local.py contrib/compose/default.yml --smoke         # start, run demo jobs, stop, exit 0/1
    python contrib/run_local.py contrib/compose/default.yml --redis-url redis://127.0.0.1:6379/0

Every service except ``redis`` is started ``deploy.replicas`` times with its ``command`` and ``environment``, in
``contrib/app`` (the image's ``/app``), with ``REDIS_URL`` pointing at the local Redis: ``--redis-url``, or else a
throwaway ``redis-server`` on a free loopback port (``bananas_redis.testing``). ``bananas`` in a command runs as
``python -m bananas.cli`` with this interpreter. Each process is stopped by its pid (SIGTERM, then SIGKILL).

``--smoke`` waits until every process logged that it started, enqueues one job of each type at each priority
plus a delayed one (``tasks.enqueue_demo``), waits until all of them completed, and stops everything.

The compose files use a small YAML subset (block mappings, ``- item`` lists, ``["flow", "lists"]`` and scalars),
which this script reads without a YAML library.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs

CONTRIB = Path(__file__).resolve().parent
APP_DIR = CONTRIB / "app"
STARTED = " started: mode "
"""What a worker logs once its pools run (``worker <id> started: mode <mode>, pools …``)."""


# -- the YAML subset ----------------------------------------------------------------------------------------------
def _scalar(text: str) -> Any:
    text = text.strip()
    if text.startswith("["):
        return json.loads(text)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text.lstrip("-").isdigit():
        return int(text)
    return {"true": True, "false": False}.get(text, text)


def _strip_comment(line: str) -> str:
    quote = ""
    for i, char in enumerate(line):
        if char in "'\"" and not quote:
            quote = char
        elif char == quote:
            quote = ""
        elif char == "#" and not quote and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def parse_compose(text: str) -> dict[str, Any]:
    """Parse the block-style YAML subset of the compose files into dicts, lists and scalars."""
    rows = [(len(line) - len(line.lstrip(" ")), line.strip()) for raw in text.splitlines()
            if (line := _strip_comment(raw)).strip()]
    value, end = _block(rows, 0, 0)
    if end != len(rows):
        raise ValueError(f"cannot parse line: {rows[end][1]!r}")
    return value  # type: ignore[no-any-return]


def _block(rows: list[tuple[int, str]], start: int, indent: int) -> tuple[Any, int]:
    if start < len(rows) and rows[start][1].startswith("- "):
        items: list[Any] = []
        i = start
        while i < len(rows) and rows[i][0] == indent and rows[i][1].startswith("- "):
            items.append(_scalar(rows[i][1][2:]))
            i += 1
        return items, i
    mapping: dict[str, Any] = {}
    i = start
    while i < len(rows) and rows[i][0] == indent:
        key, sep, rest = rows[i][1].partition(":")
        if not sep:
            raise ValueError(f"expected 'key: value', got {rows[i][1]!r}")
        i += 1
        if rest.strip():
            mapping[key.strip()] = _scalar(rest)
        elif i < len(rows) and rows[i][0] > indent:
            mapping[key.strip()], i = _block(rows, i, rows[i][0])
        elif i < len(rows) and rows[i][0] == indent and rows[i][1].startswith("- "):  # a list at the key's indent
            mapping[key.strip()], i = _block(rows, i, indent)
        else:
            mapping[key.strip()] = None
    return mapping, i


# -- services -------------------------------------------------------------------------------------------------------
@attrs.define
class Process:
    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def processes(compose: dict[str, Any], redis_url: str, log_dir: Path) -> list[Process]:
    """One :class:`Process` per replica of every service that is not Redis itself."""
    made: list[Process] = []
    for name, service in compose["services"].items():
        if str(service.get("image", "")).startswith("redis"):
            continue
        command = list(service.get("command") or ["bananas", "worker", "--app", "tasks:app"])
        if command[0] == "bananas":
            command = [sys.executable, "-m", "bananas.cli", *command[1:]]
        env = dict(item.split("=", 1) for item in service.get("environment") or [])
        env["REDIS_URL"] = redis_url
        replicas = int((service.get("deploy") or {}).get("replicas", 1))
        for n in range(1, replicas + 1):
            label = f"{name}-{n}"
            made.append(Process(label, command, env, log_dir / f"{label}.log"))
    return made


def _base_env() -> dict[str, str]:
    """This environment without the variables a service sets itself (so nothing leaks in from the shell)."""
    prefixes = ("BANANAS_", "WORKER_", "REDIS_", "ENABLE_SCHEDULER", "SCHEDULER_", "SHUTDOWN_", "LOG_")
    return {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}


def start(procs: list[Process]) -> None:
    for proc in procs:
        with proc.log.open("ab") as log:
            proc.popen = subprocess.Popen(proc.command, cwd=APP_DIR, env={**_base_env(), **proc.env}, stdout=log,
                                          stderr=subprocess.STDOUT)
        print(f"started {proc.name} (pid {proc.popen.pid}): {' '.join(f'{k}={v}' for k, v in proc.env.items())}")


def stop(procs: list[Process], timeout: float = 60.0) -> dict[str, int]:
    """SIGTERM every process by pid, wait, SIGKILL what is left; returns the exit statuses."""
    for proc in procs:
        if proc.popen is not None and proc.popen.poll() is None:
            os.kill(proc.popen.pid, signal.SIGTERM)
    codes: dict[str, int] = {}
    for proc in procs:
        if proc.popen is None:
            continue
        try:
            codes[proc.name] = proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.popen.pid, signal.SIGKILL)
            codes[proc.name] = proc.popen.wait(timeout)
    return codes


def wait_started(procs: list[Process], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waiting = list(procs)
    while waiting:
        for proc in list(waiting):
            assert proc.popen is not None
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.output()}")
            if STARTED in proc.output():
                waiting.remove(proc)
        if waiting and time.monotonic() > deadline:
            names = ", ".join(proc.name for proc in waiting)
            raise RuntimeError(f"not started within {timeout}s: {names}\n" + "\n".join(p.output() for p in waiting))
        time.sleep(0.05)


def smoke(redis_url: str, timeout: float) -> int:
    """Enqueue the demo jobs through the example app and wait until each one completed; returns how many."""
    os.environ["REDIS_URL"] = redis_url
    os.chdir(APP_DIR)
    sys.path.insert(0, str(APP_DIR))
    import tasks  # type: ignore[import-not-found]  # the example app, read from contrib/app

    try:
        handles = tasks.enqueue_demo()
        deadline = time.monotonic() + timeout
        pending = list(handles)
        while pending:
            pending = [h for h in pending if h.status().value != "completed"]
            if pending and time.monotonic() > deadline:
                left = ", ".join(f"{h.job.name}/{h.job.priority.value} in {h.job.queue}" for h in pending)
                raise RuntimeError(f"not completed within {timeout}s: {left}")
            time.sleep(0.1)
        return len(handles)
    finally:
        tasks.app.close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the services like Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("compose_file", type=Path)
    parser.add_argument("--redis-url", help="Use this Redis (default: start a throwaway redis-server on loopback).")
    parser.add_argument("--smoke", action="store_true", help="Run the demo jobs, then stop; exit 0 when all completed.")
    parser.add_argument("--timeout", type=float, default=30.0, help="Seconds for start-up and for the demo jobs.")
    parser.add_argument("--logs", type=Path, help="Directory for the processes' logs (default: a temporary one).")
    args = parser.parse_args(argv)

    compose = parse_compose(args.compose_file.read_text(encoding="utf-8"))
    server = None
    redis_url = args.redis_url
    if redis_url is None:
        from bananas_redis.testing import RedisServer, find_redis_servers

        found = find_redis_servers()
        if not found:
            parser.error("no redis-server found: install one or pass --redis-url")
        server = RedisServer(found[0][1]).start()
        redis_url = server.url
        print(f"redis-server on {redis_url} (pid {server.process.pid if server.process else '?'})")
    log_dir = args.logs or Path(tempfile.mkdtemp(prefix="bananas-run-local-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = processes(compose, redis_url, log_dir)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    status = 0
    try:
        start(procs)
        wait_started(procs, args.timeout)
        print(f"all {len(procs)} process(es) started; logs in {log_dir}")
        if args.smoke:
            print(f"{smoke(redis_url, args.timeout)} demo jobs completed")
        else:
            while True:
                time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = 1
    finally:
        codes = stop(procs)
        signal.signal(signal.SIGTERM, previous)
        if server is not None:
            server.cleanup()
    failed = {name: code for name, code in codes.items() if code != 0}
    if failed:
        print(f"error: exit statuses {failed}", file=sys.stderr)
        status = 1
    print("stopped: " + ", ".join(f"{name} {code}" for name, code in codes.items()))
    return status


if __name__ == "__main__":
    sys.exit(main())
