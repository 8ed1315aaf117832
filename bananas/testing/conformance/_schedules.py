"""Checks of the optional ``schedules`` capability (:mod:`bananas.broker_schedules`): the leader lease and its
fencing, the per-tick guard and the stored schedule states. They run only on a broker that has the capability."""

from __future__ import annotations

import asyncio

import pytest

from bananas.broker_schedules import SCHEDULES, SupportsSchedules
from bananas.testing.conformance._base import FakeClock, MakeBroker, _Base

__all__ = ["ScheduleChecks"]

SCHED = (SCHEDULES,)


class ScheduleChecks(_Base):
    """Leader lease, fencing, exactly-once tick claims and schedule state (capability ``schedules``)."""

    async def _store(self, broker_factory: MakeBroker) -> tuple[SupportsSchedules, FakeClock]:
        broker, clock = await self._make(broker_factory, needs=SCHED)
        assert self.caps.schedules is not None
        return self.caps.schedules, clock

    @pytest.mark.asyncio
    async def test_one_candidate_holds_the_leader_lease_at_a_time(self, broker_factory: MakeBroker) -> None:
        # Given nobody leads
        store, _ = await self._store(broker_factory)
        assert await store.current_leader() is None

        # When two candidates ask for the lease, and the first asks again
        first = await store.acquire_leader("a", 10.0)
        second = await store.acquire_leader("b", 10.0)
        again = await store.acquire_leader("a", 10.0)

        # Then the first holds it with one token, the second is refused, and the lease says so
        assert isinstance(first, int) and second is None and again == first
        lease = await store.current_leader()
        assert lease is not None and (lease.holder, lease.token) == ("a", first)

    @pytest.mark.asyncio
    async def test_a_renewed_lease_outlives_its_first_expiry(self, broker_factory: MakeBroker) -> None:
        # Given a lease of 10 s
        store, clock = await self._store(broker_factory)
        token = await store.acquire_leader("a", 10.0)
        assert token is not None

        # When it is renewed after 8 s and the clock passes the first expiry
        clock.advance(8)
        renewed = await store.renew_leader("a", token, 10.0)
        clock.advance(8)

        # Then it is still held and nobody else gets it
        assert renewed is True
        assert await store.acquire_leader("b", 10.0) is None
        lease = await store.current_leader()
        assert lease is not None and lease.holder == "a" and lease.expires_at == pytest.approx(clock.now + 2)

    @pytest.mark.asyncio
    async def test_an_expired_lease_goes_to_another_candidate_with_a_greater_token(
        self, broker_factory: MakeBroker
    ) -> None:
        # Given a leader that stopped renewing (killed)
        store, clock = await self._store(broker_factory)
        old = await store.acquire_leader("a", 10.0)
        assert old is not None

        # When its lease expires and another candidate asks
        clock.advance(10.5)
        assert await store.current_leader() is None
        new = await store.acquire_leader("b", 10.0)

        # Then the other leads with a greater token, and the old leader can neither renew nor release
        assert new is not None and new > old
        assert await store.renew_leader("a", old, 10.0) is False
        assert await store.release_leader("a", old) is False
        lease = await store.current_leader()
        assert lease is not None and (lease.holder, lease.token) == ("b", new)

    @pytest.mark.asyncio
    async def test_a_released_lease_is_free_at_once(self, broker_factory: MakeBroker) -> None:
        # Given a leader
        store, _ = await self._store(broker_factory)
        token = await store.acquire_leader("a", 10.0)
        assert token is not None

        # When a wrong token tries to release it, then the holder releases it
        wrong = await store.release_leader("a", token + 1)
        released = await store.release_leader("a", token)

        # Then only the holder's release counts and another candidate takes over without waiting
        assert (wrong, released) == (False, True)
        assert await store.current_leader() is None
        assert await store.acquire_leader("b", 10.0) is not None

    @pytest.mark.asyncio
    async def test_a_tick_is_claimed_once_and_never_an_older_one(self, broker_factory: MakeBroker) -> None:
        # Given a leader
        store, _ = await self._store(broker_factory)
        token = await store.acquire_leader("a", 10.0)
        assert token is not None

        # When it claims tick 100 twice, tick 90, tick 110, and tick 100 of another schedule
        claims = [
            await store.claim_tick("s", 100.0, token),
            await store.claim_tick("s", 100.0, token),
            await store.claim_tick("s", 90.0, token),
            await store.claim_tick("s", 110.0, token),
            await store.claim_tick("other", 100.0, token),
        ]

        # Then each tick goes once, forward only, per schedule
        assert claims == [True, False, False, True, True]

    @pytest.mark.asyncio
    async def test_concurrent_claims_of_one_tick_succeed_once(self, broker_factory: MakeBroker) -> None:
        # Given a leader and 20 simultaneous claims of one tick (two schedulers that both think they lead)
        store, _ = await self._store(broker_factory)
        token = await store.acquire_leader("a", 10.0)
        assert token is not None

        # When they race
        results = await asyncio.gather(*(store.claim_tick("s", 1000.0, token) for _ in range(20)))

        # Then exactly one wins
        assert results.count(True) == 1

    @pytest.mark.asyncio
    async def test_claims_and_state_writes_are_fenced_by_the_live_token(self, broker_factory: MakeBroker) -> None:
        # Given a leader whose lease expired and was taken over
        store, clock = await self._store(broker_factory)
        old = await store.acquire_leader("a", 10.0)
        assert old is not None
        clock.advance(11)
        new = await store.acquire_leader("b", 10.0)
        assert new is not None

        # When the old leader (not knowing yet) claims a tick and writes a state, and the new one does the same
        stale = (await store.claim_tick("s", 5.0, old), await store.save_schedule_state("s", "old", old))
        live = (await store.claim_tick("s", 5.0, new), await store.save_schedule_state("s", "new", new))

        # Then only the live token's calls act
        assert stale == (False, False) and live == (True, True)
        assert await store.schedule_states(["s"]) == {"s": "new"}

    @pytest.mark.asyncio
    async def test_an_unclaimed_tick_can_be_claimed_again(self, broker_factory: MakeBroker) -> None:
        # Given ticks 10 and 20 claimed (the enqueue of 20 failed)
        store, _ = await self._store(broker_factory)
        token = await store.acquire_leader("a", 10.0)
        assert token is not None
        assert await store.claim_tick("s", 10.0, token) and await store.claim_tick("s", 20.0, token)

        # When 20 is given back (to 10), a stale undo is tried, and 20 is claimed again
        undone = await store.unclaim_tick("s", 20.0, 10.0, token)
        stale_undo = await store.unclaim_tick("s", 20.0, 10.0, token)
        again = await store.claim_tick("s", 20.0, token)

        # Then the tick can be tried again once, and 10 stays claimed
        assert (undone, stale_undo, again) == (True, False, True)
        assert await store.claim_tick("s", 10.0, token) is False
        assert await store.unclaim_tick("s", 20.0, None, token) is True
        assert await store.claim_tick("s", 10.0, token) is True

    @pytest.mark.asyncio
    async def test_schedule_states_are_stored_per_schedule(self, broker_factory: MakeBroker) -> None:
        # Given a leader that writes two states and replaces one
        store, _ = await self._store(broker_factory)
        token = await store.acquire_leader("a", 10.0)
        assert token is not None
        assert await store.schedule_states() == {}
        for name, text in (("a", '{"n": 1}'), ("b", "x"), ("a", '{"n": 2}')):
            assert await store.save_schedule_state(name, text, token) is True

        # When they are read back, all or some
        everything = await store.schedule_states()
        some = await store.schedule_states(["a", "missing"])

        # Then the newest text of each is there, and unknown names are left out
        assert everything == {"a": '{"n": 2}', "b": "x"}
        assert some == {"a": '{"n": 2}'}
        assert await store.schedule_states([]) == {}
