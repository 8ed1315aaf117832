"""The ``--processes N`` supervisor with tiny stand-in children (real worker children: test_worker_modes_e2e.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bananas.worker.supervisor import CHILD_ENV, Supervisor, child_command, is_child

CHILD = f"""
import os, signal, sys, time
from pathlib import Path

out = Path(sys.argv[1])
number = os.environ["{CHILD_ENV}"]
mode = sys.argv[2]
signals = []


def started():
    with (out / "starts").open("a") as f:
        f.write(number + "\\n")


def on_term(signum, frame):
    signals.append(signum)
    (out / f"signals-{{number}}-{{os.getpid()}}").write_text(str(len(signals)))
    if mode == "graceful" or (mode == "stubborn-once" and len(signals) >= 2):
        sys.exit(0)

if mode in ("crash", "usage"):
    started()
    sys.exit(1 if mode == "crash" else 2)
signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "ignore" else on_term)
signal.signal(signal.SIGINT, on_term)
started()  # after the handlers: a signal from now on is handled
while True:
    time.sleep(0.01)
"""


def supervisor(tmp_path: Path, mode: str, processes: int = 2, **kwargs: float) -> Supervisor:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return Supervisor([sys.executable, str(script), str(tmp_path), mode], processes, **kwargs)


def run_in_thread(sup: Supervisor) -> tuple[threading.Thread, list[int]]:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(sup.run(install_signals=False)), daemon=True)
    thread.start()
    return thread, result


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def starts(tmp_path: Path) -> list[str]:
    path = tmp_path / "starts"
    return path.read_text().split() if path.exists() else []


def test_children_are_numbered_and_stop_gracefully_on_the_forwarded_signal(tmp_path):
    # Given two children that exit 0 on SIGTERM
    sup = supervisor(tmp_path, "graceful")
    thread, result = run_in_thread(sup)
    wait_for(lambda: len(starts(tmp_path)) == 2 and len(sup.pids()) == 2)
    pids = sup.pids()

    # When the supervisor is asked to stop (as by SIGTERM)
    sup.request_stop()
    thread.join(10)

    # Then each child got the signal once, exited, and the supervisor reports success
    assert result == [0]
    assert sorted(starts(tmp_path)) == ["1", "2"]
    assert sorted(p.name for p in tmp_path.glob("signals-*")) == sorted(f"signals-{n}-{pid}" for n, pid in
                                                                        zip(("1", "2"), pids, strict=True))
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_child_that_dies_is_restarted_with_a_growing_back_off(tmp_path):
    # Given children that crash as soon as they start
    sup = supervisor(tmp_path, "crash", processes=1, restart_delay=0.05, max_restart_delay=0.2)
    thread, result = run_in_thread(sup)

    # When they keep dying / Then they keep being restarted, each time a little later, up to the cap
    wait_for(lambda: len(starts(tmp_path)) >= 5)
    assert sup.children[0].delay == pytest.approx(0.2)
    sup.request_stop()
    thread.join(10)
    assert result == [1]  # the last child exited with status 1


def test_a_killed_child_is_replaced_and_the_other_keeps_running(tmp_path):
    sup = supervisor(tmp_path, "graceful", restart_delay=0.05)
    thread, result = run_in_thread(sup)
    wait_for(lambda: len(sup.pids()) == 2 and len(starts(tmp_path)) == 2)
    first, second = sup.pids()

    os.kill(first, signal.SIGKILL)

    wait_for(lambda: len(sup.pids()) == 2 and first not in sup.pids())
    assert second in sup.pids() and sup.children[0].restarts == 1 and sup.children[1].restarts == 0
    wait_for(lambda: sorted(starts(tmp_path)) == ["1", "1", "2"])
    sup.request_stop()
    thread.join(10)
    assert result == [0]


def test_a_usage_error_is_not_restarted(tmp_path):
    sup = supervisor(tmp_path, "usage", restart_delay=0.05)
    thread, result = run_in_thread(sup)
    thread.join(10)
    assert result == [2]
    assert len(starts(tmp_path)) <= 2  # each child started once at most, never restarted


def test_a_second_signal_is_forwarded_and_a_child_that_never_stops_is_killed(tmp_path):
    # Given one child that needs two signals and one that ignores SIGTERM
    script_dir = tmp_path
    sup = supervisor(script_dir, "stubborn-once", processes=1, stop_timeout=30)
    thread, result = run_in_thread(sup)
    wait_for(lambda: len(sup.pids()) == 1 and len(starts(tmp_path)) == 1)
    (pid,) = sup.pids()
    sup.request_stop()
    wait_for(lambda: (tmp_path / f"signals-1-{pid}").exists())
    assert sup.pids() == [pid]  # still running after the first signal
    sup.request_stop()  # the second one makes it exit
    thread.join(10)
    assert result == [0]

    other = tmp_path / "ignore"
    other.mkdir()
    sup = supervisor(other, "ignore", processes=1, stop_timeout=0.3)
    thread, result = run_in_thread(sup)
    wait_for(lambda: len(sup.pids()) == 1 and len(starts(other)) == 1)
    started = time.monotonic()
    sup.request_stop()
    thread.join(10)
    assert result == [1] and time.monotonic() - started < 5


def test_child_marker_and_command():
    assert is_child({CHILD_ENV: "1"}) and not is_child({})
    assert child_command(["worker", "--app", "tasks"]) == [sys.executable, "-m", "bananas.cli", "worker", "--app",
                                                           "tasks"]
    with pytest.raises(ValueError):
        Supervisor(["true"], 0)


def test_supervisor_process_forwards_a_real_sigterm(tmp_path):
    # Given a supervisor in its own process, with the signal handlers it installs
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    code = (
        "import sys; from bananas.worker.supervisor import Supervisor; "
        f"sys.exit(Supervisor([sys.executable, {str(script)!r}, {str(tmp_path)!r}, 'graceful'], 2).run())"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(starts(tmp_path)) == 2, timeout=30)  # three interpreters start on a busy machine
        # When it gets SIGTERM / Then it forwards it, waits for both children and exits 0
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0
        assert len(list(tmp_path.glob("signals-*"))) == 2
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
