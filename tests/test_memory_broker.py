"""The memory broker against the broker conformance suite and the stateful model."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import pytest_asyncio
from hypothesis import settings

from bananas.broker import BrokerOptions, Envelope
from bananas.builtin.memory_broker import MemoryBroker
from bananas.testing import BrokerConformance, make_broker_machine
from bananas.testing.conformance import TYPED_FETCH, FakeClock


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
    claims = frozenset({"maintenance", "admin", "schedules", "enqueue_sync", "ack_and_fetch", "worker_registry",
                        "ready_types", TYPED_FETCH})

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


# -- memory-specific behaviour ---------------------------------------------------------------------------------------
def test_enqueue_survives_a_waiter_whose_loop_was_closed(memory_broker_url):
    # Given a fetch left waiting on an event loop that was then closed (its thread stopped without cleanup)
    broker = MemoryBroker(memory_broker_url)
    dead_loop = asyncio.new_event_loop()
    abandoned = dead_loop.create_task(broker.fetch(["q"], 1, 60.0))
    dead_loop.run_until_complete(asyncio.sleep(0.05))
    dead_loop.close()

    async def enqueue_while_another_fetch_waits():
        waiting = asyncio.create_task(broker.fetch(["q"], 1, 10.0))
        await asyncio.sleep(0.05)
        await broker.enqueue([Envelope("a", "q", b"a")])
        return await asyncio.wait_for(waiting, 10.0)

    # When a job is enqueued from a live loop
    got = asyncio.run(enqueue_while_another_fetch_waits())

    # Then the enqueue neither raised nor left the live waiter asleep
    assert [d.id for d in got] == ["a"]
    assert not abandoned.done()
    abandoned._log_destroy_pending = False  # it can never finish: its loop is gone


@pytest.mark.asyncio
async def test_updated_at_follows_every_transition(memory_broker_url):
    # Given a memory broker on a fake clock
    clock = FakeClock()
    broker = MemoryBroker(memory_broker_url, BrokerOptions(clock=clock, lease=10.0))
    await broker.enqueue([Envelope("a", "q", b"a")])
    stamps = []

    async def stamp():
        stamps.append((await broker.lookup("a")).updated_at - FakeClock().now)

    # When the job is fetched, released, fetched, reaped, fetched, retried later, moved and dead-lettered
    (d,) = await broker.fetch(["q"], 1, 0)
    clock.advance(1)
    await broker.release([d])
    await stamp()
    (d,) = await broker.fetch(["q"], 1, 0)
    clock.advance(11)
    await broker.reap()
    await stamp()
    (d,) = await broker.fetch(["q"], 1, 0)
    await broker.retry(d, body=b"a", at=clock.now + 5)
    clock.advance(6)
    await broker.move_due()
    await stamp()
    (d,) = await broker.fetch(["q"], 1, 0)
    clock.advance(1)
    await broker.dead_letter(d, body=b"a", reason="boom")
    await stamp()
    clock.advance(1)
    await broker.requeue_dead("q")
    await stamp()

    # Then each change stamped the record with the clock
    assert stamps == [1.0, 12.0, 18.0, 19.0, 20.0]
