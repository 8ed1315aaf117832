"""The file tier on a real disk: JSON lines of the flat model, rotation, gzip read back, retention by count and age,
per-component files and the bounded queue. The tier enabled in a real worker is in test_file_tier_e2e.py."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from bananas_logfile import file_sink
from bananas_logfile.rotation import Retention, RotatingFile, rotated_files
from bananas_logfile.writer import FileTier
from loguru import logger

from bananas.plugin_api import CONTEXT_FIELDS, FIXED_FIELDS, ConfigError

MODEL = set(FIXED_FIELDS) | set(CONTEXT_FIELDS)


@pytest.fixture
def log():
    """loguru with no handler but the ones a test adds; the default handler comes back afterwards."""
    logger.remove()
    yield logger
    logger.remove()
    logger.add(sys.stderr)


def attach(log, tier: FileTier, level: str = "DEBUG") -> None:
    log.add(tier.sink, level=level, format="{message}", colorize=False, catch=True)


def read_lines(path: Path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def all_records(directory: Path, base: str = "bananas") -> list[dict]:
    """Every record of ``directory``'s files of ``base``: rotated ones oldest first, then the active ones."""
    rotated = rotated_files(directory, base, ".log")
    active = sorted(p for p in directory.glob(f"{base}-*.log") if p not in rotated)
    return [record for path in [*rotated, *active] for record in read_lines(path)]


def test_records_are_json_lines_of_the_flat_model(tmp_path, log):
    tier = FileTier(tmp_path / "bananas.log", max_bytes=1 << 20)
    attach(log, tier)
    log.bind(component="worker", job_id="j1", job_name="send_email", queue="high", attempt=2,
             duration_ms=12.5).info("job j1 done")
    log.bind(component="worker", log_source="bananas_job", job_id="j2").warning("from a handler")
    try:
        raise ValueError("boom")
    except ValueError:
        log.bind(job_id="j3").exception("job failed")
    tier.close()

    records = read_lines(tmp_path / f"bananas-{os.getpid()}.log")
    assert [r["msg"] for r in records] == ["job j1 done", "from a handler", "job failed"]
    first, second, third = records
    assert list(first)[:5] == list(FIXED_FIELDS)
    assert first["job_name"] == "send_email" and first["attempt"] == 2 and first["duration_ms"] == 12.5
    assert second["log_source"] == "bananas_job" and second["level"] == "WARNING"
    assert third["error"] == "ValueError: boom" and "Traceback" in third["traceback"]
    assert all(set(r) <= MODEL for r in records)


def test_rotates_by_size_and_the_gzip_reads_back(tmp_path, log):
    tier = FileTier(tmp_path / "bananas.log", max_bytes=4096, max_backups=0, max_age_days=0)
    attach(log, tier)
    for n in range(300):
        log.bind(job_id=f"job-{n}").info("record {n} " + "x" * 40, n=n)
        if n % 50 == 0:
            time.sleep(0.01)  # let the writer keep up: this test is about rotation, not the queue
    tier.close()

    gz = sorted(tmp_path.glob(f"bananas-{os.getpid()}.*.log.gz"))
    assert len(gz) >= 5, sorted(p.name for p in tmp_path.iterdir())
    assert not list(tmp_path.glob("*.log.gz.partial")) and not rotated_files_uncompressed(tmp_path)
    assert all(p.stat().st_size > 0 for p in gz)
    for path in gz:
        assert len(gzip.decompress(path.read_bytes())) <= 4096
    assert [r["job_id"] for r in all_records(tmp_path)] == [f"job-{n}" for n in range(300)]


def rotated_files_uncompressed(directory: Path) -> list[Path]:
    return [p for p in rotated_files(directory, "bananas", ".log") if not p.name.endswith(".gz")]


def test_rotation_without_compression_keeps_plain_files(tmp_path, log):
    tier = FileTier(tmp_path / "bananas.log", max_bytes=2048, compress=False, max_backups=0, max_age_days=0)
    attach(log, tier)
    for n in range(100):
        log.info("line {n} " + "y" * 40, n=n)
    tier.close()
    assert not list(tmp_path.glob("*.gz"))
    assert len(rotated_files_uncompressed(tmp_path)) >= 2
    assert [r["msg"] for r in all_records(tmp_path)] == [f"line {n} " + "y" * 40 for n in range(100)]


def test_retention_by_count_keeps_the_newest(tmp_path, log):
    tier = FileTier(tmp_path / "bananas.log", max_bytes=1024, max_backups=2, max_age_days=0)
    attach(log, tier)
    for n in range(200):
        log.info("line {n} " + "z" * 60, n=n)
    tier.close()

    kept = rotated_files(tmp_path, "bananas", ".log")
    assert len(kept) == 2 and all(p.name.endswith(".gz") for p in kept)
    records = all_records(tmp_path)
    assert records[-1]["msg"].startswith("line 199 ")  # the newest survive, in order
    numbers = [int(r["msg"].split()[1]) for r in records]
    assert numbers == list(range(numbers[0], 200)) and numbers[0] > 0


