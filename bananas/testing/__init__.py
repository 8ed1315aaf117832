"""Test helpers that ship in the wheel: the broker conformance suite and a stateful hypothesis machine.

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
    from bananas.testing.conformance import BrokerConformance
    from bananas.testing.results import ResultBackendConformance
    from bananas.testing.serializers import SerializerConformance
    from bananas.testing.stateful import make_broker_machine

__all__ = ["BrokerConformance", "ResultBackendConformance", "SerializerConformance", "make_broker_machine"]

_LAZY = {
    "BrokerConformance": "bananas.testing.conformance",
    "make_broker_machine": "bananas.testing.stateful",
    "ResultBackendConformance": "bananas.testing.results",
    "SerializerConformance": "bananas.testing.serializers",
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
