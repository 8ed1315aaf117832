"""Core checks: the factory contract, enqueue and fetch, ack and release."""

from __future__ import annotations

import asyncio

import pytest

from bananas.broker import (
    ADMIN,
    MAINTENANCE,
    Broker,
    Envelope,
    QueueDepth,
    capabilities,
)
from bananas.testing.conformance._base import (
    MakeBroker,
    _Base,
    _drain,
    _env,
    _ids,
)

__all__ = ["CoreChecks"]


class CoreChecks(_Base):
    """Checks every broker must pass (the core protocol)."""

    # -- the factory contract ------------------------------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_factory_builds_an_empty_broker_with_the_overrides(self, broker_factory: MakeBroker) -> None:
        # Given / When a broker built with overrides
        broker, clock = await self._make(broker_factory, lease=7.0, max_crash_deliveries=5)

        # Then it satisfies the protocol, carries those options and holds nothing
        assert isinstance(broker, Broker)
        assert not isinstance(broker, type), "the factory must return an instance"
        assert broker.options.lease == 7.0
        assert broker.options.max_crash_deliveries == 5
        assert broker.options.clock() == clock.now
        assert await broker.depths() == {}
        if self.caps.admin is not None:  # admin reads: checked only on a broker with the admin capability
            assert await self._known_queues(broker) == []
            assert await self._lookup(broker, "nope") is None

    @pytest.mark.asyncio
    async def test_close_twice_is_harmless(self, broker_factory: MakeBroker) -> None:
        # Given a connected broker
        broker, _ = await self._make(broker_factory)

        # When it is closed twice
        await broker.close()
        await broker.close()

        # Then nothing raised (and the factory may close it once more on teardown)

    @pytest.mark.asyncio
    async def test_capabilities_are_whole_and_as_claimed(self, broker_factory: MakeBroker) -> None:
        # Given / When a broker's optional capabilities are resolved
        broker, _ = await self._make(broker_factory)
        caps = capabilities(broker)

        # Then none is half implemented (a typo would silently switch it off) and every claimed one is there
        assert caps.partial == {}, f"capabilities with missing methods: {caps.partial}"
        if self.claims is not None:
            assert self.claims <= caps.names, f"claimed {sorted(self.claims)}, implemented {sorted(caps.names)}"
        assert (caps.maintenance is not None) == (MAINTENANCE in caps.names)
        assert (caps.admin is not None) == (ADMIN in caps.names)

    # -- enqueue and fetch ---------------------------------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_fetch_returns_the_enqueued_job_as_a_delivery(self, broker_factory: MakeBroker) -> None:
        # Given one job
        broker, _ = await self._make(broker_factory)
        await broker.enqueue([Envelope("a", "q", b"payload")])

        # When it is fetched
        got = await self._fetch(broker, ["q"], 1)

        # Then the delivery carries id, queue, body and first-delivery counters
        assert len(got) == 1
        d = got[0]
        assert (d.id, d.queue, d.body, d.deliveries, d.crashes) == ("a", "q", b"payload", 1, 0)
        assert isinstance(d.token, int)

    @pytest.mark.asyncio
    async def test_each_hand_out_has_its_own_token(self, broker_factory: MakeBroker) -> None:
        # Given five jobs
        broker, _ = await self._make(broker_factory)
        await broker.enqueue([_env(f"j{i}") for i in range(5)])

        # When they are fetched, and one is released and fetched again
        got = await self._fetch(broker, ["q"], 5)
        assert await broker.release(got[:1]) == [True]
        again = await self._fetch(broker, ["q"], 1)

        # Then every hand-out has a different token
        tokens = [d.token for d in [*got, *again]]
        assert len(set(tokens)) == 6

    @pytest.mark.asyncio
    async def test_fetch_is_fifo_within_a_queue(self, broker_factory: MakeBroker) -> None:
        # Given jobs enqueued in two calls
        broker, _ = await self._make(broker_factory)
        await broker.enqueue([_env("a"), _env("b"), _env("c")])
        await broker.enqueue([_env("d"), _env("e")])

        # When they are fetched one at a time, then the rest together
        first = await self._fetch(broker, ["q"], 1)
        second = await self._fetch(broker, ["q"], 1)
        rest = await self._fetch(broker, ["q"], 10)

        # Then they come out in enqueue order
        assert _ids(first) + _ids(second) + _ids(rest) == ["a", "b", "c", "d", "e"]

    @pytest.mark.asyncio
    async def test_fetch_drains_queues_in_strict_priority_order(self, broker_factory: MakeBroker) -> None:
        # Given jobs enqueued low priority first
        broker, _ = await self._make(broker_factory)
        await broker.enqueue([_env("l1", "low"), _env("n1", "normal"), _env("l2", "low")])
        await broker.enqueue([_env("h1", "high"), _env("h2", "high")])

        # When one fetch takes them all
        got = await self._fetch(broker, ["high", "normal", "low"], 10)

        # Then every higher queue is drained before the next one
        assert _ids(got) == ["h1", "h2", "n1", "l1", "l2"]

    @pytest.mark.asyncio
    async def test_fetch_one_at_a_time_respects_priority(self, broker_factory: MakeBroker) -> None:
        # Given one job in each of three queues
        broker, _ = await self._make(broker_factory)
        await broker.enqueue([_env("l", "low"), _env("n", "normal"), _env("h", "high")])
        queues = ["high", "normal", "low"]

        # When they are fetched with limit 1, and a new high job arrives between fetches
        first = await self._fetch(broker, queues, 1)
        await broker.enqueue([_env("h2", "high")])
        rest = [(await self._fetch(broker, queues, 1))[0] for _ in range(3)]

        # Then each fetch takes the highest ready queue
        assert _ids(first) + _ids(rest) == ["h", "h2", "n", "l"]

    @pytest.mark.asyncio
    async def test_priority_follows_the_order_of_the_queues_argument(self, broker_factory: MakeBroker) -> None:
        # Given jobs in two queues
        broker, _ = await self._make(broker_factory)
        await broker.enqueue([_env("h", "high"), _env("l", "low")])

        # When the caller lists "low" first
        got = await self._fetch(broker, ["low", "high"], 2)

        # Then "low" is drained first: priority is the caller's order, not the queue names
        assert _ids(got) == ["l", "h"]

    @pytest.mark.asyncio
    async def test_fetch_takes_only_from_the_listed_queues(self, broker_factory: MakeBroker) -> None:
        # Given a job in a queue the caller does not list
        broker, _ = await self._make(broker_factory)
        await broker.enqueue([_env("x", "other")])

        # When the caller fetches from another queue
        got = await self._fetch(broker, ["q"], 5, timeout=0.05)

        # Then nothing is handed out and the job stays ready
        assert got == []
        assert (await broker.depths(["other"]))["other"] == QueueDepth(ready=1)

    @pytest.mark.asyncio
    async def test_fetch_never_hands_out_more_than_limit(self, broker_factory: MakeBroker) -> None:
        # Given ten jobs
        broker, _ = await self._make(broker_factory)
        await broker.enqueue([_env(f"j{i}") for i in range(10)])

        # When a fetch asks for three
        got = await self._fetch(broker, ["q"], 3)

        # Then exactly the first three are leased and seven stay ready
        assert _ids(got) == ["j0", "j1", "j2"]
        assert (await broker.depths(["q"]))["q"] == QueueDepth(ready=7, running=3)

    @pytest.mark.asyncio
    async def test_limit_spans_all_queues_of_one_fetch(self, broker_factory: MakeBroker) -> None:
        # Given two high and five low jobs
        broker, _ = await self._make(broker_factory)
        await broker.enqueue([_env(f"h{i}", "high") for i in range(2)] + [_env(f"l{i}", "low") for i in range(5)])

        # When a fetch over both queues asks for four
        got = await self._fetch(broker, ["high", "low"], 4)

        # Then it takes both high jobs and tops up with two low ones, no more
        assert _ids(got) == ["h0", "h1", "l0", "l1"]

    @pytest.mark.asyncio
    async def test_fetch_with_limit_zero_returns_nothing(self, broker_factory: MakeBroker) -> None:
        # Given a ready job
        broker, _ = await self._make(broker_factory)
        await broker.enqueue([_env("a")])

        # When a caller with no free slot fetches
        got = await self._fetch(broker, ["q"], 0, timeout=0.05)

        # Then it gets nothing and the job stays ready
        assert got == []
        if self.caps.admin is not None:  # admin reads: checked only on a broker with the admin capability
            assert await self._state(broker, "a") == "ready"
        assert (await broker.depths(["q"]))["q"] == QueueDepth(ready=1)

    @pytest.mark.asyncio
    async def test_fetch_with_zero_timeout_does_not_wait(self, broker_factory: MakeBroker) -> None:
        # Given an empty queue
        broker, _ = await self._make(broker_factory)

        # When a fetch with timeout 0 finds nothing (the guard fails the test if it blocks)
        got = await asyncio.wait_for(broker.fetch(["q"], 1, 0.0), self.block_timeout)

        # Then it returns an empty list
        assert got == []

    @pytest.mark.asyncio
    async def test_fetch_times_out_with_an_empty_list(self, broker_factory: MakeBroker) -> None:
        # Given an empty queue
        broker, _ = await self._make(broker_factory)

        # When a fetch waits briefly
        got = await self._fetch(broker, ["q"], 5, timeout=0.2)

        # Then it gives up with an empty list
        assert got == []

    @pytest.mark.asyncio
    async def test_waiting_fetch_returns_when_a_job_is_enqueued(self, broker_factory: MakeBroker) -> None:
        self._require("supports_blocking_fetch")
        # Given a fetch waiting on an empty queue
        broker, _ = await self._make(broker_factory)
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiting = asyncio.create_task(broker.fetch(["q"], 1, self.block_timeout))
        await asyncio.sleep(0.2)
        assert not waiting.done(), "fetch returned before its timeout although nothing was ready"

        # When another task enqueues a job
        await broker.enqueue([_env("a")])
        got = await asyncio.wait_for(waiting, self.block_timeout * 2)

        # Then the waiting fetch gets it, well before its timeout
        assert _ids(got) == ["a"]
        assert loop.time() - started < self.block_timeout / 2

    @pytest.mark.asyncio
    async def test_two_waiting_fetchers_never_share_one_job(self, broker_factory: MakeBroker) -> None:
        self._require("supports_blocking_fetch")
        # Given two fetches waiting on the same queue
        broker, _ = await self._make(broker_factory)
        waiting = [asyncio.create_task(broker.fetch(["q"], 5, 2.0)) for _ in range(2)]
        await asyncio.sleep(0.1)

        # When one job is enqueued
        await broker.enqueue([_env("a")])
        results = await asyncio.wait_for(asyncio.gather(*waiting), self.block_timeout * 2)

        # Then exactly one fetch gets it and the other times out empty
        assert sorted(len(r) for r in results) == [0, 1]
        assert [d.id for r in results for d in r] == ["a"]

    @pytest.mark.asyncio
    async def test_concurrent_fetchers_get_disjoint_jobs(self, broker_factory: MakeBroker) -> None:
        # Given many jobs
        broker, _ = await self._make(broker_factory)
        await broker.enqueue([_env(f"j{i:03}") for i in range(200)])

        # When four workers drain the queue at the same time
        results = await asyncio.wait_for(
            asyncio.gather(*(_drain(broker, ["q"], limit=7) for _ in range(4))), self.block_timeout * 2
        )

        # Then every job went to exactly one of them
        ids = [d.id for r in results for d in r]
        assert len(ids) == 200
        assert set(ids) == {f"j{i:03}" for i in range(200)}

    @pytest.mark.asyncio
    async def test_batch_of_many_envelopes_is_fetched_exactly_once(self, broker_factory: MakeBroker) -> None:
        # Given one enqueue call with many envelopes
        broker, _ = await self._make(broker_factory)
        n = self.batch_size
        await broker.enqueue([_env(f"j{i:05}") for i in range(n)])
        assert (await broker.depths(["q"]))["q"] == QueueDepth(ready=n)

        # When the queue is drained and every delivery acknowledged
        got = await _drain(broker, ["q"], limit=64)
        acked = await broker.ack(got)

        # Then each job came out once, in order, and all settled
        assert _ids(got) == [f"j{i:05}" for i in range(n)]
        assert acked == [True] * n
        assert (await broker.depths(["q"]))["q"] == QueueDepth()

    # -- ack -------------------------------------------------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_ack_completes_the_job(self, broker_factory: MakeBroker) -> None:
        # Given a leased job
        broker, _ = await self._make(broker_factory)
        await broker.enqueue([_env("a")])
        (d,) = await self._fetch(broker, ["q"], 1)

        # When it is acknowledged
        result = await broker.ack([d])

        # Then it is completed and no longer counted or handed out
        assert result == [True]
        if self.caps.admin is not None:  # admin reads: checked only on a broker with the admin capability
            record = await self._lookup(broker, "a")
            assert record is not None and record.state == "completed"
        assert (await broker.depths(["q"]))["q"] == QueueDepth()
        assert await self._fetch(broker, ["q"], 1, timeout=0.05) == []

    @pytest.mark.asyncio
    async def test_ack_with_a_stale_token_returns_false_and_changes_nothing(self, broker_factory: MakeBroker) -> None:
        # Given a job that was released and handed out again, so the first delivery is stale
        broker, _ = await self._make(broker_factory)
        await broker.enqueue([_env("a")])
        (old,) = await self._fetch(broker, ["q"], 1)
        assert await broker.release([old]) == [True]
        (new,) = await self._fetch(broker, ["q"], 1)

        # When the stale delivery is acknowledged
        result = await broker.ack([old])

        # Then it fails, the job is still running, and the live delivery still settles it
        assert result == [False]
        if self.caps.admin is not None:  # admin reads: checked only on a broker with the admin capability
            record = await self._lookup(broker, "a")
            assert record is not None and record.state == "running"
        assert await broker.ack([new]) == [True]

    @pytest.mark.asyncio
    async def test_ack_reports_each_delivery_of_a_batch(self, broker_factory: MakeBroker) -> None:
        # Given two leased jobs, one of them already acknowledged
        broker, _ = await self._make(broker_factory)
        await broker.enqueue([_env("a"), _env("b")])
        a, b = await self._fetch(broker, ["q"], 2)
        assert await broker.ack([a]) == [True]

        # When both are acknowledged in one call
        result = await broker.ack([a, b])

        # Then the result is per delivery
        assert result == [False, True]

    @pytest.mark.asyncio
    async def test_a_settled_delivery_cannot_settle_again(self, broker_factory: MakeBroker) -> None:
        # Given an acknowledged delivery
        broker, clock = await self._make(broker_factory)
        await broker.enqueue([_env("a")])
        (d,) = await self._fetch(broker, ["q"], 1)
        assert await broker.ack([d]) == [True]

        # When every settle is tried with it again
        results = [
            await broker.ack([d]),
            await broker.renew([d]),
            await broker.release([d]),
            [await broker.retry(d, body=b"again", at=clock.now)],
            [await broker.dead_letter(d, body=b"again", reason="late")],
        ]

        # Then each fails and the job stays completed with its body
        assert results == [[False]] * 5
        if self.caps.admin is not None:  # admin reads: checked only on a broker with the admin capability
            record = await self._lookup(broker, "a")
            assert record is not None and (record.state, record.body) == ("completed", b"a")
            assert await self._dead_letters(broker, "q") == []

    # -- release ---------------------------------------------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_release_puts_jobs_back_at_the_head_without_a_crash(self, broker_factory: MakeBroker) -> None:
        # Given three jobs, two of them leased
        broker, _ = await self._make(broker_factory)
        await broker.enqueue([_env("a"), _env("b"), _env("c")])
        held = await self._fetch(broker, ["q"], 2)

        # When a shutting-down worker releases them
        result = await broker.release(held)

        # Then they are ready again ahead of "c", with no crash counted
        assert result == [True, True]
        assert (await broker.depths(["q"]))["q"] == QueueDepth(ready=3)
        got = await self._fetch(broker, ["q"], 3)
        assert set(_ids(got[:2])) == {"a", "b"}
        assert got[2].id == "c"
        assert [(d.deliveries, d.crashes) for d in got] == [(2, 0), (2, 0), (1, 0)]

    @pytest.mark.asyncio
    async def test_release_of_a_stale_delivery_returns_false(self, broker_factory: MakeBroker) -> None:
        # Given a delivery that was already released and handed out again
        broker, _ = await self._make(broker_factory)
        await broker.enqueue([_env("a")])
        (old,) = await self._fetch(broker, ["q"], 1)
        await broker.release([old])
        (new,) = await self._fetch(broker, ["q"], 1)

        # When the stale one is released
        result = await broker.release([old, new])

        # Then only the live one is released
        assert result == [False, True]
        if self.caps.admin is not None:  # admin reads: checked only on a broker with the admin capability
            assert await self._state(broker, "a") == "ready"

    @pytest.mark.asyncio
    async def test_releasing_one_delivery_twice_releases_it_once(self, broker_factory: MakeBroker) -> None:
        # Given a leased job
        broker, _ = await self._make(broker_factory)
        await broker.enqueue([_env("a")])
        (d,) = await self._fetch(broker, ["q"], 1)

        # When the same delivery is released twice in one call
        result = await broker.release([d, d])

        # Then one of them succeeds and there is still one copy of the job
        assert sorted(result) == [False, True]
        assert _ids(await self._fetch(broker, ["q"], 5)) == ["a"]
