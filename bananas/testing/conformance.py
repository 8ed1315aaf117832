"""The broker conformance suite: one test per semantic of :mod:`bananas.broker`.

Subclass :class:`BrokerConformance` in a test module and provide one async fixture, ``broker_factory``, that yields
an async callable ``make(**overrides) -> Broker``. Each call builds a new *connected, empty* broker whose
:class:`~bananas.broker.BrokerOptions` take ``overrides`` (``lease=``, ``max_crash_deliveries=``, ``clock=``,
``completed_ttl=``, ``dead_ttl=`` …); the fixture closes and cleans up everything it made when the test ends::

    import pytest_asyncio
    from bananas.broker import BrokerOptions
    from bananas.testing import BrokerConformance

    class TestSqliteBroker(BrokerConformance):
        @pytest_asyncio.fixture
        async def broker_factory(self, tmp_path):
            made = []

            async def make(**overrides):
                broker = SqliteBroker(f"sqlite://{tmp_path}/{len(made)}.db", BrokerOptions(**overrides))
                await broker.connect()
                made.append(broker)
                return broker

            yield make
            for broker in made:
                await broker.close()

Every time comparison goes through the ``clock=`` override (a :class:`FakeClock`), so no test depends on how fast
the machine is; only the blocking-fetch tests use real time, with generous margins. A broker that cannot offer a
feature says so with a capability flag (``supports_blocking_fetch = False``); the tests it covers then skip with
that reason instead of failing.

Optional broker capabilities (protocol 0.2, :mod:`bananas.broker`) work the same way but need no flag: the core tests
run on every broker, a test of ``maintenance``, ``admin`` or a fast lane runs only on a broker that implements it.
Core tests read records through ``admin`` where the broker has it and skip just those reads where it does not. Set
``claims = ALL_CAPABILITIES`` (or a subset) so that a capability lost by accident fails instead of skipping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar

import attrs
import pytest

from bananas.broker import (
    ADMIN,
    CAPABILITIES,
    MAINTENANCE,
    Broker,
    BrokerCapabilities,
    DeadLetter,
    Delivery,
    Envelope,
    JobRecord,
    QueueDepth,
    RecordState,
    capabilities,
)

__all__ = ["ALL_CAPABILITIES", "BrokerConformance", "FakeClock", "MakeBroker"]

ALL_CAPABILITIES: frozenset[str] = frozenset(CAPABILITIES)
"""Every optional capability name; ``claims = ALL_CAPABILITIES`` for a broker that implements the whole protocol."""

MakeBroker = Callable[..., Awaitable[Broker]]
"""``await make(**overrides)`` returns a connected, empty broker built with those ``BrokerOptions`` overrides."""

START = 1_700_000_000.0

MAINT = (MAINTENANCE,)
ADM = (ADMIN,)
BOTH = (MAINTENANCE, ADMIN)


@attrs.define
class FakeClock:
    """A clock for ``BrokerOptions(clock=...)`` that moves only when told to."""

    now: float = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def _env(job_id: str, queue: str = "q", body: bytes | None = None, eta: float | None = None) -> Envelope:
    return Envelope(job_id, queue, job_id.encode() if body is None else body, eta)


def _ids(items: Iterable[Delivery | DeadLetter]) -> list[str]:
    if isinstance(items, _Unchecked):
        return UNCHECKED  # type: ignore[no-any-return]
    return [item.id for item in items]


class _Unchecked:
    """Stands in for what an ``admin`` method would return when the broker has no ``admin`` capability: it equals
    anything, so a core test still runs every core check and only the record/dead-letter checks drop out. Brokers
    with ``admin`` always get the real answer."""

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = None  # type: ignore[assignment]

    def __getattr__(self, name: str) -> _Unchecked:
        return self

    def __iter__(self) -> Iterator[_Unchecked]:
        return iter(())

    def __repr__(self) -> str:
        return "<unchecked: broker has no admin capability>"


UNCHECKED: Any = _Unchecked()


async def _drain(broker: Broker, queues: Sequence[str], limit: int = 100) -> list[Delivery]:
    """Fetch until nothing is ready, without waiting."""
    out: list[Delivery] = []
    while got := await broker.fetch(queues, limit, 0.0):
        out.extend(got)
    return out


class BrokerConformance:
    """Checks that a broker keeps every semantic of :mod:`bananas.broker`. Subclass it; see the module docstring.

    Capability flags (class attributes) let a broker opt out explicitly; each skipped test names the flag.

    The suite is split like the protocol (0.2): the **core** tests run on every broker; the tests of an optional
    capability (``maintenance``, ``admin``, ``enqueue_sync``, ``enqueue_with_hints``, ``ack_and_fetch``) run only
    when the broker has it (:func:`bananas.broker.capabilities`) and skip naming it otherwise. Set :attr:`claims`
    to the capabilities the broker is meant to have: then a missing one fails instead of skipping.
    """

    #: Capabilities the broker must have (``None``: whatever it implements). A claimed one it lacks fails the suite.
    claims: ClassVar[frozenset[str] | None] = None

    #: ``fetch`` blocks until a job arrives or ``timeout`` passes (rather than returning ``[]`` at once).
    supports_blocking_fetch: ClassVar[bool] = True
    #: ``completed_ttl`` and ``dead_ttl`` are measured with ``options.clock`` (not the server's own clock).
    supports_clock_retention: ClassVar[bool] = True
    #: Seconds a blocking fetch may wait in the blocking tests; only a broker that never wakes uses it up.
    block_timeout: ClassVar[float] = 10.0
    #: Envelopes in the batch test (one ``enqueue`` call).
    batch_size: ClassVar[int] = 1000

    @pytest.fixture
    def broker_factory(self) -> MakeBroker:
        pytest.fail(
            f"{type(self).__name__} must define an async fixture 'broker_factory' that yields "
            "make(**overrides) -> connected, empty Broker (see bananas.testing.conformance)"
        )

    def _require(self, flag: str) -> None:
        if not getattr(self, flag):
            pytest.skip(f"{type(self).__name__} opts out: {flag} = False")

    caps: BrokerCapabilities = BrokerCapabilities()
    """The capabilities of the last broker :meth:`_make` built."""

    def _gate(self, broker: Broker, needs: Sequence[str]) -> None:
        self.caps = capabilities(broker)
        for name in needs:
            if self.caps.has(name):
                continue
            methods = ", ".join(CAPABILITIES[name])
            if self.claims is not None and name in self.claims:
                pytest.fail(f"{type(broker).__name__} claims the {name!r} capability but lacks it ({methods})")
            pytest.skip(f"{type(broker).__name__} has no {name!r} capability ({methods})")

    async def _make(
        self, broker_factory: MakeBroker, *, needs: Sequence[str] = (), **overrides: object
    ) -> tuple[Broker, FakeClock]:
        """A new broker on a :class:`FakeClock`; skips the test unless it has every capability in ``needs``."""
        clock = FakeClock()
        broker = await broker_factory(clock=clock, **overrides)
        self._gate(broker, needs)
        return broker, clock

    # Admin reads that core tests use as extra checks: real answers with ``admin``, :data:`UNCHECKED` without.
    async def _lookup(self, broker: Broker, job_id: str) -> JobRecord | None:
        if self.caps.admin is None:
            return UNCHECKED  # type: ignore[no-any-return]
        record = await self.caps.admin.lookup(job_id)
        if record is not None:
            assert isinstance(record.state, RecordState), f"JobRecord.state {record.state!r} is not a RecordState"
        return record

    async def _state(self, broker: Broker, job_id: str) -> str | None:
        record = await self._lookup(broker, job_id)
        return None if record is None else record.state

    async def _dead_letters(self, broker: Broker, queue: str, limit: int = 100) -> list[DeadLetter]:
        if self.caps.admin is None:
            return UNCHECKED  # type: ignore[no-any-return]
        return await self.caps.admin.dead_letters(queue, limit)

    async def _known_queues(self, broker: Broker) -> list[str]:
        if self.caps.admin is None:
            return UNCHECKED  # type: ignore[no-any-return]
        return await self.caps.admin.known_queues()

    async def _fetch(self, broker: Broker, queues: Sequence[str], limit: int, timeout: float = 0.0) -> list[Delivery]:
        """``fetch`` with a guard, so a broker that ignores ``timeout`` fails the test instead of hanging it."""
        return await asyncio.wait_for(broker.fetch(queues, limit, timeout), timeout + self.block_timeout)

    async def _expire_leases(self, broker: Broker, clock: FakeClock) -> int:
        clock.advance(broker.options.lease + 1)
        assert self.caps.maintenance is not None, "a test that expires leases must declare needs=MAINT"
        return await self.caps.maintenance.reap()

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
        assert await self._known_queues(broker) == []
        assert await broker.depths() == {}
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
        record = await self._lookup(broker, "a")
        assert record is not None and (record.state, record.body) == ("completed", b"a")
        assert await self._dead_letters(broker, "q") == []

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
        record = await self._lookup(broker, "a")
        assert record is not None and (record.body, record.crashes) == (b"attempt-2", 0)

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

    # -- delays ------------------------------------------------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_enqueue_with_future_eta_waits_for_move_due(self, broker_factory: MakeBroker) -> None:
        # Given a job due in 30 s
        broker, clock = await self._make(broker_factory, needs=MAINT)
        await broker.enqueue([_env("a", eta=clock.now + 30)])

        # When time passes in two steps, with move_due after each
        scheduled = await self._lookup(broker, "a")
        before = await self._fetch(broker, ["q"], 1, timeout=0.05)
        clock.advance(29)
        moved_early = await broker.move_due()
        clock.advance(2)
        moved_late = await broker.move_due()

        # Then it is scheduled until its time has come, then ready
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
        assert await self._state(broker, "later") == "scheduled"
        assert await broker.move_due() == 0

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
