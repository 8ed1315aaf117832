"""``bananas worker --processes N`` (``WORKER_PROCESSES``): one supervisor process and N worker processes.

The supervisor runs no jobs. It starts N children with the same command line, marked with
``BANANAS_WORKER_CHILD=<n>`` (1..N) so that a child runs a worker instead of another supervisor, and then:

- **restarts a child that dies** (a crash, ``SIGKILL``, the OOM killer), after a back-off that starts at
  ``restart_delay`` and doubles, up to ``max_restart_delay``, while a child keeps dying within ``stable_after``
  seconds of its start; a child that exits with status 2 (a configuration or usage error) is not restarted, and
  the supervisor stops the others and exits with 2;
- **forwards SIGTERM and SIGINT** to every child and waits for them: each child stops taking jobs and gives its
  running jobs ``SHUTDOWN_TIMEOUT`` to finish. A second signal is forwarded too, which makes the children exit at
  once (their leases recover the running jobs). A child still alive ``stop_timeout`` seconds after the first
  signal is killed.

Children run in their own process group, so a Ctrl-C in a terminal reaches only the supervisor, which forwards
it once. On Linux a child also gets SIGTERM when the supervisor itself dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType

import attrs
from loguru import logger

__all__ = ["CHILD_ENV", "Supervisor", "child_command", "is_child"]

CHILD_ENV = "BANANAS_WORKER_CHILD"
"""Set to the child's number (1..N) in every worker process a supervisor starts."""

USAGE_ERROR = 2
"""Exit status of ``bananas`` for configuration and usage errors: restarting would fail the same way."""

_PR_SET_PDEATHSIG = 1

log = logger.bind(component="worker", role="supervisor", log_source="bananas_internal")


def is_child(env: Mapping[str, str] | None = None) -> bool:
    """True in a worker process started by a supervisor (it must run a worker, not supervise again)."""
    return bool((os.environ if env is None else env).get(CHILD_ENV))


def child_command(argv: Sequence[str] | None = None) -> list[str]:
    """The command that runs this ``bananas`` invocation again: ``python -m bananas.cli <the same arguments>``."""
    return [sys.executable, "-m", "bananas.cli", *(sys.argv[1:] if argv is None else argv)]


def _death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent dies; ``None`` elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        return None
    parent = os.getpid()

    def preexec() -> None:  # runs in the child between fork and exec: no logging, no locks
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before prctl: stop right away
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


@attrs.define(eq=False)
class _Child:
    number: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float = 0.0
    delay: float = 0.0
    restarts: int = 0
    exit_code: int | None = None


