"""Checks of the optional ``worker_registry`` capability (:class:`bananas.broker.SupportsWorkerRegistry`): records
are stored as given, replaced per worker id, removed on request and gone once their time to live has passed on
``options.clock``."""

from __future__ import annotations

import pytest

from bananas.testing.conformance._base import MakeBroker, _Base

__all__ = ["RegistryChecks"]

REGISTRY = ("worker_registry",)


class RegistryChecks(_Base):
    """Checks of the worker registry capability (run only on brokers that have it)."""

    @pytest.mark.asyncio
    async def test_published_records_are_listed_as_given(self, broker_factory: MakeBroker) -> None:
        # Given a broker with the registry and two workers' records (any bytes)
        broker, _ = await self._make(broker_factory, needs=REGISTRY)
        registry = self.caps.worker_registry
        assert registry is not None

        # When both publish
        await registry.publish_worker("host-1", b'{"id": "host-1"}', 30)
        await registry.publish_worker("host-2", b"\x00\xffbinary", 30)

        # Then both records come back byte for byte
        assert sorted(await registry.list_workers()) == sorted([b'{"id": "host-1"}', b"\x00\xffbinary"])

    @pytest.mark.asyncio
    async def test_publishing_again_replaces_the_record(self, broker_factory: MakeBroker) -> None:
        # Given a published record
        broker, _ = await self._make(broker_factory, needs=REGISTRY)
        registry = self.caps.worker_registry
        assert registry is not None
        await registry.publish_worker("host-1", b"first", 30)

        # When the same worker publishes again
        await registry.publish_worker("host-1", b"second", 30)

        # Then only the newest record is listed
        assert await registry.list_workers() == [b"second"]

    @pytest.mark.asyncio
    async def test_removed_records_are_gone_and_unknown_ids_are_ignored(self, broker_factory: MakeBroker) -> None:
        # Given two records
        broker, _ = await self._make(broker_factory, needs=REGISTRY)
        registry = self.caps.worker_registry
        assert registry is not None
        await registry.publish_worker("host-1", b"one", 30)
        await registry.publish_worker("host-2", b"two", 30)

        # When one worker leaves, and an unknown one too
        await registry.remove_worker("host-1")
        await registry.remove_worker("never-published")

        # Then only the other record is left
        assert await registry.list_workers() == [b"two"]

    @pytest.mark.asyncio
    async def test_records_expire_after_their_ttl_unless_refreshed(self, broker_factory: MakeBroker) -> None:
        # Given a worker that stops publishing (SIGKILL) and one that keeps publishing
        broker, clock = await self._make(broker_factory, needs=REGISTRY)
        registry = self.caps.worker_registry
        assert registry is not None
        await registry.publish_worker("dead", b"dead", 6)
        await registry.publish_worker("alive", b"alive", 6)

        # When time passes within the ttl, the live one refreshes, and then the dead one's ttl runs out
        clock.advance(4)
        assert sorted(await registry.list_workers()) == [b"alive", b"dead"]
        await registry.publish_worker("alive", b"alive", 6)
        clock.advance(3)

        # Then only the refreshed record is listed
        assert await registry.list_workers() == [b"alive"]
