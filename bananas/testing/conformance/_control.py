"""Job-control checks (capability ``cancellation``, :class:`bananas.broker.SupportsCancellation`): a ready or
scheduled job that is cancelled is never handed out; a running one gets a cancel request its worker sees and ends
``cancelled`` or ``expired`` with a fenced ``finish``; finished jobs are left alone; cancelled and expired records are
terminal (kept ``completed_ttl``, replaced by a new enqueue). Also the optional stored flags ``enqueue`` may return
(``False`` for an id that was live already)."""

from __future__ import annotations

import pytest

from bananas.testing.conformance._base import MakeBroker, _Base, _env

__all__ = ["ControlChecks"]

CONTROL = ("cancellation", "admin")
CONTROL_MAINT = ("cancellation", "admin", "maintenance")


class ControlChecks(_Base):
    """``cancel`` / ``cancel_requested`` / ``finish`` (optional capability ``cancellation``)."""

    @pytest.mark.asyncio
    async def test_a_cancelled_ready_job_is_never_handed_out(self, broker_factory: MakeBroker) -> None:
        # Given two ready jobs
        broker, _ = await self._make(broker_factory, needs=CONTROL)
        control = self.caps.cancellation
        assert control is not None
        await broker.enqueue([_env("a"), _env("b")])

        # When the first is cancelled
        assert await control.cancel("a") == "ready"

        # Then it is cancelled, not counted as ready from that moment, never fetched; a second cancel reports it
        # finished
        assert await self._state(broker, "a") == "cancelled"
        assert (await broker.depths(["q"]))["q"].ready == 1
        assert [d.id for d in await self._fetch(broker, ["q"], 10)] == ["b"]
        assert (await broker.depths(["q"]))["q"].ready == 0
        assert await control.cancel("a") == "cancelled"
        assert await self._state(broker, "a") == "cancelled"

    @pytest.mark.asyncio
    async def test_a_cancelled_scheduled_job_never_becomes_due(self, broker_factory: MakeBroker) -> None:
        # Given a delayed job
        broker, clock = await self._make(broker_factory, needs=CONTROL_MAINT)
        control, maintenance = self.caps.cancellation, self.caps.maintenance
        assert control is not None and maintenance is not None
        await broker.enqueue([_env("later", eta=clock.now + 10)])

        # When it is cancelled and its time comes
        assert await control.cancel("later") == "scheduled"
        clock.advance(11)
        await maintenance.move_due()

        # Then it never becomes ready
        assert await self._fetch(broker, ["q"], 10) == []
        assert await self._state(broker, "later") == "cancelled"
        assert (await broker.depths(["q"]))["q"].scheduled == 0

    @pytest.mark.asyncio
    async def test_a_running_job_gets_a_request_and_finishes_cancelled(self, broker_factory: MakeBroker) -> None:
        # Given two running jobs
        broker, _ = await self._make(broker_factory, needs=CONTROL)
        control = self.caps.cancellation
        assert control is not None
        await broker.enqueue([_env("a"), _env("b")])
        da, db = await self._fetch(broker, ["q"], 2)
        assert await control.cancel_requested([da, db]) == [False, False]

        # When one is cancelled
        assert await control.cancel(da.id) == "running"

        # Then it keeps running with a request its holder sees, until the holder finishes it (fenced)
        assert await self._state(broker, da.id) == "running"
        assert await control.cancel_requested([da, db]) == [True, False]
        assert await control.finish(da, body=b"a-as-ended", state="cancelled") is True
        record = await self._lookup(broker, da.id)
        assert record is not None and (record.state, record.body) == ("cancelled", b"a-as-ended")
        assert await control.finish(da, body=b"again", state="cancelled") is False
        assert await broker.ack([da]) == [False]
        assert await control.cancel_requested([da]) == [False]  # its lease is gone
        assert await broker.ack([db]) == [True]

    @pytest.mark.asyncio
    async def test_finish_expired_and_stale_tokens(self, broker_factory: MakeBroker) -> None:
        # Given a job handed out, reaped (its lease expired) and handed out again
        broker, clock = await self._make(broker_factory, needs=CONTROL_MAINT)
        control = self.caps.cancellation
        assert control is not None
        await broker.enqueue([_env("x")])
        (old,) = await self._fetch(broker, ["q"], 1)
        await self._expire_leases(broker, clock)
        (new,) = await self._fetch(broker, ["q"], 1)

        # When the old holder tries to finish it, then the new one ends it expired
        assert await control.finish(old, body=b"stale", state="expired") is False
        assert await control.finish(new, body=b"x-expired", state="expired") is True

        # Then it is expired with the new holder's body
        record = await self._lookup(broker, "x")
        assert record is not None and (record.state, record.body) == ("expired", b"x-expired")

    @pytest.mark.asyncio
    async def test_a_request_outlives_a_lost_lease(self, broker_factory: MakeBroker) -> None:
        # Given a running job with a cancel request whose lease expires
        broker, clock = await self._make(broker_factory, needs=CONTROL_MAINT)
        control = self.caps.cancellation
        assert control is not None
        await broker.enqueue([_env("r")])
        await self._fetch(broker, ["q"], 1)
        assert await control.cancel("r") == "running"
        await self._expire_leases(broker, clock)

        # When it is handed out again, the new holder sees the request at once
        (again,) = await self._fetch(broker, ["q"], 1)
        assert await control.cancel_requested([again]) == [True]

    @pytest.mark.asyncio
    async def test_finished_and_unknown_jobs_are_left_alone(self, broker_factory: MakeBroker) -> None:
        # Given a completed job and a dead one
        broker, _ = await self._make(broker_factory, needs=CONTROL)
        control = self.caps.cancellation
        assert control is not None
        await broker.enqueue([_env("done"), _env("dead")])
        d_done, d_dead = await self._fetch(broker, ["q"], 2)
        assert await broker.ack([d_done]) == [True]
        assert await broker.dead_letter(d_dead, body=b"dead", reason="boom") is True

        # Then cancelling reports their state and changes nothing; an unknown id is None
        assert await control.cancel("done") == "completed"
        assert await control.cancel("dead") == "dead"
        assert await self._state(broker, "done") == "completed"
        assert [d.id for d in await self._dead_letters(broker, "q")] == ["dead"]
        assert await control.cancel("never") is None

    @pytest.mark.asyncio
    async def test_cancelled_records_are_terminal(self, broker_factory: MakeBroker) -> None:
        # Given a cancelled job
        broker, clock = await self._make(broker_factory, needs=CONTROL_MAINT, completed_ttl=100)
        control = self.caps.cancellation
        assert control is not None
        await broker.enqueue([_env("c"), _env("gone")])
        assert await control.cancel("c") == "ready"
        assert await control.cancel("gone") == "ready"

        # When its id is enqueued again, a new job is stored and runs
        stored = await broker.enqueue([_env("c", body=b"c-new")])
        assert stored is None or list(stored) == [True]
        (d,) = await self._fetch(broker, ["q"], 10)
        assert (d.id, d.body) == ("c", b"c-new")

        # And a cancelled record left alone is gone after completed_ttl
        clock.advance(101)
        await self.caps.maintenance.move_due()  # type: ignore[union-attr]
        assert await self._lookup(broker, "gone") is None

    @pytest.mark.asyncio
    async def test_enqueue_flags_say_which_ids_were_live_already(self, broker_factory: MakeBroker) -> None:
        # Given a ready job (optional: a broker whose enqueue returns None does not say)
        broker, _ = await self._make(broker_factory)
        first = await broker.enqueue([_env("dup", body=b"first")])
        if first is None:
            pytest.skip("enqueue returns no stored flags (allowed: the kernel then compares bodies)")

        # When the same id is enqueued again beside a new one (and twice in one batch)
        flags = await broker.enqueue([_env("dup", body=b"second"), _env("new"), _env("new", body=b"again")])

        # Then the live id is reported as not stored, and the first body is the one that runs
        assert list(first) == [True] and list(flags) == [False, True, False]
        got = {d.id: d.body for d in await self._fetch(broker, ["q"], 10)}
        assert got == {"dup": b"first", "new": b"new"}
