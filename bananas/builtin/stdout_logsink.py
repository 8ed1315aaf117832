"""``[logging.console]``: the always-on console tier (stderr), text or JSON per ``[logging] format``.

- ``json``: one :func:`bananas.log_record.json_line` per record — the same flat object the other tiers write.
- ``text``: ``time | LEVEL | component | job_name job_id | message`` (the job part on what handlers log; the
  kernel's job events name the job in their message: ``job <id> (<name>) …``), colored
  when ``color`` is on and stderr is a terminal; an attached exception follows with its traceback.

Writes never block the caller on a slow terminal or pipe: the record is formatted where it is logged and the line
goes to a :class:`ConsoleWriter`, whose own thread writes to the stream. The queue is bounded
(:data:`MAX_QUEUED` lines); when it is full, lines are dropped and counted, and a line saying how many follows as soon
as the stream takes lines again. ``benchmarks/bench_logging.py`` measures this against loguru's ``enqueue=True``
(which pickles every record into a pipe, costs several times more per call and blocks once the pipe is full).
"""

from __future__ import annotations

import atexit
import sys
import threading
from collections import deque
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

from bananas.hookspecs import hookimpl
from bananas.log_context import on_flush
from bananas.log_record import json_line
from bananas.logsink import LogSinkSpec, SinkConfig
from bananas.registry import Register

if TYPE_CHECKING:
    from loguru import Message, Record

__all__ = ["MAX_QUEUED", "ConsoleWriter", "console_sink", "text_format"]

MAX_QUEUED = 100_000
"""Lines the console queues at most while the stream is slower than the logging (then it drops and counts)."""

WRITE_EVERY = 0.05
"""Seconds between two writes of the writer thread: lines are written in batches, so the writer does not wake (and
take the GIL from the worker) once per line. A line is on the console at most this long after it was logged."""

WAKE_AT = 1_000
"""Queued lines that wake the writer before its next turn."""

CLOSE_WAIT = 5.0
"""Seconds :meth:`ConsoleWriter.close` waits for a write in progress (a stuck terminal) before giving up."""

_HEAD = "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <7}</level> | "
_JOB = "<magenta>{extra[job_name]}</magenta> {extra[job_id]} | "


def text_format(record: Record) -> str:
    """The loguru format of the text console: the job's name and id on records that carry them."""
    extra = record["extra"]
    component = "<cyan>{extra[component]}</cyan> | " if "component" in extra else "<cyan>worker</cyan> | "
    # handler records name their job here; the kernel's job events already say "job <id> (<name>)" in the message
    job = _JOB if extra.get("log_source") == "bananas_job" and "job_id" in extra and "job_name" in extra else ""
    return _HEAD + component + job + "<level>{message}</level>\n{exception}"


class ConsoleWriter:
    """A bounded line queue in front of ``stream``, written in batches by one daemon thread (every
    :data:`WRITE_EVERY` seconds, sooner when :data:`WAKE_AT` lines wait).

    :meth:`put` never waits for the stream; :meth:`flush` writes what is queued from the calling thread;
    :meth:`close` flushes and stops the thread (also at interpreter exit).
    """

    def __init__(self, stream: IO[str], max_queued: int = MAX_QUEUED) -> None:
        self.stream = stream
        self.max_queued = max_queued
        self.dropped = 0  # lines dropped since the last notice
        self.dropped_total = 0
        self._lines: deque[str] = deque()
        self._wake = threading.Event()
        self._write = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="bananas-console-log", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def put(self, line: str) -> None:
        """Queue one line (with its newline); drop and count it when the queue is full."""
        if len(self._lines) >= self.max_queued:
            self.dropped += 1
            self.dropped_total += 1
            return
        lines = self._lines
        lines.append(line)
        if len(lines) >= WAKE_AT and not self._wake.is_set():
            self._wake.set()

    def flush(self, timeout: float = -1) -> None:
        """Write every queued line now (from the calling thread). With ``timeout``, give up after that many seconds
        of waiting for a write in progress (a stuck terminal must not hold a stopping process)."""
        if not self._write.acquire(timeout=timeout):
            return
        try:
            lines = self._lines
            chunk: list[str] = []
            while lines:
                chunk.append(lines.popleft())
            if self.dropped:
                chunk.append(f"bananas: {self.dropped} console log line(s) dropped: the console was too slow\n")
                self.dropped = 0
            if not chunk:
                return
            try:
                self.stream.write("".join(chunk))
                self.stream.flush()
            except (OSError, ValueError):  # a closed or broken stream: nothing to write to
                pass
        finally:
            self._write.release()

    def close(self) -> None:
        """Flush and stop the writer thread."""
        atexit.unregister(self.close)
        self._closed = True
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=CLOSE_WAIT)
        self.flush(timeout=CLOSE_WAIT)

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(WRITE_EVERY)
            self._wake.clear()
            if self._lines or self.dropped:
                self.flush()


def console_sink(options: Mapping[str, Any], stream: IO[str] | None = None) -> SinkConfig:
    """Options: ``level``, ``format`` (``text``/``json``), ``color``. Writes to ``stream`` (stderr by default)."""
    out = sys.stderr if stream is None else stream
    writer = ConsoleWriter(out)
    unregister = on_flush(lambda: writer.flush(timeout=1.0))
    level = str(options.get("level", "INFO")).upper()

    def close() -> None:
        unregister()
        writer.close()

    if str(options.get("format", "text")) == "json":
        put = writer.put

        def write_record(record: Record) -> None:
            put(json_line(record) + "\n")

        def write_json(message: Message) -> None:
            write_record(message.record)

        # loguru still renders the handler's format before calling the sink: the cheapest one, then unused
        return SinkConfig(sink=write_json, level=level, options={"format": "{message}"}, close=close,
                          record_sink=write_record)  # type: ignore[arg-type]
    colorize = bool(options.get("color", True)) and out.isatty()
    return SinkConfig(sink=writer.put, level=level, options={"format": text_format, "colorize": colorize},
                      close=close)


@hookimpl
def bananas_register_log_sinks(register: Register[LogSinkSpec]) -> None:
    register(
        LogSinkSpec(
            name="console", factory=console_sink, summary="console (stderr), text or JSON"
        )
    )
