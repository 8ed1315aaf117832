"""One process's log file: size rotation to a timestamped name, gzip of the rotated file, retention by count and age.

Names, for ``LOG_FILE_PATH=/var/log/bananas/bananas.log`` and process 4242:

* active: ``/var/log/bananas/bananas-4242.log`` (one per process, so ``--processes N`` never has two processes
  writing or rotating the same file);
* rotated: ``bananas-4242.20261129T204501123456.log`` then, compressed, ``bananas-4242.20261129T204501123456.log.gz``
  (a timestamp, never a shifting ``.1``/``.2`` number, so a rotation renames exactly one file).

Retention runs after each rotation and when the tier starts: the newest ``max_backups`` rotated files of this
process's file are kept (``0`` keeps all), and rotated files of every process older than ``max_age_days`` are
deleted (``0``: no age limit), as are active files of processes that no longer run once they are that old.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["RotatingFile", "Retention", "rotated_files"]

_DAY = 86400.0


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")


def _family(base: str, suffix: str) -> re.Pattern[str]:
    """Active (``base-PID.log``) and rotated (``base-PID.STAMP.log[.gz]``) files of every process of ``base``."""
    return re.compile(
        rf"^{re.escape(base)}-(?P<pid>\d+)(?:\.(?P<stamp>\d{{8}}T\d{{12}}(?:-\d+)?))?{re.escape(suffix)}(?P<gz>\.gz)?$"
    )


def rotated_files(directory: Path, base: str, suffix: str, pid: int | None = None) -> list[Path]:
    """Rotated files (compressed or not) of ``base`` in ``directory``, oldest first; only ``pid``'s when given."""
    pattern = _family(base, suffix)
    found = []
    for path in directory.iterdir() if directory.is_dir() else ():
        match = pattern.match(path.name)
        if match and match["stamp"] and (pid is None or int(match["pid"]) == pid):
            found.append((match["stamp"], path))
    return [path for _, path in sorted(found)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


class Retention:
    """Deletes what the retention settings no longer keep (see the module docstring)."""

    def __init__(
        self, directory: Path, base: str, suffix: str, pid: int, max_backups: int, max_age_days: float
    ) -> None:
        self.directory, self.base, self.suffix, self.pid = directory, base, suffix, pid
        self.max_backups, self.max_age_days = max_backups, max_age_days

    def apply(self, now: float | None = None) -> list[Path]:
        """Delete and return the files past the count or the age limit."""
        removed: list[Path] = []
        if self.max_backups > 0:
            own = rotated_files(self.directory, self.base, self.suffix, self.pid)
            removed += own[: max(0, len(own) - self.max_backups)]
        if self.max_age_days > 0 and self.directory.is_dir():
            limit = (time.time() if now is None else now) - self.max_age_days * _DAY
            pattern = _family(self.base, self.suffix)
            for path in self.directory.iterdir():
                match = pattern.match(path.name)
                if not match or path in removed:
                    continue
                pid = int(match["pid"])
                stale_active = not match["stamp"] and pid != self.pid and not _alive(pid)
                if (match["stamp"] or stale_active) and _mtime(path) < limit:
                    removed.append(path)
        for path in removed:
            path.unlink(missing_ok=True)
        return removed


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def compress(path: Path) -> Path:
    """Gzip ``path`` to ``path.gz`` (written under a temporary name, then renamed) and delete ``path``."""
    target = path.with_name(path.name + ".gz")
    partial = path.with_name(path.name + ".gz.partial")
    with path.open("rb") as src, gzip.open(partial, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    stat = path.stat()
    os.replace(partial, target)
    os.utime(target, (stat.st_atime, stat.st_mtime))  # age retention counts from the last line written
    path.unlink()
    return target


class RotatingFile:
    """An append-only file that is renamed aside once the next write would take it past ``max_bytes``.

    Only its writer thread touches it. ``on_rotated(path)`` receives each rotated (uncompressed) file.
    """

    def __init__(self, path: Path, max_bytes: int, on_rotated: Callable[[Path], None]) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.on_rotated = on_rotated
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab", buffering=1 << 16)
        self.size = self._file.tell()

    def write(self, data: bytes) -> None:
        if self.size and self.size + len(data) > self.max_bytes:
            self.rotate()
        self._file.write(data)
        self.size += len(data)

    def flush(self) -> None:
        self._file.flush()

    def rotate(self) -> Path:
        self._file.close()
        stem, suffix = self.path.name[: -len(self.path.suffix) or None], self.path.suffix
        target = self.path.with_name(f"{stem}.{_stamp()}{suffix}")
        n = 0
        while target.exists():  # two rotations in one microsecond
            n += 1
            target = self.path.with_name(f"{stem}.{_stamp()}-{n}{suffix}")
        os.replace(self.path, target)
        self._file = self.path.open("ab", buffering=1 << 16)
        self.size = 0
        self.on_rotated(target)
        return target

    def close(self) -> None:
        self._file.close()
