"""Record checks: one live copy per id, dead letters, lookup, retention, inspection (``admin``) and the fast
lanes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from bananas.broker import (
    Broker,
    QueueDepth,
)
from bananas.testing.conformance._base import (
    ADM,
    BOTH,
    MakeBroker,
    _Base,
    _drain,
    _env,
    _ids,
)

__all__ = ["RecordChecks"]


class RecordChecks(_Base):
    """Dead letters, records, retention, inspection and the optional fast lanes."""

    # -- dead letters --------------------------------------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_dead_letter_stores_reason_and_body(self, broker_factory: MakeBroker) -> None:
        # Given a leased job
        broker, clock = await self._make(broker_factory, needs=ADM)
        await broker.enqueue([_env("a")])
        (d,) = await self._fetch(broker, ["q"], 1)

        # When the worker dead-letters it
        result = await broker.dead_letter(d, body=b"a-final", reason="boom")

        # Then it is dead with that reason and body, listed and counted, and never handed out
        assert result is True
        record = await self._lookup(broker, "a")
        assert record is not None and (record.state, record.reason, record.body) == ("dead", "boom", b"a-final")
        (letter,) = await self._dead_letters(broker, "q")
        assert (letter.id, letter.queue, letter.body, letter.reason, letter.dead_at) == (
            "a",
            "q",
            b"a-final",
            "boom",
            clock.now,
        )
        assert (await broker.depths(["q"]))["q"] == QueueDepth(dead=1)
        assert await self._fetch(broker, ["q"], 1, timeout=0.05) == []

    @pytest.mark.asyncio
    async def test_dead_letters_lists_newest_first_up_to_limit(self, broker_factory: MakeBroker) -> None:
        # Given three jobs dead-lettered one second apart, and one in another queue
        broker, clock = await self._make(broker_factory, needs=ADM)
        await broker.enqueue([_env("a"), _env("b"), _env("c"), _env("x", "other")])
        for d in await self._fetch(broker, ["q", "other"], 4):
            assert await broker.dead_letter(d, body=d.body, reason="boom")
            clock.advance(1)

        # When the letters of "q" are listed
        everything = await self._dead_letters(broker, "q")
        newest_two = await self._dead_letters(broker, "q", limit=2)

        # Then they are newest first, limited, and only from "q"
        assert _ids(everything) == ["c", "b", "a"]
        assert _ids(newest_two) == ["c", "b"]
        assert _ids(await self._dead_letters(broker, "other")) == ["x"]
        assert await self._dead_letters(broker, "empty") == []

    @pytest.mark.asyncio
    async def test_requeue_dead_puts_every_letter_back_with_fresh_counters(self, broker_factory: MakeBroker) -> None:
        # Given a crash-looped job and a dead-lettered one
        broker, clock = await self._make(broker_factory, needs=BOTH, lease=10.0, max_crash_deliveries=1)
        await broker.enqueue([_env("a"), _env("b")])
        a, b = await self._fetch(broker, ["q"], 2)
        assert await broker.dead_letter(b, body=b"b-final", reason="boom")
        await self._expire_leases(broker, clock)
        crashed = await self._lookup(broker, "a")
        assert crashed is not None and (crashed.state, crashed.reason) == ("dead", "crash_loop")

        # When all dead letters of the queue are requeued
        count = await broker.requeue_dead("q")

        # Then both are ready again with fresh counters and their last body, and no letter is left
        assert count == 2
        assert await self._dead_letters(broker, "q") == []
        assert (await broker.depths(["q"]))["q"] == QueueDepth(ready=2)
        got = await self._fetch(broker, ["q"], 2)
        assert sorted((d.id, d.body, d.deliveries, d.crashes) for d in got) == [
            ("a", b"a", 1, 0),
            ("b", b"b-final", 1, 0),
        ]

    @pytest.mark.asyncio
    async def test_requeue_dead_takes_only_the_given_ids(self, broker_factory: MakeBroker) -> None:
        # Given three dead letters
        broker, _ = await self._make(broker_factory, needs=ADM)
        await broker.enqueue([_env("a"), _env("b"), _env("c")])
        for d in await self._fetch(broker, ["q"], 3):
            await broker.dead_letter(d, body=d.body, reason="boom")

        # When one of them (named twice) and an unknown id are requeued
        count = await broker.requeue_dead("q", ["b", "unknown", "b"])

        # Then only that one is ready and the others stay dead
        assert count == 1
        assert sorted(_ids(await self._dead_letters(broker, "q"))) == ["a", "c"]
        assert _ids(await self._fetch(broker, ["q"], 5)) == ["b"]
        assert await broker.requeue_dead("other") == 0

    @pytest.mark.asyncio
    async def test_purge_dead_drops_the_letters_of_one_queue(self, broker_factory: MakeBroker) -> None:
        # Given two dead letters in "q" and one in "other"
        broker, _ = await self._make(broker_factory, needs=ADM)
        await broker.enqueue([_env("a"), _env("b"), _env("x", "other")])
        for d in await self._fetch(broker, ["q", "other"], 3):
            await broker.dead_letter(d, body=d.body, reason="boom")

        # When the letters of "q" are purged
        count = await broker.purge_dead("q")

        # Then they are gone, the other queue keeps its letter, and a second purge finds nothing
        assert count == 2
        assert await self._dead_letters(broker, "q") == []
        assert (await broker.depths(["q"]))["q"] == QueueDepth()
        assert _ids(await self._dead_letters(broker, "other")) == ["x"]
        assert await broker.purge_dead("q") == 0

    # -- lookup ------------------------------------------------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_lookup_follows_the_life_cycle(self, broker_factory: MakeBroker) -> None:
        # Given a delayed job
        broker, clock = await self._make(broker_factory, needs=BOTH)
        await broker.enqueue([_env("a", "jobs", eta=clock.now + 10)])
        states = []

        async def note() -> None:
            record = await self._lookup(broker, "a")
            assert record is not None and (record.id, record.queue) == ("a", "jobs")
            states.append((record.state, record.deliveries, record.body))

        # When it goes through its life: due, fetched, retried later, due, fetched, acknowledged
        await note()
        clock.advance(11)
        await broker.move_due()
        await note()
        (d,) = await self._fetch(broker, ["jobs"], 1)
        await note()
        await broker.retry(d, body=b"v2", at=clock.now + 10)
        await note()
        clock.advance(11)
        await broker.move_due()
        await note()
        (d,) = await self._fetch(broker, ["jobs"], 1)
        await note()
        await broker.ack([d])
        await note()

        # Then lookup reports each state
        assert states == [
            ("scheduled", 0, b"a"),
            ("ready", 0, b"a"),
            ("running", 1, b"a"),
            ("scheduled", 1, b"v2"),
            ("ready", 1, b"v2"),
            ("running", 2, b"v2"),
            ("completed", 2, b"v2"),
        ]

    @pytest.mark.asyncio
    async def test_lookup_of_an_unknown_id_is_none(self, broker_factory: MakeBroker) -> None:
        # Given a broker with one job
        broker, _ = await self._make(broker_factory, needs=ADM)
        await broker.enqueue([_env("a")])

        # When / Then an unknown id has no record
        assert await self._lookup(broker, "b") is None

    # -- retention ---------------------------------------------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_completed_record_expires_after_completed_ttl(self, broker_factory: MakeBroker) -> None:
        self._require("supports_clock_retention")
        # Given a job completed with completed_ttl=100
        broker, clock = await self._make(broker_factory, needs=BOTH, completed_ttl=100.0)
        await broker.enqueue([_env("a")])
        (d,) = await self._fetch(broker, ["q"], 1)
        await broker.ack([d])

        # When 99 s, then 102 s have passed (move_due sweeps expired records)
        clock.advance(99)
        await broker.move_due()
        kept = await self._lookup(broker, "a")
        clock.advance(3)
        await broker.move_due()
        gone = await self._lookup(broker, "a")

        # Then the record is kept, then gone
        assert kept is not None and kept.state == "completed"
        assert gone is None

    @pytest.mark.asyncio
    async def test_dead_record_expires_after_dead_ttl(self, broker_factory: MakeBroker) -> None:
        self._require("supports_clock_retention")
        # Given a dead job with dead_ttl=1000 and a shorter completed_ttl
        broker, clock = await self._make(broker_factory, needs=BOTH, completed_ttl=10.0, dead_ttl=1000.0)
        await broker.enqueue([_env("a")])
        (d,) = await self._fetch(broker, ["q"], 1)
        await broker.dead_letter(d, body=b"a", reason="boom")

        # When 500 s, then 1001 s have passed
        clock.advance(500)
        await broker.move_due()
        kept = await self._lookup(broker, "a")
        kept_letters = await self._dead_letters(broker, "q")
        clock.advance(501)
        await broker.move_due()
        gone = await self._lookup(broker, "a")

        # Then record and letter outlive completed_ttl, and both go after dead_ttl
        assert kept is not None and kept.state == "dead"
        assert _ids(kept_letters) == ["a"]
        assert gone is None
        assert await self._dead_letters(broker, "q") == []
        assert (await broker.depths(["q"]))["q"] == QueueDepth()

    @pytest.mark.asyncio
    async def test_live_jobs_never_expire(self, broker_factory: MakeBroker) -> None:
        self._require("supports_clock_retention")
        # Given a ready, a scheduled and a running job, with short retention
        broker, clock = await self._make(broker_factory, needs=BOTH, completed_ttl=1.0, dead_ttl=1.0, lease=1e9)
        await broker.enqueue([_env("run"), _env("ready"), _env("later", eta=clock.now + 1e6)])
        await self._fetch(broker, ["q"], 1)

        # When far more than the retention passes
        clock.advance(1000)
        await broker.move_due()

        # Then every live job is still known
        states = [await self._state(broker, x) for x in ("run", "ready", "later")]
        assert states == ["running", "ready", "scheduled"]

    # -- inspection --------------------------------------------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_depths_counts_each_state_per_queue(self, broker_factory: MakeBroker) -> None:
        # Given in "q": one running, one dead, one completed, two ready, one scheduled; in "other": one ready
        broker, clock = await self._make(broker_factory)
        await broker.enqueue([_env("run"), _env("dead"), _env("done")])
        run, dead, done = await self._fetch(broker, ["q"], 3)
        await broker.dead_letter(dead, body=b"dead", reason="boom")
        await broker.ack([done])
        await broker.enqueue([_env("r1"), _env("r2"), _env("s", eta=clock.now + 60), _env("o", "other")])

        # When depths are asked for named queues, one of them unknown, and for all
        named = await broker.depths(["q", "unknown"])
        every = await broker.depths()

        # Then each state is counted, completed jobs are not, and an unknown queue is all zeros
        assert named == {"q": QueueDepth(ready=2, scheduled=1, running=1, dead=1), "unknown": QueueDepth()}
        assert every == {"q": named["q"], "other": QueueDepth(ready=1)}
        assert sorted(every) == await self._known_queues(broker)

    @pytest.mark.asyncio
    async def test_known_queues_lists_every_queue_that_ever_got_a_job(self, broker_factory: MakeBroker) -> None:
        # Given jobs sent to three queues, one of them delayed, then everything drained
        broker, clock = await self._make(broker_factory, needs=ADM)
        await broker.enqueue([_env("b", "beta"), _env("a", "alpha"), _env("c", "gamma", eta=clock.now + 60)])
        await broker.ack(await self._fetch(broker, ["alpha", "beta"], 2))

        # When / Then every queue is listed, sorted, even when empty
        assert await self._known_queues(broker) == ["alpha", "beta", "gamma"]

    # -- optional capabilities (see bananas.broker): checked only on brokers that have them -------------------------
    def _capability(self, broker: Broker, name: str) -> Callable[..., Any]:
        self._gate(broker, (name,))
        method: Callable[..., Any] = getattr(self.caps, name)
        return method

    @pytest.mark.asyncio
    async def test_enqueue_sync_stores_like_enqueue(self, broker_factory: MakeBroker) -> None:
        # Given a broker with the optional blocking enqueue
        broker, clock = await self._make(broker_factory)
        enqueue_sync = self._capability(broker, "enqueue_sync")

        # When jobs go in from another thread: two ready, one delayed, and a second copy of a live id
        await asyncio.to_thread(
            enqueue_sync, [_env("a"), _env("b"), _env("later", eta=clock.now + 60), _env("a", body=b"again")]
        )

        # Then they are stored as enqueue stores them: in order, the delayed one scheduled, one copy per id
        got = await self._fetch(broker, ["q"], 10)
        assert _ids(got) == ["a", "b"]
        assert got[0].body == b"a"
        assert (await broker.depths(["q"]))["q"] == QueueDepth(scheduled=1, running=2)

    @pytest.mark.asyncio
    async def test_generated_ids_hint_keeps_one_live_copy_of_explicit_ids(self, broker_factory: MakeBroker) -> None:
        # Given a job whose id the kernel generated, enqueued with the hint, and still ready in "a"
        from bananas.job import new_job_id

        broker, _ = await self._make(broker_factory)
        job_id = new_job_id()
        hinted = self.caps.enqueue_with_hints
        if hinted is not None:
            await hinted([_env(job_id, "a")], generated_ids={job_id})
        else:
            sync = self._capability(broker, "enqueue_sync")
            await asyncio.to_thread(sync, [_env(job_id, "a")], generated_ids={job_id})

        # When a producer enqueues the same id explicitly (no hint) to another queue
        await broker.enqueue([_env(job_id, "b")])

        # Then only the first copy is live
        assert _ids(await _drain(broker, ["a", "b"])) == [job_id]
        record = await self._lookup(broker, job_id)
        assert record is not None and record.queue == "a"

    @pytest.mark.asyncio
    async def test_ack_and_fetch_acks_then_takes_without_blocking(self, broker_factory: MakeBroker) -> None:
        # Given two running jobs (one of them with a stale token) and jobs ready in a high and a low queue
        broker, _ = await self._make(broker_factory)
        ack_and_fetch = self._capability(broker, "ack_and_fetch")
        await broker.enqueue([_env("x", "hi"), _env("y", "hi")])
        x, y = await self._fetch(broker, ["hi"], 2)
        stale = attrs.evolve(y, token=y.token + 1_000_003)
        await broker.enqueue([_env("h1", "hi"), _env("l1", "lo"), _env("l2", "lo")])

        # When the finished ones are acked and up to two jobs are taken, highest priority first
        owned, got = await asyncio.wait_for(ack_and_fetch([x, stale], ["hi", "lo"], 2), self.block_timeout)

        # Then the live ack counts, the stale one does not, and the take drains "hi" before "lo"
        assert owned == [True, False]
        assert await self._state(broker, "x") == "completed"
        assert await self._state(broker, "y") == "running"
        assert _ids(got) == ["h1", "l1"]
        assert await broker.ack(got) == [True, True]

        # And with nothing ready it returns at once, acks done
        owned, got = await asyncio.wait_for(ack_and_fetch([y], ["hi"], 5), self.block_timeout)
        assert (owned, got) == ([True], [])
        assert await self._state(broker, "y") == "completed"

    # -- one live copy per id ----------------------------------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_duplicate_enqueue_of_a_ready_job_is_ignored(self, broker_factory: MakeBroker) -> None:
        # Given a ready job
        broker, _ = await self._make(broker_factory)
        await broker.enqueue([_env("a", body=b"first")])

        # When the same id is enqueued again, in another queue and within one batch
        await broker.enqueue([_env("a", "other", body=b"second")])
        await broker.enqueue([_env("b"), _env("b", body=b"again")])

        # Then each id has one copy, with its first body
        got = await self._fetch(broker, ["q", "other"], 10)
        assert [(d.id, d.queue, d.body) for d in got] == [("a", "q", b"first"), ("b", "q", b"b")]

    @pytest.mark.asyncio
    async def test_concurrent_enqueues_of_one_id_keep_one_copy(self, broker_factory: MakeBroker) -> None:
        # Given / When ten tasks enqueue the same id at once
        broker, _ = await self._make(broker_factory)
        await asyncio.gather(*(broker.enqueue([_env("a")]) for _ in range(10)))

        # Then there is one copy
        assert _ids(await self._fetch(broker, ["q"], 10)) == ["a"]

    @pytest.mark.asyncio
    async def test_duplicate_enqueue_of_a_scheduled_job_is_ignored(self, broker_factory: MakeBroker) -> None:
        # Given a scheduled job
        broker, clock = await self._make(broker_factory)
        await broker.enqueue([_env("a", eta=clock.now + 60)])

        # When the same id is enqueued to run now
        await broker.enqueue([_env("a", body=b"now")])

        # Then it stays scheduled with its first body
        record = await self._lookup(broker, "a")
        assert record is not None and (record.state, record.body) == ("scheduled", b"a")
        assert await self._fetch(broker, ["q"], 1, timeout=0.05) == []

    @pytest.mark.asyncio
    async def test_duplicate_enqueue_of_a_running_job_is_ignored(self, broker_factory: MakeBroker) -> None:
        # Given a leased job
        broker, _ = await self._make(broker_factory)
        await broker.enqueue([_env("a")])
        (d,) = await self._fetch(broker, ["q"], 1)

        # When the same id is enqueued again
        await broker.enqueue([_env("a", body=b"again")])

        # Then no second copy is handed out and the lease still settles the job
        assert await self._fetch(broker, ["q"], 1, timeout=0.05) == []
        assert await self._state(broker, "a") == "running"
        assert await broker.ack([d]) == [True]

    @pytest.mark.asyncio
    async def test_a_completed_id_is_enqueued_anew(self, broker_factory: MakeBroker) -> None:
        # Given a completed job
        broker, _ = await self._make(broker_factory)
        await broker.enqueue([_env("a")])
        (d,) = await self._fetch(broker, ["q"], 1)
        await broker.ack([d])

        # When the same id is enqueued again
        await broker.enqueue([_env("a", body=b"second run")])

        # Then it runs again as a new job
        (again,) = await self._fetch(broker, ["q"], 1)
        assert (again.body, again.deliveries, again.crashes) == (b"second run", 1, 0)

    @pytest.mark.asyncio
    async def test_a_dead_id_is_enqueued_anew(self, broker_factory: MakeBroker) -> None:
        # Given a dead job
        broker, _ = await self._make(broker_factory, needs=ADM)
        await broker.enqueue([_env("a")])
        (d,) = await self._fetch(broker, ["q"], 1)
        await broker.dead_letter(d, body=b"a", reason="boom")

        # When the same id is enqueued again (and someone requeues the dead letters)
        await broker.enqueue([_env("a", body=b"second run")])
        await broker.requeue_dead("q")

        # Then it is one ready job, no longer a dead letter
        record = await self._lookup(broker, "a")
        assert record is not None and (record.state, record.body) == ("ready", b"second run")
        assert await self._dead_letters(broker, "q") == []
        got = await self._fetch(broker, ["q"], 10)
        assert [(x.id, x.deliveries) for x in got] == [("a", 1)]