def test_retention_by_age_deletes_old_rotated_files_of_every_process(tmp_path):
    day = 86400
    now = time.time()
    dead_pid = _dead_pid()
    files = {
        "bananas-111.20250101T000000000000.log.gz": now - 40 * day,  # old rotated file of another process
        "bananas-111.20260101T000000000000.log.gz": now - 2 * day,  # young: kept
        f"bananas-{os.getpid()}.20250101T000000000000.log": now - 31 * day,  # own, old, not yet compressed
        f"bananas-{dead_pid}.log": now - 40 * day,  # active file of a process that is gone, old
        f"bananas-{os.getppid()}.log": now - 40 * day,  # active file of a live process: never touched
        "other-111.20250101T000000000000.log.gz": now - 40 * day,  # another stem: not ours
        "bananas.log": now - 40 * day,  # not of the pattern
    }
    for name, mtime in files.items():
        (tmp_path / name).write_text("{}\n")
        os.utime(tmp_path / name, (mtime, mtime))

    removed = Retention(tmp_path, "bananas", ".log", os.getpid(), max_backups=0, max_age_days=30).apply()

    assert sorted(p.name for p in removed) == sorted([
        "bananas-111.20250101T000000000000.log.gz",
        f"bananas-{os.getpid()}.20250101T000000000000.log",
        f"bananas-{dead_pid}.log",
    ])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(files) - {p.name for p in removed})


def test_age_retention_runs_when_the_tier_starts(tmp_path):
    old = tmp_path / "bananas-111.20250101T000000000000.log.gz"
    old.write_bytes(gzip.compress(b"{}\n"))
    os.utime(old, (time.time() - 5 * 86400,) * 2)
    tier = FileTier(tmp_path / "bananas.log", max_bytes=1 << 20, max_age_days=3)
    tier.close()
    assert not old.exists()
    assert (tmp_path / f"bananas-{os.getpid()}.log").exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_one_file_per_component(tmp_path, log):
    tier = FileTier(tmp_path / "bananas.log", max_bytes=1 << 20, per_component=True)
    attach(log, tier)
    log.bind(component="worker").info("w")
    log.bind(component="scheduler").info("s")
    log.bind(component="../Evil Name").info("e")
    log.info("no component")
    tier.close()
    pid = os.getpid()
    assert [r["msg"] for r in read_lines(tmp_path / "worker" / f"worker-{pid}.log")] == ["w", "no component"]
    assert [r["msg"] for r in read_lines(tmp_path / "scheduler" / f"scheduler-{pid}.log")] == ["s"]
    assert [r["msg"] for r in read_lines(tmp_path / "___evil_name" / f"___evil_name-{pid}.log")] == ["e"]


def test_a_full_queue_drops_and_counts_never_blocks(tmp_path, log):
    gate = threading.Event()

    class Stalled(FileTier):
        def file_for(self, component):
            if threading.current_thread().name == "bananas-logfile-writer":
                gate.wait(10)  # the disk is stuck
            return super().file_for(component)

    tier = Stalled(tmp_path / "bananas.log", max_bytes=1 << 20, queue_size=10)
    attach(log, tier)
    started = time.perf_counter()
    for n in range(60):
        log.info("r{n}", n=n)
    elapsed = time.perf_counter() - started
    assert elapsed < 2, "the call site must not wait for the writer"
    gate.set()
    tier.close()

    records = read_lines(tmp_path / f"bananas-{os.getpid()}.log")
    written = [r for r in records if r["msg"].startswith("r")]
    note = [r for r in records if "dropped" in r["msg"]]
    assert tier.dropped == 60 - len(written) and 10 <= len(written) <= 11
    assert note and note[0]["dropped"] == tier.dropped and note[0]["level"] == "WARNING"


def test_a_rotated_name_is_never_reused(tmp_path):
    rotated: list[Path] = []
    file = RotatingFile(tmp_path / "bananas-1.log", 10, rotated.append)
    for _ in range(20):
        file.write(b"0123456789ab\n")
    file.close()
    assert len(rotated) == 19 and len(set(rotated)) == 19
    assert all(p.exists() for p in rotated)
    assert rotated_files(tmp_path, "bananas", ".log") == rotated  # sorted by time = order of rotation


def test_sink_factory_from_settings(tmp_path, log):
    config = file_sink({"enabled": True, "path": str(tmp_path / "logs" / "app.log"), "max_size_mb": 1,
                        "max_backups": 3, "max_age_days": 7, "compress": True, "level": "WARNING",
                        "per_component": False})
    assert config.level == "WARNING" and config.close is not None
    log.add(config.sink, level=config.level, **config.options)
    log.info("not at this level")
    log.warning("kept")
    config.close()
    assert [r["msg"] for r in read_lines(tmp_path / "logs" / f"app-{os.getpid()}.log")] == ["kept"]


def test_an_unwritable_path_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"invalid logging.file.path = .*cannot write there"):
        file_sink({"path": str(blocker / "sub" / "bananas.log")})
