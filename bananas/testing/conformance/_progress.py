"""Progress checks (capability ``progress``, :class:`bananas.broker.SupportsProgress`): the last progress of a job
is stored with it, read back by id, survives completion, and is never invented for an unknown job."""

from __future__ import annotations

import pytest

from bananas.broker import Progress
from bananas.testing.conformance._base import MakeBroker, _Base, _env

__all__ = ["ProgressChecks"]

PROGRESS = ("progress",)


class ProgressChecks(_Base):
    """``set_progress`` / ``progress`` (optional capability ``progress``)."""

    @pytest.mark.asyncio
    async def test_progress_is_stored_read_back_and_the_latest_wins(self, broker_factory: MakeBroker) -> None:
        # Given a running job
        broker, clock = await self._make(broker_factory, needs=PROGRESS)
        store = self.caps.progress
        assert store is not None
        await broker.enqueue([_env("a")])
        (d,) = await self._fetch(broker, ["q"], 1)
        assert await store.progress("a") is None

        # When its handler reports twice (with and without the queue hint)
        await store.set_progress("a", 0.25, "a quarter", queue="q")
        clock.advance(1)
        await store.set_progress("a", 3)

        # Then the latest value is read back, stamped with the broker's clock, and survives the ack
        assert await store.progress("a") == Progress(3.0, None, clock.now)
        assert await broker.ack([d]) == [True]
        assert await store.progress("a") == Progress(3.0, None, clock.now)

    @pytest.mark.asyncio
    async def test_progress_keeps_the_message(self, broker_factory: MakeBroker) -> None:
        broker, clock = await self._make(broker_factory, needs=PROGRESS)
        store = self.caps.progress
        assert store is not None
        await broker.enqueue([_env("b", queue="other")])
        await store.set_progress("b", 50, "half way: 50/100 rows")
        assert await store.progress("b") == Progress(50.0, "half way: 50/100 rows", clock.now)

    @pytest.mark.asyncio
    async def test_progress_of_an_unknown_job_is_none(self, broker_factory: MakeBroker) -> None:
        broker, _ = await self._make(broker_factory, needs=PROGRESS)
        store = self.caps.progress
        assert store is not None
        await broker.enqueue([_env("known")])
        await store.set_progress("ghost", 1.0, "nobody")
        assert await store.progress("ghost") is None
