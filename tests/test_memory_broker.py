"""The memory broker against the broker conformance suite and the stateful model."""

from __future__ import annotations

import uuid

import pytest_asyncio
from hypothesis import settings

from bananas.broker import BrokerOptions
from bananas.builtin.memory_broker import MemoryBroker
from bananas.testing import BrokerConformance, make_broker_machine


class _ResettingMemoryBroker(MemoryBroker):
    """Drops its shared state on close, so the state machine's many examples leave nothing behind."""

    async def close(self) -> None:
        await super().close()
        MemoryBroker.reset(self.url)


async def factory(**overrides):
    broker = _ResettingMemoryBroker(f"memory://test-{uuid.uuid4().hex}", BrokerOptions(**overrides))
    await broker.connect()
    return broker


class TestMemoryBroker(BrokerConformance):
    @pytest_asyncio.fixture
    async def broker_factory(self):
        made: list[MemoryBroker] = []

        async def make(**overrides):
            broker = MemoryBroker(f"memory://test-{uuid.uuid4().hex}", BrokerOptions(**overrides))
            await broker.connect()
            made.append(broker)
            return broker

        yield make
        for broker in made:
            await broker.close()
            MemoryBroker.reset(broker.url)


TestMemoryMachine = make_broker_machine(factory).TestCase
TestMemoryMachine.settings = settings(deadline=None, max_examples=30, stateful_step_count=30)