class Supervisor:
    """Runs ``processes`` copies of ``command`` until SIGTERM/SIGINT (or :meth:`request_stop`).

    :param command: The child command line, usually :func:`child_command`.
    :param processes: How many children to keep running.
    :param env: Extra environment for the children (on top of this process's environment).
    :param stop_timeout: Seconds to wait for the children after the first stop signal before killing them; give
        them more than ``SHUTDOWN_TIMEOUT``.
    :param restart_delay: First back-off before restarting a child that died.
    :param max_restart_delay: Longest back-off.
    :param stable_after: A child that ran this long before dying is restarted after ``restart_delay`` again.
    :param cwd: Working directory of the children (default: this one).
    """

    def __init__(
        self,
        command: Sequence[str],
        processes: int,
        *,
        env: Mapping[str, str] | None = None,
        stop_timeout: float = 40.0,
        restart_delay: float = 0.5,
        max_restart_delay: float = 30.0,
        stable_after: float = 10.0,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes: expected at least 1, got {processes!r}")
        self.command = list(command)
        self.processes = processes
        self.env = dict(env or {})
        self.stop_timeout = stop_timeout
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.stable_after = stable_after
        self.cwd = cwd
        self.children = [_Child(number) for number in range(1, processes + 1)]
        self._signals: list[int] = []  # appended by signal handlers: no locks there
        self._stopping_since: float | None = None
        self._preexec = _death_signal()

    # -- control -------------------------------------------------------------------------------------------------
    def pids(self) -> list[int]:
        """Pids of the children that are running now, by child number."""
        return [c.process.pid for c in self.children if c.process is not None and c.process.poll() is None]

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop as if ``signum`` had been received (thread-safe); a second call forwards a second signal."""
        self._signals.append(signum)

    def run(self, *, install_signals: bool = True) -> int:
        """Supervise until stopped; returns the exit status (0, or 2 after a child's usage error, else 1)."""
        previous: dict[int, object] = {}
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            return self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]

    # -- internals -----------------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.request_stop(signum)

    def _loop(self) -> int:
        log.info("supervisor {pid} starting {processes} worker process(es): {command}", pid=os.getpid(),
                 processes=self.processes, command=" ".join(self.command))
        status = 0
        for child in self.children:
            self._start(child)
        while True:
            now = time.monotonic()
            while self._signals:
                self._forward(self._signals.pop(0))
            stopping = self._stopping_since is not None
            for child in self.children:
                proc = child.process
                if proc is not None and proc.poll() is not None:
                    child.process, child.exit_code = None, proc.returncode
                    if stopping:
                        log.info("worker process {child} (pid {pid}) exited with {exit_code}", child=child.number,
                                 pid=proc.pid, exit_code=proc.returncode)
                    elif proc.returncode == USAGE_ERROR:
                        log.error("worker process {child} (pid {pid}) exited with a usage error (status 2); not "
                                  "restarting, stopping the others", child=child.number, pid=proc.pid)
                        status = USAGE_ERROR
                        self._forward(signal.SIGTERM)
                        stopping = True
                    else:
                        self._schedule_restart(child, proc, now)
                elif proc is None and not stopping and child.restart_at <= now:
                    self._start(child)
            if stopping:
                if all(child.process is None for child in self.children):
                    break
                assert self._stopping_since is not None
                if now - self._stopping_since > self.stop_timeout:
                    self._kill_all()
            time.sleep(0.05)
        if status == 0 and any(child.exit_code not in (0, None) for child in self.children):
            status = 1
        log.info("supervisor {pid} stopped", pid=os.getpid())
        return status

    def _start(self, child: _Child) -> None:
        env = {**os.environ, **self.env, CHILD_ENV: str(child.number)}
        child.process = subprocess.Popen(
            self.command, env=env, cwd=self.cwd, process_group=0, preexec_fn=self._preexec
        )
        child.started_at = time.monotonic()
        child.exit_code = None
        log.info("worker process {child} started (pid {pid})", child=child.number, pid=child.process.pid)

    def _schedule_restart(self, child: _Child, proc: subprocess.Popen[bytes], now: float) -> None:
        quick = now - child.started_at < self.stable_after
        child.delay = min(self.max_restart_delay, child.delay * 2) if quick and child.delay else self.restart_delay
        child.restart_at = now + child.delay
        child.restarts += 1
        log.warning("worker process {child} (pid {pid}) died with {exit}; restarting in {delay_s:g}s",
                    child=child.number, pid=proc.pid, exit=_describe(proc.returncode), delay_s=child.delay)

    def _forward(self, signum: int) -> None:
        if self._stopping_since is None:
            self._stopping_since = time.monotonic()
            log.info("signal {signal}: stopping {processes} worker process(es)", signal=signum,
                     processes=len(self.pids()))
        else:
            log.warning("signal {signal} again: worker processes exit now", signal=signum)
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                try:
                    os.kill(child.process.pid, signum)
                except ProcessLookupError:  # pragma: no cover - exited in between
                    pass

    def _kill_all(self) -> None:
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                log.error("worker process {child} (pid {pid}) did not stop in {timeout_s:g}s; killing it",
                          child=child.number, pid=child.process.pid, timeout_s=self.stop_timeout)
                try:
                    os.kill(child.process.pid, signal.SIGKILL)
                except ProcessLookupError:  # pragma: no cover
                    pass


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:  # pragma: no cover
            return f"signal {-returncode}"
    return f"status {returncode}"
