"""The ``pytest11`` plugin of Bananas: fixtures only.

For application tests (docs/TESTING.md): ``bananas_memory_app`` (a factory: your app moved onto a fresh
``memory://`` broker for one test, or a new empty one) and ``bananas_app`` (an empty app on a fresh memory broker).
For plugin tests: ``free_port`` and ``memory_broker_url``.

It loads in every pytest run wherever ``bananas`` is installed, so it imports nothing heavy at import time. It also
registers a hypothesis settings profile named ``ci`` (no deadline, bounded examples and steps) and loads it when the
``CI`` environment variable is set; without hypothesis installed that step is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from bananas.app import Bananas

__all__ = ["bananas_app", "bananas_memory_app", "free_port", "memory_broker_url"]


def _register_hypothesis_profile() -> None:
    try:
        from hypothesis import settings
    except ImportError:
        return
    # Real brokers have network latency, so a deadline would fail at random; keep runs bounded instead.
    settings.register_profile("ci", deadline=None, max_examples=50, stateful_step_count=30)
    if os.environ.get("CI"):
        settings.load_profile("ci")


_register_hypothesis_profile()


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a test server, e.g. ``redis-server --port``)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def memory_broker_url() -> Iterator[str]:
    """A ``memory://`` URL no other test uses; its state is dropped after the test."""
    import uuid

    url = f"memory://test-{uuid.uuid4().hex}"
    yield url
    from bananas.builtin.memory_broker import MemoryBroker

    MemoryBroker.reset(url)


@pytest.fixture
def bananas_memory_app() -> Iterator[Callable[..., Bananas]]:
    """``bananas_memory_app(app=None, **overrides)`` → an app on a fresh ``memory://`` broker and result backend.

    With your app (or the module holding it, e.g. ``tasks``), that very object is rebound in place for this test
    (:func:`bananas.testing.use_memory`): code that imported it enqueues to memory too, whatever ``bananas.toml`` or
    the environment say; at teardown it is restored. Without an app: a new empty one (no config file, no
    environment, no entry-point plugins). ``overrides`` are dotted settings: ``**{"jobs.max_retries": 0}``.
    """
    from bananas.testing.apps import Rebinding, fresh_memory_url, memory_app, reset_memory, resolve_app

    undo: list[Callable[[], None]] = []

    def make(app: Bananas | ModuleType | None = None, **overrides: Any) -> Bananas:
        url = fresh_memory_url()
        if app is None:
            built = memory_app(url=url, **overrides)

            def drop() -> None:
                built.close()
                reset_memory(url)

            undo.append(drop)
            return built
        binding = Rebinding(resolve_app(app), url, overrides)
        undo.append(binding.undo)
        return binding.app

    yield make
    for step in reversed(undo):
        step()


@pytest.fixture
def bananas_app(bananas_memory_app: Callable[..., Bananas]) -> Bananas:
    """An empty app on a fresh ``memory://`` broker and result backend; register handlers with
    ``@bananas_app.job()``."""
    return bananas_memory_app()
