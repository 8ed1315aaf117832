"""A hypothesis state machine that runs random broker traffic against a model and a real broker side by side.

``make_broker_machine(factory)`` returns a :class:`~hypothesis.stateful.RuleBasedStateMachine` subclass; expose its
``TestCase`` in a test module::

    TestSqliteMachine = make_broker_machine(factory).TestCase
    TestSqliteMachine.settings = settings(deadline=None, max_examples=30, stateful_step_count=30)

``factory(**overrides)`` is an async callable that returns a connected, empty broker built with those
:class:`~bananas.broker.BrokerOptions` overrides, as for :class:`~bananas.testing.BrokerConformance`. It is a plain
function and not a fixture because hypothesis does not reset function-scoped fixtures between examples. Each
example builds its own broker and event loop (rules are synchronous) and closes both in ``teardown``.

The machine moves a :class:`~bananas.testing.conformance.FakeClock`. Leases, delays and retention are on a
half-second grid while the clock moves in whole seconds, so no deadline ever equals ``now`` and the model never has
to guess how a broker treats a tie. Where the protocol leaves an order open (several jobs released, reaped, moved
or requeued in one call), the model accepts any order within that group.

Invariants checked after every step:

* **nothing lost**: every id the model knows is ready, scheduled, running, completed or dead, and ``lookup`` agrees
  on its state, queue, body and counters; ``depths``, ``dead_letters`` and ``known_queues`` agree too;
* **no duplicate without a redelivery**: ``fetch`` (the only way to lease) hands out only jobs the model has ready,
  never one still leased to a live delivery, and every hand-out has a new token, so a job is never held by two
  live deliveries at once;
* **strict priority**: a fetch takes from a queue only after every queue listed before it has no ready job left,
  and it takes at most ``limit``;
* **fencing**: every settle with a stale token returns ``False`` and changes nothing;
* **typed fetches** (a broker whose ``fetch`` takes ``job_types``, :mod:`bananas.broker_types`): jobs carry one of
  the types ``a``, ``b`` or ``""``; a typed fetch hands out only jobs of its types, with the strict priority and FIFO
  above restricted to them, and leaves every other job where it was.

Protocol 0.2: the rules and invariants of an optional capability run only when the broker has it (moving the clock
needs ``maintenance``: ``move_due`` and ``reap``; crashing a worker needs ``reap`` to recover; ``requeue_dead`` and
the ``lookup`` / ``dead_letters`` / ``known_queues`` invariants need ``admin``). A core-only broker is still checked
for fencing, priority order, one live copy per id and ``depths``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Awaitable, Sequence
from typing import TypeVar

import attrs
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bananas.broker import Broker, Delivery, Envelope, QueueDepth, capabilities
from bananas.testing.conformance import FakeClock, MakeBroker

__all__ = ["make_broker_machine"]

T = TypeVar("T")

QUEUES = ("high", "normal", "low")
IDS = tuple(f"j{i}" for i in range(6))
TYPES = ("a", "b", "")
LEASE = 10.5
MAX_CRASHES = 2
COMPLETED_TTL = 12.5
DEAD_TTL = 24.5
NEVER = 1e9
ENQUEUE_DELAYS = (None, -3.0, 5.5, 20.5)  # None: no eta; negative: an eta in the past
RETRY_DELAYS = (0.0, -1.0, 5.5, 20.5)
CLOCK_STEPS = (1.0, 4.0, 7.0, 11.0, 31.0)
LIVE = ("ready", "scheduled", "running")

Rank = tuple[int, int]
"""Order of a ready job in its queue: ``(0, -n)`` for the n-th push to the head, ``(1, n)`` for the tail. Jobs
pushed by one call share a rank, because the protocol does not order them among themselves."""


@attrs.define
class _Job:
    queue: str
    body: bytes
    state: str
    rank: Rank = (1, 0)
    deliveries: int = 0
    crashes: int = 0
    token: int | None = None
    lease_until: float = 0.0
    eta: float = 0.0
    reason: str | None = None
    expires_at: float | None = None
    job_type: str = ""


_ENVELOPES = st.tuples(
    st.sampled_from(IDS), st.sampled_from(QUEUES), st.sampled_from(ENQUEUE_DELAYS), st.sampled_from(TYPES)
)
# A fetch of every type (None), or of some types (a typed fetch, on a broker that has them).
_FETCH_TYPES = st.none() | st.frozensets(st.sampled_from(TYPES), max_size=3)
# A settle picks each delivery by an index: from the deliveries a worker holds, or, for a quarter of the indices
# (and whenever nothing is held), from the stale ones, which must be refused.
_PICK = st.tuples(st.booleans() | st.just(False), st.integers(0, 1000))
_PICKS = st.lists(_PICK, min_size=1, max_size=3)
# Mostly every queue in some priority order, sometimes only a few of them.
_QUEUE_LISTS = st.permutations(QUEUES) | st.lists(st.sampled_from(QUEUES), min_size=1, max_size=2, unique=True)


def _note_refusals(op: str, results: Sequence[bool]) -> None:
    if not all(results):
        event(f"{op}: stale token refused")


def make_broker_machine(factory: MakeBroker, *, retention: bool = True) -> type[RuleBasedStateMachine]:
    """Build the state machine for brokers made by ``factory`` (see the module docstring).

    :param factory: ``await factory(**overrides)`` returns a connected, empty broker with those option overrides.
    :param retention: Whether the broker measures ``completed_ttl``/``dead_ttl`` with ``options.clock``; when
        ``False`` records are kept for the whole run instead.
    """
    completed_ttl = COMPLETED_TTL if retention else NEVER
    dead_ttl = DEAD_TTL if retention else NEVER

    class BrokerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.clock = FakeClock()
            self.broker: Broker | None = None
            self.broker = self._run(
                factory(
                    clock=self.clock,
                    lease=LEASE,
                    max_crash_deliveries=MAX_CRASHES,
                    completed_ttl=completed_ttl,
                    dead_ttl=dead_ttl,
                )
            )
            self.caps = capabilities(self.broker)  # rules and invariants of a capability need it (protocol 0.2)
            self.jobs: dict[str, _Job] = {}
            self.queues_seen: set[str] = set()
            self.held: list[Delivery] = []  # live deliveries a worker holds
            self.lost: list[Delivery] = []  # live deliveries whose worker crashed: only reap may recover them
            # Deliveries whose token is no longer live; it starts with a forged one that was never handed out.
            self.stale: list[Delivery] = [Delivery(IDS[0], QUEUES[0], b"forged", token=-1)]
            self.tokens: set[int] = set()
            self.counter = itertools.count(1)

        # -- plumbing -----------------------------------------------------------------------------------------
        def _run(self, awaitable: Awaitable[T]) -> T:
            return self.loop.run_until_complete(awaitable)

        @property
        def b(self) -> Broker:
            assert self.broker is not None
            return self.broker

        def teardown(self) -> None:
            try:
                if self.broker is not None:
                    self._run(self.broker.close())
            finally:
                self.loop.close()

        def _body(self, job_id: str) -> bytes:
            return f"{job_id}#{next(self.counter)}".encode()

        def _live(self, d: Delivery) -> _Job | None:
            job = self.jobs.get(d.id)
            if job is None or job.state != "running" or job.token != d.token:
                return None
            return job

        def _sort_deliveries(self) -> None:
            """Move deliveries whose token the model no longer considers live to ``stale``."""
            for pool in (self.held, self.lost):
                dead = [d for d in pool if self._live(d) is None]
                pool[:] = [d for d in pool if self._live(d) is not None]
                self.stale.extend(dead)

        def _tail(self, jobs: Sequence[_Job]) -> None:
            rank = (1, next(self.counter))
            for job in jobs:
                job.state, job.rank, job.token = "ready", rank, None

        def _head(self, jobs: Sequence[_Job]) -> None:
            rank = (0, -next(self.counter))
            for job in jobs:
                job.state, job.rank, job.token = "ready", rank, None

        def _ready(self, queue: str, types: frozenset[str] | None = None) -> dict[str, _Job]:
            return {
                i: j
                for i, j in self.jobs.items()
                if j.queue == queue and j.state == "ready" and (types is None or j.job_type in types)
            }

        # -- producer -----------------------------------------------------------------------------------------
        @initialize(
            batch=st.lists(st.tuples(st.sampled_from(IDS), st.sampled_from(QUEUES), st.sampled_from(TYPES)),
                           min_size=2, max_size=6),
            queues=st.permutations(QUEUES),
            limit=st.integers(1, 4),
        )
        def backlog(self, batch: list[tuple[str, str, str]], queues: list[str], limit: int) -> None:
            # Start with ready work and a first lease. Hypothesis switches rules off at random per example (swarm
            # testing), so without this many short examples would never hold a job.
            self.enqueue([(job_id, queue, None, job_type) for job_id, queue, job_type in batch])
            self.fetch(queues, limit)

        @rule(batch=st.lists(_ENVELOPES, min_size=1, max_size=3))
        def enqueue(self, batch: list[tuple[str, str, float | None, str]]) -> None:
            now = self.clock.now
            envelopes = [
                Envelope(job_id, queue, self._body(job_id), None if delay is None else now + delay, job_type)
                for job_id, queue, delay, job_type in batch
            ]
            self._run(self.b.enqueue(envelopes))
            for env in envelopes:
                old = self.jobs.get(env.id)
                if old is not None and old.state in LIVE:
                    event("enqueue: duplicate of a live id ignored")
                    continue  # one live copy per id: the duplicate is dropped, its queue receives nothing
                self.queues_seen.add(env.queue)
                job = _Job(env.queue, env.body, "scheduled", job_type=env.job_type)
                self.jobs[env.id] = job
                if env.eta is not None and env.eta > now:
                    job.eta = env.eta
                else:
                    self._tail([job])

        # -- worker -------------------------------------------------------------------------------------------
        @rule(queues=_QUEUE_LISTS, limit=st.integers(0, 4), types=_FETCH_TYPES)
        def fetch(self, queues: list[str], limit: int, types: frozenset[str] | None = None) -> None:
            if types is not None and not self.caps.typed_fetch:
                types = None
            if types is None:
                got = self._run(self.b.fetch(queues, limit, 0.0))
            else:
                event("fetch: typed")
                got = self._run(self.b.fetch(queues, limit, 0.0, job_types=types))  # type: ignore[call-arg]
            assert len(got) <= limit, f"fetch(limit={limit}) handed out {len(got)}"
            assert len({d.id for d in got}) == len(got), f"one fetch handed out a job twice: {[d.id for d in got]}"

            # Strict priority: what each queue should give, draining them in the caller's order.
            expected: dict[str, int] = {}
            room = limit
            for queue in queues:
                expected[queue] = min(room, len(self._ready(queue, types)))
                room -= expected[queue]
            taken = Counter(d.queue for d in got)
            assert taken == +Counter(expected), (
                f"fetch({queues}, limit={limit}) took {dict(taken)} but the ready jobs call for {expected}"
            )

            now = self.clock.now
            for d in got:
                job = self.jobs.get(d.id)
                assert job is not None, f"fetch handed out unknown job {d.id}"
                assert job.state == "ready", f"{d.id} handed out while {job.state} (token {job.token})"
                assert types is None or job.job_type in types, f"{d.id} of type {job.job_type!r} fetched for {types}"
                assert (d.queue, d.body) == (job.queue, job.body), f"{d.id}: wrong queue or body"
                assert (d.deliveries, d.crashes) == (job.deliveries + 1, job.crashes), f"{d.id}: wrong counters"
                assert d.token not in self.tokens, f"{d.id}: token {d.token} was handed out before"
            for queue in queues:  # FIFO: within a queue, take the jobs at the head (of the types asked for)
                ready = self._ready(queue, types)
                mine = [ready[d.id].rank for d in got if d.queue == queue]
                rest = [j.rank for i, j in ready.items() if i not in {d.id for d in got}]
                if mine and rest:
                    assert max(mine) <= min(rest), f"fetch from {queue!r} skipped a job closer to the head"
            for d in got:
                job = self.jobs[d.id]
                job.state, job.token = "running", d.token
                job.deliveries += 1
                job.lease_until = now + LEASE
                self.tokens.add(d.token)
            self.held.extend(got)
            if any(d.deliveries > 1 for d in got):
                event("fetch: redelivery")

        def _pick(self, picks: Sequence[tuple[bool, int]]) -> list[Delivery]:
            """Distinct deliveries chosen by ``(stale, index)`` pairs; see ``_PICK``."""
            chosen: dict[int, Delivery] = {}
            for stale, index in picks:
                pool = self.stale if stale or not self.held else self.held
                d = pool[index % len(pool)]
                chosen[id(d)] = d
            return list(chosen.values())

        @rule(picks=_PICKS)
        def ack(self, picks: list[tuple[bool, int]]) -> None:
            chosen = self._pick(picks)
            result = self._run(self.b.ack(chosen))
            expected = []
            for d in chosen:
                job = self._live(d)
                expected.append(job is not None)
                if job is not None:
                    job.state, job.token = "completed", None
                    job.expires_at = self.clock.now + completed_ttl
            assert result == expected, f"ack: broker said {result}, model {expected}"
            _note_refusals("ack", expected)
            self._sort_deliveries()

        @rule(pick=_PICK, delay=st.sampled_from(RETRY_DELAYS))
        def retry(self, pick: tuple[bool, int], delay: float) -> None:
            (d,) = self._pick([pick])
            body = self._body(d.id)
            at = self.clock.now + delay
            result = self._run(self.b.retry(d, body=body, at=at))
            job = self._live(d)
            assert result == (job is not None), f"retry of {d.id} (token {d.token}): broker said {result}"
            _note_refusals("retry", [result])
            if job is not None:
                job.body = body
                if at > self.clock.now:
                    job.state, job.token, job.eta = "scheduled", None, at
                else:
                    self._tail([job])
            self._sort_deliveries()

        @rule(pick=_PICK, reason=st.sampled_from(["failed", "decode"]))
        def dead_letter(self, pick: tuple[bool, int], reason: str) -> None:
            (d,) = self._pick([pick])
            body = self._body(d.id)
            result = self._run(self.b.dead_letter(d, body=body, reason=reason))
            job = self._live(d)
            assert result == (job is not None), f"dead_letter of {d.id} (token {d.token}): broker said {result}"
            _note_refusals("dead_letter", [result])
            if job is not None:
                self._bury(job, reason, body)
            self._sort_deliveries()

        def _bury(self, job: _Job, reason: str, body: bytes) -> None:
            job.state, job.token, job.reason, job.body = "dead", None, reason, body
            job.expires_at = self.clock.now + dead_ttl

        @rule(picks=_PICKS)
        def release(self, picks: list[tuple[bool, int]]) -> None:
            chosen = self._pick(picks)
            result = self._run(self.b.release(chosen))
            expected, released = [], []
            for d in chosen:
                job = self._live(d)
                expected.append(job is not None and all(job is not r for r in released))
                if expected[-1]:
                    released.append(job)
            self._head(released)
            assert result == expected, f"release: broker said {result}, model {expected}"
            _note_refusals("release", expected)
            self._sort_deliveries()

        @rule(picks=_PICKS)
        def renew(self, picks: list[tuple[bool, int]]) -> None:
            chosen = self._pick(picks)
            result = self._run(self.b.renew(chosen))
            expected = []
            for d in chosen:
                job = self._live(d)
                expected.append(job is not None)
                if job is not None:
                    job.lease_until = self.clock.now + LEASE
            assert result == expected, f"renew: broker said {result}, model {expected}"
            _note_refusals("renew", expected)

        @precondition(lambda self: bool(self.held) and self.caps.maintenance is not None)
        @rule()
        def crash_worker(self) -> None:
            # The worker dies: it settles nothing and renews nothing; only reap can bring its jobs back.
            self.lost.extend(self.held)
            self.held.clear()

        # -- maintenance --------------------------------------------------------------------------------------
        @precondition(lambda self: self.caps.maintenance is not None)
        @rule(seconds=st.sampled_from(CLOCK_STEPS))
        def advance_clock(self, seconds: float) -> None:
            now = self.clock.advance(seconds)

            maintenance = self.caps.maintenance
            assert maintenance is not None
            moved = self._run(maintenance.move_due())
            due = [j for j in self.jobs.values() if j.state == "scheduled" and j.eta <= now]
            assert moved == len(due), f"move_due moved {moved}, model has {len(due)} due"
            for queue in QUEUES:
                self._tail([j for j in due if j.queue == queue])
            for job_id, job in list(self.jobs.items()):
                if job.expires_at is not None and job.expires_at <= now:
                    event(f"retention: {job.state} record expired")
                    del self.jobs[job_id]

            reaped = self._run(maintenance.reap())
            expired = [j for j in self.jobs.values() if j.state == "running" and j.lease_until <= now]
            assert reaped == len(expired), f"reap recovered {reaped}, model has {len(expired)} expired leases"
            back = []
            for job in expired:
                job.crashes += 1
                if job.crashes >= MAX_CRASHES:
                    event("reap: crash_loop dead letter")
                    self._bury(job, "crash_loop", job.body)
                else:
                    event("reap: lease expired, job back at the head")
                    back.append(job)
            for queue in QUEUES:
                self._head([j for j in back if j.queue == queue])
            self._sort_deliveries()

        @precondition(lambda self: self.caps.admin is not None and any(j.state == "dead" for j in self.jobs.values()))
        @rule(queue=st.sampled_from(QUEUES))
        def requeue_dead(self, queue: str) -> None:
            assert self.caps.admin is not None
            count = self._run(self.caps.admin.requeue_dead(queue))
            dead = [(i, j) for i, j in self.jobs.items() if j.queue == queue and j.state == "dead"]
            assert count == len(dead), f"requeue_dead({queue!r}) moved {count}, model has {len(dead)} dead"
            fresh = []
            for job_id, job in dead:
                self.jobs[job_id] = _Job(queue, job.body, "ready", job_type=job.job_type)
                fresh.append(self.jobs[job_id])
            self._tail(fresh)

        # -- invariants ---------------------------------------------------------------------------------------
        @precondition(lambda self: self.caps.admin is not None)
        @invariant()
        def nothing_is_lost(self) -> None:
            assert self.caps.admin is not None
            for job_id in IDS:
                record = self._run(self.caps.admin.lookup(job_id))
                job = self.jobs.get(job_id)
                if job is None:
                    assert record is None, f"{job_id}: broker knows {record}, model knows nothing"
                    continue
                assert record is not None, f"{job_id} lost: model has it {job.state} in {job.queue!r}"
                seen = (record.state, record.queue, record.body, record.deliveries, record.crashes)
                want = (job.state, job.queue, job.body, job.deliveries, job.crashes)
                assert seen == want, f"{job_id}: broker has {seen}, model {want}"
                if job.state == "dead":
                    assert record.reason == job.reason, f"{job_id}: reason {record.reason!r}, model {job.reason!r}"

        @invariant()
        def counts_agree(self) -> None:
            depths = self._run(self.b.depths(list(QUEUES)))
            for queue in QUEUES:
                states = Counter(j.state for j in self.jobs.values() if j.queue == queue)
                want = QueueDepth(states["ready"], states["scheduled"], states["running"], states["dead"])
                assert depths[queue] == want, f"depths[{queue!r}] = {depths[queue]}, model {want}"
            if self.caps.admin is not None:
                assert self._run(self.caps.admin.known_queues()) == sorted(self.queues_seen)

        @precondition(lambda self: self.caps.admin is not None)
        @invariant()
        def dead_letters_agree(self) -> None:
            assert self.caps.admin is not None
            for queue in QUEUES:
                letters = self._run(self.caps.admin.dead_letters(queue, limit=len(IDS) + 1))
                seen = sorted((x.id, x.body, x.reason) for x in letters)
                dead = [(i, j) for i, j in self.jobs.items() if j.queue == queue and j.state == "dead"]
                want = sorted((i, j.body, j.reason) for i, j in dead)
                assert seen == want, f"dead_letters({queue!r}) = {seen}, model {want}"

    return BrokerMachine
