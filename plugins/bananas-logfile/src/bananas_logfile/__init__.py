"""Log tier ``file``: every record as one JSON line (the flat event model) in size-rotated files, gzip-compressed,
kept by count and age, written by a background thread.

Enable with ``LOG_FILE_ENABLED=true`` (or ``[logging.file] enabled = true``). Each process writes its own file,
``<stem>-<pid><suffix>`` next to ``LOG_FILE_PATH`` (``/var/log/bananas/bananas-4242.log``), so the supervisor and
the children of ``bananas worker --processes N`` never write or rotate the same file. See ``docs/LOG_TIERS.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bananas.plugin_api import ConfigError, KeySpec, LogSinkSpec, Register, SinkConfig, hookimpl, setting
from bananas_logfile.writer import QUEUE_SIZE, FileTier

__all__ = ["SETTINGS", "FileTier", "file_sink"]

_LEVELS = ("debug", "info", "warn", "warning", "error")

SETTINGS: tuple[KeySpec, ...] = (
    setting("logging.file.enabled", "bool", False, "Write logs to rotating JSON-lines files.", "LOG_FILE_ENABLED"),
    setting("logging.file.path", "str", "/var/log/bananas/bananas.log",
            "Log file path; each process writes its own file next to it (bananas-PID.log for bananas.log).",
            "LOG_FILE_PATH"),
    setting("logging.file.max_size_mb", "int", 100, "Size in MB at which a file is rotated.",
            "LOG_FILE_MAX_SIZE_MB", minimum=1),
    setting("logging.file.max_backups", "int", 10, "Rotated files kept per process file (0 keeps all).",
            "LOG_FILE_MAX_BACKUPS", minimum=0),
    setting("logging.file.max_age_days", "int", 30, "Days rotated files are kept (0: no age limit).",
            "LOG_FILE_MAX_AGE_DAYS", minimum=0),
    setting("logging.file.compress", "bool", True, "Gzip rotated files.", "LOG_FILE_COMPRESS"),
    setting("logging.file.level", "enum", None, "File log level (default: the console's LOG_LEVEL).",
            "LOG_FILE_LEVEL", choices=_LEVELS),
    setting("logging.file.per_component", "bool", False,
            "One file per component: DIR/COMPONENT/COMPONENT-PID.log.", "LOG_FILE_PER_COMPONENT"),
)
"""The settings of the file tier (documented in this package's README and docs/CONFIGURATION.md)."""

MB = 1024 * 1024


def file_sink(options: Mapping[str, Any]) -> SinkConfig:
    """Build the tier from its ``[logging.file]`` table (``level`` already a loguru level name)."""
    path = Path(str(options.get("path") or "/var/log/bananas/bananas.log")).expanduser()
    try:
        tier = FileTier(
            path,
            max_bytes=int(options.get("max_size_mb", 100)) * MB,
            max_backups=int(options.get("max_backups", 10)),
            max_age_days=float(options.get("max_age_days", 30)),
            compress=bool(options.get("compress", True)),
            per_component=bool(options.get("per_component", False)),
            queue_size=QUEUE_SIZE,
        )
    except OSError as exc:
        raise ConfigError("logging.file.path", str(path), "config",
                          f"cannot write there: {exc.strerror or exc}; set LOG_FILE_PATH to a writable file") from None
    return SinkConfig(
        sink=tier.sink,
        level=str(options.get("level") or "INFO"),
        options={"format": "{message}", "colorize": False, "catch": True},
        close=tier.close,
        record_sink=tier.put,  # the kernel's route: job_logger and stdlib records without loguru's record building
    )


@hookimpl
def bananas_register_log_sinks(register: Register[LogSinkSpec]) -> None:
    register(LogSinkSpec(name="file", factory=file_sink, summary="JSON lines in rotated, gzip-compressed files"))


@hookimpl
def bananas_register_settings(register: Register[KeySpec]) -> None:
    for spec in SETTINGS:
        register(spec)
