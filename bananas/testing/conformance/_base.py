"""The shared part of the broker conformance suite: the fake clock, helpers and the base class with the
fixture contract, capability gating and admin reads (see :mod:`bananas.testing.conformance`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import ClassVar

import attrs
import pytest

from bananas.broker import (
    ADMIN,
    CAPABILITIES,
    MAINTENANCE,
    Broker,
    BrokerCapabilities,
    DeadLetter,
    Delivery,
    Envelope,
    JobRecord,
    RecordState,
    SupportsAdmin,
    capabilities,
)

__all__ = ["ALL_CAPABILITIES", "FakeClock", "MakeBroker"]

ALL_CAPABILITIES: frozenset[str] = frozenset(CAPABILITIES)
"""Every optional capability name; ``claims = ALL_CAPABILITIES`` for a broker that implements the whole protocol."""

MakeBroker = Callable[..., Awaitable[Broker]]
"""``await make(**overrides)`` returns a connected, empty broker built with those ``BrokerOptions`` overrides."""

START = 1_700_000_000.0

MAINT = (MAINTENANCE,)
ADM = (ADMIN,)
BOTH = (MAINTENANCE, ADMIN)


@attrs.define
class FakeClock:
    """A clock for ``BrokerOptions(clock=...)`` that moves only when told to."""

    now: float = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def _env(job_id: str, queue: str = "q", body: bytes | None = None, eta: float | None = None) -> Envelope:
    return Envelope(job_id, queue, job_id.encode() if body is None else body, eta)


def _ids(items: Iterable[Delivery | DeadLetter]) -> list[str]:
    return [item.id for item in items]


async def _drain(broker: Broker, queues: Sequence[str], limit: int = 100) -> list[Delivery]:
    """Fetch until nothing is ready, without waiting."""
    out: list[Delivery] = []
    while got := await broker.fetch(queues, limit, 0.0):
        out.extend(got)
    return out


class _Base:
    """Checks that a broker keeps every semantic of :mod:`bananas.broker`. Subclass it; see the module docstring.

    Capability flags (class attributes) let a broker opt out explicitly; each skipped test names the flag.

    The suite is split like the protocol (0.2): the **core** tests run on every broker; the tests of an optional
    capability (``maintenance``, ``admin``, ``enqueue_sync``, ``enqueue_with_hints``, ``ack_and_fetch``) run only
    when the broker has it (:func:`bananas.broker.capabilities`) and skip naming it otherwise. Set :attr:`claims`
    to the capabilities the broker is meant to have: then a missing one fails instead of skipping.
    """

    #: Capabilities the broker must have (``None``: whatever it implements). A claimed one it lacks fails the suite.
    claims: ClassVar[frozenset[str] | None] = None

    #: ``fetch`` blocks until a job arrives or ``timeout`` passes (rather than returning ``[]`` at once).
    supports_blocking_fetch: ClassVar[bool] = True
    #: ``completed_ttl`` and ``dead_ttl`` are measured with ``options.clock`` (not the server's own clock).
    supports_clock_retention: ClassVar[bool] = True
    #: Seconds a blocking fetch may wait in the blocking tests; only a broker that never wakes uses it up.
    block_timeout: ClassVar[float] = 10.0
    #: Envelopes in the batch test (one ``enqueue`` call).
    batch_size: ClassVar[int] = 1000

    @pytest.fixture
    def broker_factory(self) -> MakeBroker:
        pytest.fail(
            f"{type(self).__name__} must define an async fixture 'broker_factory' that yields "
            "make(**overrides) -> connected, empty Broker (see bananas.testing.conformance)"
        )

    def _require(self, flag: str) -> None:
        if not getattr(self, flag):
            pytest.skip(f"{type(self).__name__} opts out: {flag} = False")

    caps: BrokerCapabilities = BrokerCapabilities()
    """The capabilities of the last broker :meth:`_make` built."""

    def _gate(self, broker: Broker, needs: Sequence[str]) -> None:
        self.caps = capabilities(broker)
        for name in needs:
            if self.caps.has(name):
                continue
            methods = ", ".join(CAPABILITIES[name])
            if self.claims is not None and name in self.claims:
                pytest.fail(f"{type(broker).__name__} claims the {name!r} capability but lacks it ({methods})")
            pytest.skip(f"{type(broker).__name__} has no {name!r} capability ({methods})")

    async def _make(
        self, broker_factory: MakeBroker, *, needs: Sequence[str] = (), **overrides: object
    ) -> tuple[Broker, FakeClock]:
        """A new broker on a :class:`FakeClock`; skips the test unless it has every capability in ``needs``."""
        clock = FakeClock()
        broker = await broker_factory(clock=clock, **overrides)
        self._gate(broker, needs)
        return broker, clock

    # Admin reads. Core tests use them as extra checks inside ``if self.caps.admin is not None:`` blocks, so on a
    # core-only broker those checks visibly drop out and every core check still runs; the admin tests gate on
    # ``needs=ADM`` and skip (or fail, when claimed) without it.
    def _admin(self) -> SupportsAdmin:
        assert self.caps.admin is not None, "an admin read needs the admin capability: gate it on self.caps.admin"
        return self.caps.admin

    async def _lookup(self, broker: Broker, job_id: str) -> JobRecord | None:
        record = await self._admin().lookup(job_id)
        if record is not None:
            assert isinstance(record.state, RecordState), f"JobRecord.state {record.state!r} is not a RecordState"
        return record

    async def _state(self, broker: Broker, job_id: str) -> str | None:
        record = await self._lookup(broker, job_id)
        return None if record is None else record.state

    async def _dead_letters(self, broker: Broker, queue: str, limit: int = 100) -> list[DeadLetter]:
        return await self._admin().dead_letters(queue, limit)

    async def _known_queues(self, broker: Broker) -> list[str]:
        return await self._admin().known_queues()

    async def _fetch(self, broker: Broker, queues: Sequence[str], limit: int, timeout: float = 0.0) -> list[Delivery]:
        """``fetch`` with a guard, so a broker that ignores ``timeout`` fails the test instead of hanging it."""
        return await asyncio.wait_for(broker.fetch(queues, limit, timeout), timeout + self.block_timeout)

    async def _expire_leases(self, broker: Broker, clock: FakeClock) -> int:
        clock.advance(broker.options.lease + 1)
        assert self.caps.maintenance is not None, "a test that expires leases must declare needs=MAINT"
        return await self.caps.maintenance.reap()
