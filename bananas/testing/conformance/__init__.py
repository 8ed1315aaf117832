"""The broker conformance suite: one test per semantic of :mod:`bananas.broker`.

Subclass :class:`BrokerConformance` in a test module and provide one async fixture, ``broker_factory``, that yields
an async callable ``make(**overrides) -> Broker``. Each call builds a new *connected, empty* broker whose
:class:`~bananas.broker.BrokerOptions` take ``overrides`` (``lease=``, ``max_crash_deliveries=``, ``clock=``,
``completed_ttl=``, ``dead_ttl=`` …); the fixture closes and cleans up everything it made when the test ends::

    import pytest_asyncio
    from bananas.broker import BrokerOptions
    from bananas.testing import BrokerConformance

    class TestSqliteBroker(BrokerConformance):
        @pytest_asyncio.fixture
        async def broker_factory(self, tmp_path):
            made = []

            async def make(**overrides):
                broker = SqliteBroker(f"sqlite://{tmp_path}/{len(made)}.db", BrokerOptions(**overrides))
                await broker.connect()
                made.append(broker)
                return broker

            yield make
            for broker in made:
                await broker.close()

Every time comparison goes through the ``clock=`` override (a :class:`FakeClock`), so no test depends on how fast
the machine is; only the blocking-fetch tests use real time, with generous margins. A broker that cannot offer a
feature says so with a capability flag (``supports_blocking_fetch = False``); the tests it covers then skip with
that reason instead of failing.

Optional broker capabilities (protocol 0.2, :mod:`bananas.broker`) work the same way but need no flag: the core tests
run on every broker, a test of ``maintenance``, ``admin`` or a fast lane runs only on a broker that implements it.
Core tests read records through ``admin`` where the broker has it and skip just those reads where it does not. Set
``claims = ALL_CAPABILITIES`` (or a subset) so that a capability lost by accident fails instead of skipping.
Typed fetches (``fetch(..., job_types=...)``, :mod:`bananas.broker_types`) are checked on a broker whose ``fetch``
takes ``job_types``; add ``TYPED_FETCH`` to ``claims`` to make their absence fail.
"""

from __future__ import annotations

from bananas.testing.conformance._base import ALL_CAPABILITIES, FakeClock, MakeBroker, _Base
from bananas.testing.conformance._control import ControlChecks
from bananas.testing.conformance._core import CoreChecks
from bananas.testing.conformance._leases import LeaseChecks
from bananas.testing.conformance._progress import ProgressChecks
from bananas.testing.conformance._records import RecordChecks
from bananas.testing.conformance._registry import RegistryChecks
from bananas.testing.conformance._schedules import ScheduleChecks
from bananas.testing.conformance._types import TYPED_FETCH, TypeChecks

__all__ = ["ALL_CAPABILITIES", "TYPED_FETCH", "BrokerConformance", "FakeClock", "MakeBroker"]


class BrokerConformance(CoreChecks, LeaseChecks, RecordChecks, RegistryChecks, ScheduleChecks, ProgressChecks,
                        ControlChecks, TypeChecks, _Base):
    """Checks that a broker keeps every semantic of :mod:`bananas.broker`. Subclass it; see the module docstring.

    Capability flags (class attributes) let a broker opt out explicitly; each skipped test names the flag.

    The suite is split like the protocol (0.2): the **core** tests run on every broker; the tests of an optional
    capability (``maintenance``, ``admin``, ``schedules``, ``enqueue_sync``, ``enqueue_with_hints``,
    ``ack_and_fetch``, ``worker_registry``, ``progress``, ``cancellation``) run only when the broker has it
    (:func:`bananas.broker.capabilities`) and skip naming it otherwise. Set :attr:`claims` to the capabilities the
    broker is meant to have: then a missing one fails instead of skipping.
    """
