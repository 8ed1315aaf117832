"""Lease and time checks: renew, reap and fencing, crash loops, retries and delayed jobs (``maintenance``)."""

from __future__ import annotations

import pytest

from bananas.broker import QueueDepth
from bananas.testing.conformance._base import (
    MAINT,
    MakeBroker,
    _Base,
    _env,
    _ids,
)

__all__ = ["LeaseChecks"]


class LeaseChecks(_Base):
    """Leases, fencing, crash loops, retries and delays; tests that reap or move due jobs need ``maintenance``."""

    # -- leases: renew, reap, fencing, crash loops -------------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_renew_keeps_a_lease_alive_past_its_first_expiry(self, broker_factory: MakeBroker) -> None:
        # Given a job leased for 10 s
        broker, clock = await self._make(broker_factory, needs=MAINT, lease=10.0)
        await broker.enqueue([_env("a")])
        (d,) = await self._fetch(broker, ["q"], 1)

        # When the lease is renewed after 8 s and the clock passes the first expiry
        clock.advance(8)
        renewed = await broker.renew([d])
        clock.advance(8)
        reaped = await broker.reap()

        # Then nothing is reaped and the delivery still settles the job
        assert renewed == [True]
        assert reaped == 0
        if self.caps.admin is not None:  # admin reads: checked only on a broker with the admin capability
            assert await self._state(broker, "a") == "running"
        assert await broker.ack([d]) == [True]

    @pytest.mark.asyncio
    async def test_reap_leaves_live_leases_alone(self, broker_factory: MakeBroker) -> None:
        # Given a job leased for 10 s
        broker, clock = await self._make(broker_factory, needs=MAINT, lease=10.0)
        await broker.enqueue([_env("a")])
        (d,) = await self._fetch(broker, ["q"], 1)

        # When reap runs before the lease ends
        clock.advance(9)
        reaped = await broker.reap()

        # Then nothing is recovered
        assert reaped == 0
        if self.caps.admin is not None:  # admin reads: checked only on a broker with the admin capability
            assert await self._state(broker, "a") == "running"
        assert await broker.ack([d]) == [True]

    @pytest.mark.asyncio
    async def test_reap_puts_an_expired_job_back_at_the_head_with_a_crash(self, broker_factory: MakeBroker) -> None:
        # Given two jobs, the first leased and its worker gone
        broker, clock = await self._make(broker_factory, needs=MAINT, lease=10.0)
        await broker.enqueue([_env("a"), _env("b")])
        (first,) = await self._fetch(broker, ["q"], 1)

        # When the lease expires and reap runs
        reaped = await self._expire_leases(broker, clock)

        # Then the job is ready again, ahead of "b", counted as a crash
        assert reaped == 1
        if self.caps.admin is not None:  # admin reads: checked only on a broker with the admin capability
            record = await self._lookup(broker, "a")
            assert record is not None and (record.state, record.crashes) == ("ready", 1)
        (again,) = await self._fetch(broker, ["q"], 1)
        assert (again.id, again.deliveries, again.crashes) == ("a", 2, 1)
        assert again.token != first.token
        assert _ids(await self._fetch(broker, ["q"], 1)) == ["b"]

    @pytest.mark.asyncio
    async def test_a_reaped_delivery_is_fenced_off(self, broker_factory: MakeBroker) -> None:
        # Given a delivery whose lease expired and was reaped
        broker, clock = await self._make(broker_factory, needs=MAINT, lease=10.0)
        await broker.enqueue([_env("a")])
        (old,) = await self._fetch(broker, ["q"], 1)
        assert await self._expire_leases(broker, clock) == 1

        # When the late worker tries every settle with it
        results = [
            await broker.renew([old]),
            await broker.ack([old]),
            await broker.release([old]),
            [await broker.retry(old, body=b"late", at=clock.now)],
            [await broker.dead_letter(old, body=b"late", reason="late")],
        ]

        # Then each fails and the job is untouched: ready, original body, one crash
        assert results == [[False]] * 5
        if self.caps.admin is not None:  # admin reads: checked only on a broker with the admin capability
            record = await self._lookup(broker, "a")
            assert record is not None and (record.state, record.body, record.crashes) == ("ready", b"a", 1)
            assert await self._dead_letters(broker, "q") == []

    @pytest.mark.asyncio
    async def test_the_old_token_stays_fenced_after_redelivery(self, broker_factory: MakeBroker) -> None:
        # Given a reaped job handed out to a new worker
        broker, clock = await self._make(broker_factory, needs=MAINT, lease=10.0)
        await broker.enqueue([_env("a")])
        (old,) = await self._fetch(broker, ["q"], 1)
        await self._expire_leases(broker, clock)
        (new,) = await self._fetch(broker, ["q"], 1)

        # When the late worker tries to settle while the new one holds the lease
        late = [
            await broker.ack([old]),
            await broker.renew([old]),
            await broker.release([old]),
            [await broker.retry(old, body=b"late", at=clock.now)],
            [await broker.dead_letter(old, body=b"late", reason="late")],
        ]

        # Then the late worker fails and the new one still owns the job
        assert late == [[False]] * 5
        if self.caps.admin is not None:  # admin reads: checked only on a broker with the admin capability
            assert await self._state(broker, "a") == "running"
        assert await broker.renew([new]) == [True]
        assert await broker.ack([new]) == [True]

    @pytest.mark.asyncio
    async def test_crash_loop_dead_letters_after_max_crash_deliveries(self, broker_factory: MakeBroker) -> None:
        # Given a job whose every worker dies, with max_crash_deliveries=3
        broker, clock = await self._make(broker_factory, needs=MAINT, lease=10.0, max_crash_deliveries=3)
        await broker.enqueue([_env("a")])

        # When it is fetched and its lease expires three times
        seen = []
        for _ in range(3):
            (d,) = await self._fetch(broker, ["q"], 1)
            seen.append((d.deliveries, d.crashes))
            await self._expire_leases(broker, clock)

        # Then it was redelivered twice and is now a crash_loop dead letter, no longer handed out
        assert seen == [(1, 0), (2, 1), (3, 2)]
        if self.caps.admin is not None:  # admin reads: checked only on a broker with the admin capability
            record = await self._lookup(broker, "a")
            assert record is not None
            assert (record.state, record.reason, record.crashes) == ("dead", "crash_loop", 3)
            letters = await self._dead_letters(broker, "q")
            assert [(x.id, x.reason, x.body) for x in letters] == [("a", "crash_loop", b"a")]
        assert await self._fetch(broker, ["q"], 1, timeout=0.05) == []
        assert (await broker.depths(["q"]))["q"] == QueueDepth(dead=1)

    @pytest.mark.asyncio
    async def test_reap_handles_many_expired_leases(self, broker_factory: MakeBroker) -> None:
        # Given three leased jobs, two of them renewed
        broker, clock = await self._make(broker_factory, needs=MAINT, lease=10.0)
        await broker.enqueue([_env("a"), _env("b"), _env("c")])
        a, b, c = await self._fetch(broker, ["q"], 3)
        clock.advance(5)
        assert await broker.renew([a, c]) == [True, True]

        # When the clock passes only b's lease
        clock.advance(6)
        reaped = await broker.reap()

        # Then only b is recovered
        assert reaped == 1
        if self.caps.admin is not None:  # admin reads: checked only on a broker with the admin capability
            assert [await self._state(broker, x) for x in "abc"] == ["running", "ready", "running"]
        assert await broker.renew([a, b, c]) == [True, False, True]

    # -- retry -----------------------------------------------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_retry_in_the_future_waits_for_move_due(self, broker_factory: MakeBroker) -> None:
        # Given a leased job
        broker, clock = await self._make(broker_factory, needs=MAINT)
        await broker.enqueue([_env("a")])
        (d,) = await self._fetch(broker, ["q"], 1)

        # When it is retried for 60 s later
        assert await broker.retry(d, body=b"a-v2", at=clock.now + 60) is True

        # Then it is scheduled, not ready, until the clock passes and move_due runs
        if self.caps.admin is not None:  # admin reads: checked only on a broker with the admin capability
            assert await self._state(broker, "a") == "scheduled"
        assert (await broker.depths(["q"]))["q"] == QueueDepth(scheduled=1)
        assert await broker.move_due() == 0
        assert await self._fetch(broker, ["q"], 1, timeout=0.05) == []
        clock.advance(61)
        assert await broker.move_due() == 1
        (again,) = await self._fetch(broker, ["q"], 1)
        assert (again.id, again.body, again.deliveries, again.crashes) == ("a", b"a-v2", 2, 0)

    @pytest.mark.asyncio
    async def test_retry_now_or_in_the_past_is_ready_at_once(self, broker_factory: MakeBroker) -> None:
        # Given two leased jobs
        broker, clock = await self._make(broker_factory)
        await broker.enqueue([_env("a"), _env("b")])
        a, b = await self._fetch(broker, ["q"], 2)

        # When one is retried for now and the other for a past time
        assert await broker.retry(a, body=b"a2", at=clock.now) is True
        assert await broker.retry(b, body=b"b2", at=clock.now - 100) is True

        # Then both are ready without move_due
        assert (await broker.depths(["q"]))["q"] == QueueDepth(ready=2)
        got = await self._fetch(broker, ["q"], 2)
        assert sorted((d.id, d.body) for d in got) == [("a", b"a2"), ("b", b"b2")]

    @pytest.mark.asyncio
    async def test_retry_stores_the_new_body(self, broker_factory: MakeBroker) -> None:
        # Given a leased job
        broker, clock = await self._make(broker_factory)
        await broker.enqueue([_env("a", body=b"attempt-1")])
        (d,) = await self._fetch(broker, ["q"], 1)

        # When it is retried with an updated body
        await broker.retry(d, body=b"attempt-2", at=clock.now + 10)

        # Then the record holds the new body and counts no crash
        if self.caps.admin is not None:  # admin reads: checked only on a broker with the admin capability
            record = await self._lookup(broker, "a")
            assert record is not None and (record.body, record.crashes) == (b"attempt-2", 0)

    # -- delays ------------------------------------------------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_enqueue_with_future_eta_waits_for_move_due(self, broker_factory: MakeBroker) -> None:
        # Given a job due in 30 s
        broker, clock = await self._make(broker_factory, needs=MAINT)
        await broker.enqueue([_env("a", eta=clock.now + 30)])

        # When time passes in two steps, with move_due after each
        scheduled = await self._lookup(broker, "a") if self.caps.admin is not None else None
        before = await self._fetch(broker, ["q"], 1, timeout=0.05)
        clock.advance(29)
        moved_early = await broker.move_due()
        clock.advance(2)
        moved_late = await broker.move_due()

        # Then it is scheduled until its time has come, then ready
        if self.caps.admin is not None:  # admin reads: checked only on a broker with the admin capability
            assert scheduled is not None and (scheduled.state, scheduled.deliveries) == ("scheduled", 0)
        assert before == []
        assert (moved_early, moved_late) == (0, 1)
        assert _ids(await self._fetch(broker, ["q"], 1)) == ["a"]

    @pytest.mark.asyncio
    async def test_enqueue_with_past_eta_is_ready_at_once(self, broker_factory: MakeBroker) -> None:
        # Given / When a job whose eta has passed
        broker, clock = await self._make(broker_factory)
        await broker.enqueue([_env("a", eta=clock.now - 5)])

        # Then it is ready without move_due
        if self.caps.admin is not None:  # admin reads: checked only on a broker with the admin capability
            assert await self._state(broker, "a") == "ready"
        assert _ids(await self._fetch(broker, ["q"], 1)) == ["a"]

    @pytest.mark.asyncio
    async def test_move_due_respects_its_limit_and_moves_the_earliest_first(self, broker_factory: MakeBroker) -> None:
        # Given five scheduled jobs, enqueued latest eta first, and one not yet due
        broker, clock = await self._make(broker_factory, needs=MAINT)
        await broker.enqueue([_env(f"j{i}", eta=clock.now + 10 + i) for i in reversed(range(5))])
        await broker.enqueue([_env("later", eta=clock.now + 1000)])
        clock.advance(20)

        # When move_due runs with limit 1, then 2, then without a limit
        counts = [await broker.move_due(1), await broker.move_due(2), await broker.move_due()]

        # Then it moves at most the limit, earliest eta first, and leaves the job not yet due
        assert counts == [1, 2, 2]
        assert _ids(await self._fetch(broker, ["q"], 1)) == ["j0"]
        if self.caps.admin is not None:  # admin reads: checked only on a broker with the admin capability
            assert await self._state(broker, "later") == "scheduled"
        assert await broker.move_due() == 0
