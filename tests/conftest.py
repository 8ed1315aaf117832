"""Kernel test fixtures: hermetic apps on a fresh memory broker, and a worker running in a thread."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bananas import Bananas
from bananas.builtin.memory_broker import MemoryBroker
from bananas.worker import Worker


@pytest.fixture
def memory_url() -> Iterator[str]:
    url = f"memory://kernel-{uuid.uuid4().hex[:12]}"
    yield url
    MemoryBroker.reset(url)


@pytest.fixture
def make_app(memory_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Bananas]:
    """Build an app on a fresh memory broker with fast retries; config files and env are ignored."""
    monkeypatch.chdir(tmp_path)

    def make(**overrides: Any) -> Bananas:
        values = {
            "worker.mode": "thin",
            "worker.scheduler_interval": 0.1,
            "jobs.retry_backoff_base": 0.05,
            "jobs.retry_backoff_max": 0.2,
            "metrics.port": 0,  # no endpoint on the shared default port; tests/test_metrics.py picks free ports
            **overrides.pop("overrides", {}),
        }
        return Bananas(broker=memory_url, result_backend=memory_url, overrides=values, env={}, **overrides)

    return make


@pytest.fixture
def run_worker() -> Iterator[Callable[..., Worker]]:
    """Start ``app.worker()`` in a thread; every started worker is stopped at teardown."""
    started: list[tuple[Worker, Any]] = []

    def start(app: Bananas, plan: Any = None) -> Worker:
        worker = app.worker(plan)
        worker.fetch_wait = 0.2  # quick shutdowns in tests; production waits FETCH_WAIT per blocking fetch
        thread = worker.start_in_thread()
        started.append((worker, thread))
        return worker

    yield start
    for worker, thread in started:
        worker.request_stop()
        thread.join(timeout=15)


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true; fail after a generous ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, for a worker's metrics endpoint (``metrics.port = 0``
    turns the endpoint off, so it cannot mean "any free port")."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def wait_for() -> Callable[..., None]:
    """``wait_for(predicate, timeout=10)``: poll until true or fail."""
    return _wait_for
