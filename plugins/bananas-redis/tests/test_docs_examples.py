"""The README and the quick starts in docs/ run as written, against a real Redis and a real worker subprocess.

Each document's fenced blocks run in order, in one fresh directory (a copy of the example's folder for a README
under ``examples/``), with ``REDIS_URL`` pointing at a throwaway
redis-server (and ``localhost:6379`` in the text replaced by its address):

- ```` ```python tasks.py ```` / ```` ```toml bananas.toml ```` (a language and a file name): the file is written;
- ```` ```python ```` with no name: run as a script, which must exit 0;
- ```` ```bash ````: each command line runs (comments stripped, ``cd`` into the example's folder skipped since the
  test already is there) and must exit 0; ``bananas worker …`` without ``--dry-run`` starts in the background
  and is waited for until it logs that it started, then stopped by its pid at the end;
- a block right after ``<!-- not tested: reason -->`` is skipped: the reason says why (installing, the test
  command itself, a container);
- output blocks (``text``, ``json``, ``console``) are not run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bananas_redis.e2e import e2e_server

ROOT = Path(__file__).resolve().parents[3]
DOCS = ["README.md", "docs/GETTING_STARTED.md", "examples/quickstart/README.md", "examples/rpc/README.md"]
"""Documents whose examples run; an example folder's README runs in a copy of its folder (its files are there)."""
RUN = {"python", "bash", "sh", "toml"}
BLOCK = re.compile(r"^(?P<skip><!-- not tested: [^>]*-->\s*\n)?```(?P<info>[^\n]*)\n(?P<body>.*?)^```",
                   re.DOTALL | re.MULTILINE)
BIN = Path(sys.executable).parent


def blocks(doc: str) -> list[tuple[str, str | None, str]]:
    """``(language, file name or None, body)`` of the blocks to run, in order."""
    out = []
    for match in BLOCK.finditer((ROOT / doc).read_text(encoding="utf-8")):
        language, _, name = match["info"].strip().partition(" ")
        if match["skip"] or language not in RUN:
            continue
        out.append((language, name.strip() or None, match["body"]))
    return out


def _env(url: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("BANANAS_", "WORKER_", "REDIS_", "LOG_"))}
    return {**keep, "REDIS_URL": url, "PATH": f"{BIN}{os.pathsep}{keep.get('PATH', '')}", "PYTHONPATH": "."}


def _start_worker(command: str, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    # exec: the pid is the worker's own (VAR=value prefixes work as in a shell), so terminate() reaches it
    proc = subprocess.Popen(["bash", "-c", f"exec env {command}"], cwd=cwd, env=env, stdout=handle,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while " started: " not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"{command!r} exited: {log.read_text()}"
        assert time.monotonic() < deadline, f"{command!r} did not start: {log.read_text()}"
        time.sleep(0.1)
    return proc


def _commands(body: str) -> list[str]:
    lines = []
    for raw in body.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.strip().startswith("#") else ""
        if line and not line.startswith("cd "):
            lines.append(line)
    return lines


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS)
def test_the_examples_of_a_document_run_as_written(doc: str, tmp_path: Path) -> None:
    runnable = blocks(doc)
    assert runnable, f"{doc} has no runnable example"
    if doc.startswith("examples/"):
        shutil.copytree(ROOT / Path(doc).parent, tmp_path, dirs_exist_ok=True)
    workers: list[subprocess.Popen[bytes]] = []
    with e2e_server() as server:
        address = f"127.0.0.1:{server.port}"
        env = _env(f"redis://{address}/0")
        for copied in tmp_path.glob("*.*"):  # the example's own files point at the test's Redis too
            if copied.suffix in (".toml", ".py"):
                copied.write_text(copied.read_text(encoding="utf-8").replace("localhost:6379", address))
        try:
            for index, (language, name, body) in enumerate(runnable):
                body = body.replace("localhost:6379", address)
                where = f"{doc} block {index + 1} ({language}{' ' + name if name else ''})"
                if name is not None:
                    (tmp_path / name).write_text(body, encoding="utf-8")
                elif language == "python":
                    script = tmp_path / f"_block_{index}.py"
                    script.write_text(body, encoding="utf-8")
                    result = subprocess.run([sys.executable, script.name], cwd=tmp_path, env=env, capture_output=True,
                                            text=True, timeout=120)
                    assert result.returncode == 0, f"{where}:\n{result.stdout}\n{result.stderr}"
                    assert "Traceback" not in result.stderr, where
                elif language in ("bash", "sh"):
                    chunk: list[str] = []
                    for command in [*_commands(body), None]:
                        is_worker = command is not None and re.match(r"^(\w+=\S+ )*bananas worker", command) \
                            and "--dry-run" not in command
                        if command is not None and not is_worker:
                            chunk.append(command)
                            continue
                        if chunk:  # the lines so far, as one script: variables ($ID) carry from line to line
                            script = "set -euo pipefail\n" + "\n".join(chunk)
                            result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env,
                                                    capture_output=True, text=True, timeout=120)
                            assert result.returncode == 0, f"{where}:\n{script}\n{result.stdout}\n{result.stderr}"
                            assert "Traceback" not in result.stderr, f"{where}:\n{script}\n{result.stderr}"
                            chunk = []
                        if command is not None:
                            log = tmp_path / f"_worker_{len(workers)}.log"
                            workers.append(_start_worker(command.rstrip("&").strip(), tmp_path, env, log))
        finally:
            for proc in workers:
                proc.terminate()
            for proc in workers:
                try:
                    proc.wait(timeout=40)
                except subprocess.TimeoutExpired:  # pragma: no cover - a stuck worker must not outlive the test
                    proc.kill()
                    proc.wait()
    assert all(proc.returncode == 0 for proc in workers), [p.returncode for p in workers]


def test_skipped_examples_say_why() -> None:
    for doc in DOCS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        for reason in re.findall(r"^<!-- not tested: ([^>]*)-->", text, re.MULTILINE):
            assert len(reason.strip()) > 10, (doc, reason)
