"""Typed-fetch checks (``fetch(..., job_types=...)``, :mod:`bananas.broker_types`): a typed fetch never returns,
pops or reorders another type's job; untyped fetches keep one FIFO per queue across types; a typed fetcher takes
the oldest job of its types, so none of them starves; release and crash recovery put jobs back at the head across
types; a blocked typed fetch wakes for its types only."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Collection, Sequence

import pytest

from bananas.broker import Broker, Delivery, Envelope
from bananas.testing.conformance._base import MAINT, MakeBroker, _Base, _ids

__all__ = ["TypeChecks", "TYPED_FETCH"]

TYPED_FETCH = "typed_fetch"
"""The name to put in ``claims`` so that a broker whose ``fetch`` lost ``job_types`` fails instead of skipping."""


def _typed(job_id: str, job_type: str, queue: str = "q") -> Envelope:
    return Envelope(job_id, queue, job_id.encode(), None, job_type)


class TypeChecks(_Base):
    """Typed fetches (``job_types``); skipped on a broker whose ``fetch`` does not take them."""

    async def _make_typed(self, broker_factory: MakeBroker, **kwargs: object) -> tuple[Broker, object]:
        broker, clock = await self._make(broker_factory, **kwargs)  # type: ignore[arg-type]
        if not self.caps.typed_fetch:
            if self.claims is not None and TYPED_FETCH in self.claims:
                pytest.fail(f"{type(broker).__name__} claims typed fetches but its fetch takes no job_types")
            pytest.skip(f"{type(broker).__name__}.fetch takes no job_types (typed fetches)")
        return broker, clock

    async def _tfetch(
        self, broker: Broker, queues: Sequence[str], limit: int, types: Collection[str] | None, timeout: float = 0.0
    ) -> list[Delivery]:
        call = broker.fetch(queues, limit, timeout, job_types=types)  # type: ignore[call-arg]
        return await asyncio.wait_for(call, timeout + self.block_timeout)

    async def _tdrain(self, broker: Broker, queues: Sequence[str], types: Collection[str] | None,
                      limit: int = 100) -> list[Delivery]:
        out: list[Delivery] = []
        while got := await self._tfetch(broker, queues, limit, types):
            out.extend(got)
        return out

    @pytest.mark.asyncio
    async def test_a_typed_fetch_never_returns_another_type_and_leaves_it_in_place(
        self, broker_factory: MakeBroker
    ) -> None:
        # Given jobs of three types interleaved in one queue
        broker, _ = await self._make_typed(broker_factory)
        order = [("a1", "a"), ("b1", "b"), ("c1", "c"), ("a2", "a"), ("b2", "b"), ("a3", "a"), ("c2", "c")]
        await broker.enqueue([_typed(i, t) for i, t in order])

        # When a worker of type b, then one of types a and c, fetch in small batches
        bs = await self._tdrain(broker, ["q"], {"b"}, limit=1)
        assert await broker.ack(bs) == [True] * len(bs)
        ac = await self._tdrain(broker, ["q"], ["a", "c"], limit=2)

        # Then each got only its types, in enqueue order, each job on its first delivery (nothing popped and
        # pushed back), and an untyped fetch finds nothing left
        assert _ids(bs) == ["b1", "b2"]
        assert _ids(ac) == ["a1", "c1", "a2", "a3", "c2"]
        assert all(d.deliveries == 1 for d in [*bs, *ac])
        assert await self._tfetch(broker, ["q"], 10, None) == []

    @pytest.mark.asyncio
    async def test_a_typed_fetch_of_other_types_leaves_the_untyped_order_unchanged(
        self, broker_factory: MakeBroker
    ) -> None:
        # Given interleaved jobs of two types, and a typed fetch of a third type that finds nothing
        broker, _ = await self._make_typed(broker_factory)
        await broker.enqueue([_typed(f"j{i}", "ab"[i % 2]) for i in range(6)])
        assert await self._tfetch(broker, ["q"], 10, {"zzz"}) == []
        assert await self._tfetch(broker, ["q"], 10, set()) == []

        # When an untyped fetch takes them, then they come out in enqueue order
        assert _ids(await self._tfetch(broker, ["q"], 10, None)) == [f"j{i}" for i in range(6)]

    @pytest.mark.asyncio
    @pytest.mark.parametrize("seed", range(4))
    async def test_untyped_and_typed_fetches_keep_fifo_across_types_within_a_queue(
        self, broker_factory: MakeBroker, seed: int
    ) -> None:
        # Given a random interleaving of up to 5 types over three priority queues, enqueued in random batches
        rng = random.Random(seed)
        broker, _ = await self._make_typed(broker_factory)
        types = [f"t{k}" for k in range(rng.randint(1, 5))]
        queues = ["high", "normal", "low"]
        jobs = [(f"j{i}", rng.choice(types), rng.choice(queues)) for i in range(60)]
        i = 0
        while i < len(jobs):
            n = rng.randint(1, 7)
            await broker.enqueue([_typed(j, t, q) for j, t, q in jobs[i : i + n]])
            i += n
        asked = set(rng.sample(types, rng.randint(1, len(types))))

        # When a typed worker takes its types (random batch sizes), then an untyped one takes the rest
        typed: list[Delivery] = []
        while got := await self._tfetch(broker, queues, rng.randint(1, 9), asked):
            typed += got
        rest = await self._tdrain(broker, queues, None, limit=rng.randint(1, 9))

        # Then each got its jobs in priority order, FIFO within each queue across types, and nothing twice
        def expected(pick: set[str] | None) -> list[str]:
            return [j for q in queues for j, t, qq in jobs if qq == q and (pick is None or t in pick)]

        assert _ids(typed) == expected(asked)
        assert _ids(rest) == expected(set(types) - asked)

    @pytest.mark.asyncio
    async def test_a_typed_worker_does_not_starve_one_of_its_types(self, broker_factory: MakeBroker) -> None:
        # Given one job of type b, then a steady stream of type a jobs behind it
        broker, _ = await self._make_typed(broker_factory)
        await broker.enqueue([_typed("a0", "a"), _typed("b0", "b")])
        taken: list[str] = []
        for i in range(1, 6):
            await broker.enqueue([_typed(f"a{i}", "a")])
            got = await self._tfetch(broker, ["q"], 1, {"a", "b"})
            taken += _ids(got)
            await broker.ack(got)

        # Then the b job is taken in its turn, not after the a jobs that came later
        assert taken[:2] == ["a0", "b0"]

    @pytest.mark.asyncio
    async def test_released_jobs_go_back_to_the_head_across_types(self, broker_factory: MakeBroker) -> None:
        # Given jobs of two types, of which a typed worker holds the two oldest a jobs
        broker, _ = await self._make_typed(broker_factory)
        await broker.enqueue([_typed("a1", "a"), _typed("b1", "b"), _typed("a2", "a"), _typed("b2", "b")])
        held = await self._tfetch(broker, ["q"], 2, {"a"})
        assert _ids(held) == ["a1", "a2"]

        # When it gives them back
        assert await broker.release(held) == [True, True]

        # Then they come out first, in their order, ahead of the b jobs that waited meanwhile
        assert _ids(await self._tfetch(broker, ["q"], 10, None)) == ["a1", "a2", "b1", "b2"]

    @pytest.mark.asyncio
    async def test_recovered_jobs_go_back_to_the_head_of_their_type(self, broker_factory: MakeBroker) -> None:
        # Given a typed worker that died holding the first job of type a
        broker, clock = await self._make_typed(broker_factory, needs=MAINT)
        await broker.enqueue([_typed("a1", "a"), _typed("b1", "b"), _typed("a2", "a")])
        (lost,) = await self._tfetch(broker, ["q"], 1, {"a"})

        # When its lease expires and is reaped
        assert await self._expire_leases(broker, clock) == 1  # type: ignore[arg-type]

        # Then it is the next job of its type and of the queue, with one crash counted
        (again,) = await self._tfetch(broker, ["q"], 1, {"a"})
        assert (again.id, again.crashes, again.deliveries) == (lost.id, 1, 2)
        await broker.release([again])
        assert _ids(await self._tfetch(broker, ["q"], 10, None)) == ["a1", "b1", "a2"]

    @pytest.mark.asyncio
    async def test_retried_and_due_jobs_keep_their_type(self, broker_factory: MakeBroker) -> None:
        # Given a job of type a retried at once, and a delayed job of type b that becomes due
        broker, clock = await self._make_typed(broker_factory, needs=MAINT)
        now = broker.options.clock()
        await broker.enqueue([_typed("a1", "a"), Envelope("b1", "q", b"b1", now + 5, "b")])
        (d,) = await self._tfetch(broker, ["q"], 1, {"a"})
        assert await broker.retry(d, body=b"a1 again", at=now)
        clock.advance(6)  # type: ignore[attr-defined]
        assert self.caps.maintenance is not None
        assert await self.caps.maintenance.move_due() == 1

        # Then a fetch of type b gets only b1, one of type a only the retried a1 (with its new body)
        assert _ids(await self._tfetch(broker, ["q"], 10, {"b"})) == ["b1"]
        (again,) = await self._tfetch(broker, ["q"], 10, {"a"})
        assert (again.id, again.body, again.deliveries) == ("a1", b"a1 again", 2)

    @pytest.mark.asyncio
    async def test_jobs_without_a_type_go_only_to_fetches_that_ask_for_the_empty_type(
        self, broker_factory: MakeBroker
    ) -> None:
        broker, _ = await self._make_typed(broker_factory)
        await broker.enqueue([Envelope("u1", "q", b"u1"), _typed("a1", "a")])
        assert _ids(await self._tfetch(broker, ["q"], 10, {"a"})) == ["a1"]
        assert _ids(await self._tfetch(broker, ["q"], 10, {"a", ""})) == ["u1"]

    @pytest.mark.asyncio
    async def test_ack_and_fetch_takes_only_the_types_asked_for(self, broker_factory: MakeBroker) -> None:
        broker, _ = await self._make_typed(broker_factory)
        combined = self.caps.ack_and_fetch
        if combined is None:
            pytest.skip(f"{type(broker).__name__} has no 'ack_and_fetch' capability")
        await broker.enqueue([_typed("a1", "a"), _typed("b1", "b"), _typed("a2", "a"), _typed("b2", "b")])
        held = await self._tfetch(broker, ["q"], 1, {"b"})
        owned, got = await combined(held, ["q"], 10, job_types={"b"})
        assert owned == [True] and _ids(got) == ["b2"]
        assert _ids(await self._tfetch(broker, ["q"], 10, None)) == ["a1", "a2"]

    @pytest.mark.asyncio
    async def test_a_blocked_typed_fetch_wakes_for_its_type_and_not_for_others(
        self, broker_factory: MakeBroker
    ) -> None:
        self._require("supports_blocking_fetch")
        # Given a typed fetcher blocked on an empty queue, and jobs of another type arriving while it waits
        broker, _ = await self._make_typed(broker_factory)
        producer = broker  # another task of the same broker, as in the core blocking-fetch checks
        waiting = asyncio.create_task(self._tfetch(broker, ["q"], 5, {"mine"}, timeout=5.0))
        await asyncio.sleep(0.1)
        await producer.enqueue([_typed("o1", "other"), _typed("o2", "other")])
        await asyncio.sleep(0.3)
        assert not waiting.done(), "a typed fetch returned although only other types' jobs arrived"

        # When a job of its type arrives, then it gets that one promptly and nothing else
        started = time.monotonic()
        await producer.enqueue([_typed("m1", "mine")])
        got = await waiting
        assert _ids(got) == ["m1"] and time.monotonic() - started < 3.0
        assert _ids(await self._tfetch(broker, ["q"], 10, {"other"})) == ["o1", "o2"]

    @pytest.mark.asyncio
    async def test_ready_types_lists_the_waiting_types_with_their_count_and_oldest_time(
        self, broker_factory: MakeBroker
    ) -> None:
        # Given two a jobs, then (later) a b job and a job without a type, and a scheduled c job
        broker, clock = await self._make(broker_factory, needs=("ready_types",))
        listing = self.caps.ready_types
        assert listing is not None
        t0 = broker.options.clock()
        await broker.enqueue([_typed("a1", "a"), _typed("a2", "a")])
        clock.advance(5)  # type: ignore[attr-defined]
        await broker.enqueue([_typed("b1", "b"), Envelope("u1", "q", b"u1"), Envelope("c1", "q", b"c1", t0 + 60, "c")])

        # Then the ready types are listed oldest first, with their counts and since when they wait
        got = [(r.job_type, r.ready, r.oldest_at) for r in await listing("q")]
        assert got[0] == ("a", 2, t0)
        assert sorted(got[1:]) == [("", 1, t0 + 5), ("b", 1, t0 + 5)]

        # And a type whose jobs were all taken is no longer listed
        if self.caps.typed_fetch:
            await self._tfetch(broker, ["q"], 10, {"a"})
            assert {r.job_type for r in await listing("q")} == {"", "b"}
        assert await listing("empty") == []
