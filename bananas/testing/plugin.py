"""The ``pytest11`` plugin of Bananas: fixtures only.

It loads in every pytest run wherever ``bananas`` is installed, so it imports nothing heavy at import time. It also
registers a hypothesis settings profile named ``ci`` (no deadline, bounded examples and steps) and loads it when the
``CI`` environment variable is set; without hypothesis installed that step is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

__all__ = ["free_port", "memory_broker_url"]


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
