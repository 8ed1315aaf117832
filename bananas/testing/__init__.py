"""Test helpers that ship in the wheel: helpers for testing an application (docs/TESTING.md), the broker
conformance suite and a stateful hypothesis machine.

For application tests (see docs/TESTING.md): :func:`use_memory` / :func:`memory_app` put an app on a fresh
``memory://`` broker without environment tricks, :func:`run_until_idle` runs its worker in-process until nothing is
left to do (``fast_forward=True`` skips delays and retry backoff), and :func:`eager` runs jobs when they are
enqueued. The pytest plugin (loaded automatically) adds the fixtures ``bananas_memory_app`` and ``bananas_app``.

A broker plugin proves it keeps the :mod:`bananas.broker` semantics with one class::

    import pytest_asyncio
    from bananas.testing import BrokerConformance

    class TestSqliteBroker(BrokerConformance):
        @pytest_asyncio.fixture
        async def broker_factory(self, tmp_path):
            ...  # yield an async ``make(**overrides) -> Broker``; close what it made afterwards

and one line for the state machine::

    TestSqliteMachine = make_broker_machine(factory).TestCase

Both need the ``testing`` extra (pytest, pytest-asyncio, hypothesis). Attributes load lazily, so importing this
package costs nothing until they are used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    import pytest
except ImportError:  # pragma: no cover - the suite needs pytest, the package itself does not
    pass
else:
    # Must run before the modules are imported, so their plain ``assert``s give pytest's detailed messages.
    pytest.register_assert_rewrite(
        "bananas.testing.conformance",
        "bananas.testing.stateful",
        "bananas.testing.serializers",
        "bananas.testing.results",
    )

if TYPE_CHECKING:
    from bananas.testing.apps import FastForwardClock, fresh_memory_url, memory_app, reset_memory, use_memory
    from bananas.testing.conformance import BrokerConformance
    from bananas.testing.drain import IdleSummary, InProcessWorker, run_until_idle, run_until_idle_async
    from bananas.testing.eager import Eager, eager
    from bananas.testing.results import ResultBackendConformance
    from bananas.testing.serializers import SerializerConformance
    from bananas.testing.stateful import make_broker_machine

__all__ = [
    "BrokerConformance",
    "Eager",
    "FastForwardClock",
    "IdleSummary",
    "InProcessWorker",
    "ResultBackendConformance",
    "SerializerConformance",
    "eager",
    "fresh_memory_url",
    "make_broker_machine",
    "memory_app",
    "reset_memory",
    "run_until_idle",
    "run_until_idle_async",
    "use_memory",
]

_LAZY = {
    "BrokerConformance": "bananas.testing.conformance",
    "make_broker_machine": "bananas.testing.stateful",
    "ResultBackendConformance": "bananas.testing.results",
    "SerializerConformance": "bananas.testing.serializers",
    "FastForwardClock": "bananas.testing.apps",
    "fresh_memory_url": "bananas.testing.apps",
    "memory_app": "bananas.testing.apps",
    "reset_memory": "bananas.testing.apps",
    "use_memory": "bananas.testing.apps",
    "IdleSummary": "bananas.testing.drain",
    "InProcessWorker": "bananas.testing.drain",
    "run_until_idle": "bananas.testing.drain",
    "run_until_idle_async": "bananas.testing.drain",
    "Eager": "bananas.testing.eager",
    "eager": "bananas.testing.eager",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
