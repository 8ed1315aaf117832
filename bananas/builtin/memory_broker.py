"""``memory://NAME``: an in-process broker with the same semantics as the Redis broker.

Brokers built for the same URL share one state, so an app's producer side and its in-process worker (and the
heartbeat thread) see the same queues. All state sits behind one lock; waiting fetchers on any event loop are
woken with ``call_soon_threadsafe``, so nothing polls. A typed fetch (``job_types``) walks its queues from the head
past jobs of other types, leaving them where they are (one FIFO per queue, as in the Redis broker's ordering).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
from collections import deque
from collections.abc import Collection, Sequence

import attrs

from bananas.broker import (
    BrokerOptions,
    BrokerSpec,
    DeadLetter,
    Delivery,
    Envelope,
    JobRecord,
    Progress,
    QueueDepth,
)
from bananas.broker_types import ReadyType
from bananas.builtin.memory_control import MemoryControl
from bananas.builtin.memory_schedules import MemorySchedules, reset_schedules
from bananas.hookspecs import hookimpl
from bananas.registry import Register

__all__ = ["MemoryBroker"]


@attrs.define(eq=False)
class _Record:
    id: str
    queue: str
    body: bytes
    state: str
    deliveries: int = 0
    crashes: int = 0
    token: int = 0
    lease_until: float = 0.0
    eta: float = 0.0
    reason: str | None = None
    updated_at: float = 0.0
    expires_at: float | None = None
    progress: Progress | None = None
    started_at: float | None = None
    cancel_requested: bool = False
    job_type: str = ""


@attrs.define(eq=False)
class _State:
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    records: dict[str, _Record] = attrs.field(factory=dict)
    ready: dict[str, deque[str]] = attrs.field(factory=dict)
    scheduled: list[tuple[float, int, str]] = attrs.field(factory=list)
    expiries: list[tuple[float, int, _Record]] = attrs.field(factory=list)
    dead: dict[str, dict[str, DeadLetter]] = attrs.field(factory=dict)
    tokens: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1))
    seq: itertools.count[int] = attrs.field(factory=itertools.count)
    waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = attrs.field(factory=list)
    workers: dict[str, tuple[float, bytes]] = attrs.field(factory=dict)  # worker id -> (expires at, record)


_STATES: dict[str, _State] = {}
_STATES_LOCK = threading.Lock()


def _state_for(url: str) -> _State:
    with _STATES_LOCK:
        return _STATES.setdefault(url, _State())


class MemoryBroker(MemoryControl, MemorySchedules):
    """In-process broker for tests and single-process development (``memory://`` or ``memory://name``)."""

    def __init__(self, url: str = "memory://", options: BrokerOptions | None = None) -> None:
        self.url = url
        self.options = options or BrokerOptions()
        self._s = _state_for(url)

    @classmethod
    def reset(cls, url: str) -> None:
        """Forget every job of ``url``, and its leader lease and schedule states (test helper)."""
        with _STATES_LOCK:
            _STATES.pop(url, None)
        reset_schedules(url)

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # -- helpers (call with the lock held) ---------------------------------------------------------------------
    def _now(self) -> float:
        return self.options.clock()

    def _live(self, delivery: Delivery) -> _Record | None:
        rec = self._s.records.get(delivery.id)
        if rec is None or rec.state != "running" or rec.token != delivery.token:
            return None
        return rec

    def _push(self, rec: _Record, now: float, *, head: bool = False) -> None:
        queue = self._s.ready.setdefault(rec.queue, deque())
        rec.state = "ready"
        rec.updated_at = now
        if head:
            queue.appendleft(rec.id)
        else:
            queue.append(rec.id)

    def _schedule(self, rec: _Record, eta: float, now: float) -> None:
        rec.state = "scheduled"
        rec.eta = eta
        rec.updated_at = now
        heapq.heappush(self._s.scheduled, (eta, next(self._s.seq), rec.id))

    def _bury(self, rec: _Record, reason: str, now: float) -> None:
        rec.state = "dead"
        rec.reason = reason
        rec.updated_at = now
        self._retain(rec, now + self.options.dead_ttl)
        self._s.dead.setdefault(rec.queue, {})[rec.id] = DeadLetter(rec.id, rec.queue, rec.body, reason, now)

    def _retain(self, rec: _Record, until: float) -> None:
        rec.expires_at = until
        heapq.heappush(self._s.expiries, (until, next(self._s.seq), rec))

    def _expire(self, now: float) -> None:
        heap = self._s.expiries
        while heap and heap[0][0] <= now:
            until, _, rec = heapq.heappop(heap)
            if self._s.records.get(rec.id) is not rec or rec.expires_at != until:
                continue  # replaced by a new record of the same id, or already purged
            del self._s.records[rec.id]
            self._s.dead.get(rec.queue, {}).pop(rec.id, None)

    def _wake(self) -> None:
        waiters, self._s.waiters = self._s.waiters, []
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # that loop is closed: its fetcher is gone, the others must still wake
                pass

    # -- producer side -----------------------------------------------------------------------------------------
    async def enqueue(self, envelopes: Sequence[Envelope]) -> list[bool]:
        return self.enqueue_sync(envelopes)

    def enqueue_sync(self, envelopes: Sequence[Envelope], *, generated_ids: Collection[str] = ()) -> list[bool]:
        """Optional capability (see :mod:`bananas.broker`): :meth:`enqueue` without an event loop; thread-safe.
        Ids are unique across queues here by construction, so ``generated_ids`` needs no special handling."""
        stored: list[bool] = []
        with self._s.lock:
            now = self._now()
            for env in envelopes:
                old = self._s.records.get(env.id)
                if old is not None and old.state in ("ready", "scheduled", "running"):
                    stored.append(False)
                    continue
                stored.append(True)
                if old is not None and old.state == "dead":
                    self._s.dead.get(old.queue, {}).pop(old.id, None)
                rec = _Record(env.id, env.queue, env.body, "ready", updated_at=now, job_type=env.job_type)
                self._s.records[env.id] = rec
                self._s.ready.setdefault(env.queue, deque())
                if env.eta is not None and env.eta > now:
                    self._schedule(rec, env.eta, now)
                else:
                    self._push(rec, now)
            self._wake()
        return stored

    # -- worker side -------------------------------------------------------------------------------------------
    def _take(self, queues: Sequence[str], limit: int, job_types: Collection[str] | None = None) -> list[Delivery]:
        out: list[Delivery] = []
        now = self._now()
        for name in queues:
            queue = self._s.ready.get(name)
            passed: list[str] = []  # ready jobs of other types, in order: they go back to the head untouched
            while queue and len(out) < limit:
                rec = self._s.records.get(queue.popleft())
                if rec is None or rec.state != "ready":
                    continue
                if job_types is not None and rec.job_type not in job_types:
                    passed.append(rec.id)
                    continue
                rec.state = "running"
                rec.deliveries += 1
                rec.token = next(self._s.tokens)
                rec.lease_until = now + self.options.lease
                rec.updated_at = rec.started_at = now
                out.append(Delivery(rec.id, rec.queue, rec.body, rec.token, rec.deliveries, rec.crashes))
            if queue is not None and passed:
                queue.extendleft(reversed(passed))
            if len(out) >= limit:
                break
        return out

    async def fetch(
        self, queues: Sequence[str], limit: int, timeout: float, *, job_types: Collection[str] | None = None
    ) -> list[Delivery]:
        """Lease up to ``limit`` ready jobs; only of ``job_types`` when given (see :mod:`bananas.broker_types`)."""
        if limit <= 0:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while True:
            with self._s.lock:
                got = self._take(queues, limit, job_types)
                if got:
                    return got
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return []
                fut: asyncio.Future[None] = loop.create_future()
                self._s.waiters.append((loop, fut))
            try:
                await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                pass
            finally:
                with self._s.lock:
                    if (loop, fut) in self._s.waiters:
                        self._s.waiters.remove((loop, fut))

    async def renew(self, deliveries: Sequence[Delivery]) -> list[bool]:
        with self._s.lock:
            now = self._now()
            out = []
            for d in deliveries:
                rec = self._live(d)
                if rec is not None:
                    rec.lease_until = now + self.options.lease
                out.append(rec is not None)
            return out

    async def ack(self, deliveries: Sequence[Delivery]) -> list[bool]:
        with self._s.lock:
            now = self._now()
            out = []
            for d in deliveries:
                rec = self._live(d)
                if rec is not None:
                    rec.state = "completed"
                    rec.updated_at = now
                    self._retain(rec, now + self.options.completed_ttl)
                out.append(rec is not None)
            return out

    async def ack_and_fetch(
        self, deliveries: Sequence[Delivery], queues: Sequence[str], limit: int, *,
        job_types: Collection[str] | None = None,
    ) -> tuple[list[bool], list[Delivery]]:
        """Optional capability (see :mod:`bananas.broker`): :meth:`ack`, then take up to ``limit`` ready jobs
        without blocking."""
        owned = await self.ack(deliveries)
        if limit <= 0 or not queues:
            return owned, []
        with self._s.lock:
            return owned, self._take(queues, limit, job_types)

    async def retry(self, delivery: Delivery, *, body: bytes, at: float) -> bool:
        with self._s.lock:
            rec = self._live(delivery)
            if rec is None:
                return False
            now = self._now()
            rec.body = body
            rec.updated_at = now
            if at > now:
                self._schedule(rec, at, now)
            else:
                self._push(rec, now)
                self._wake()
            return True

    async def dead_letter(self, delivery: Delivery, *, body: bytes, reason: str) -> bool:
        with self._s.lock:
            rec = self._live(delivery)
            if rec is None:
                return False
            rec.body = body
            self._bury(rec, reason, self._now())
            return True

    async def release(self, deliveries: Sequence[Delivery]) -> list[bool]:
        with self._s.lock:
            now = self._now()
            live: list[_Record] = []
            out = []
            for d in deliveries:  # judged in order, like ack: a repeated delivery is stale the second time
                rec = self._live(d)
                if rec is not None and rec in live:
                    rec = None
                if rec is not None:
                    live.append(rec)
                out.append(rec is not None)
            for rec in reversed(live):  # keep their order at the head of the queue
                rec.token = next(self._s.tokens)
                self._push(rec, now, head=True)
            if live:
                self._wake()
            return out

    # -- maintenance -------------------------------------------------------------------------------------------
    async def move_due(self, limit: int = 1000) -> int:
        with self._s.lock:
            now = self._now()
            moved = 0
            heap = self._s.scheduled
            while heap and heap[0][0] <= now and moved < limit:
                eta, _, job_id = heapq.heappop(heap)
                rec = self._s.records.get(job_id)
                if rec is None or rec.state != "scheduled" or rec.eta != eta:
                    continue
                self._push(rec, now)
                moved += 1
            if moved:
                self._wake()
            self._expire(now)
            return moved

    async def reap(self) -> int:
        with self._s.lock:
            now = self._now()
            expired = [r for r in self._s.records.values() if r.state == "running" and r.lease_until <= now]
            # Push the latest hand-out first, so expired jobs sit at the head in the order they were fetched.
            for rec in sorted(expired, key=lambda r: r.token, reverse=True):
                rec.crashes += 1
                rec.token = next(self._s.tokens)
                if rec.crashes >= self.options.max_crash_deliveries:
                    self._bury(rec, "crash_loop", now)
                else:
                    self._push(rec, now, head=True)
            if expired:
                self._wake()
            return len(expired)

    # -- inspection --------------------------------------------------------------------------------------------
    def next_eta(self) -> float | None:
        """The Unix time the earliest scheduled job (a delayed job or a retry) becomes due, or ``None``. A test
        helper: ``bananas.testing.run_until_idle(fast_forward=True)`` jumps its clock there instead of waiting."""
        with self._s.lock:
            heap = self._s.scheduled
            while heap:
                eta, _, job_id = heap[0]
                rec = self._s.records.get(job_id)
                if rec is not None and rec.state == "scheduled" and rec.eta == eta:
                    return eta
                heapq.heappop(heap)  # stale: moved, rescheduled or gone (move_due skips these the same way)
            return None

    async def depths(self, queues: Sequence[str] | None = None) -> dict[str, QueueDepth]:
        with self._s.lock:
            self._expire(self._now())
            names = sorted(self._s.ready) if queues is None else list(queues)
            counts = {name: {"ready": 0, "scheduled": 0, "running": 0} for name in names}
            for rec in self._s.records.values():
                if rec.queue in counts and rec.state in counts[rec.queue]:
                    counts[rec.queue][rec.state] += 1
            return {
                name: QueueDepth(dead=len(self._s.dead.get(name, {})), **counts[name]) for name in names
            }

    async def ready_types(self, queue: str) -> list[ReadyType]:
        """Optional capability ``ready_types`` (:mod:`bananas.broker_types`): the types waiting in ``queue``."""
        with self._s.lock:
            found: dict[str, ReadyType] = {}
            for job_id in self._s.ready.get(queue, ()):
                rec = self._s.records.get(job_id)
                if rec is None or rec.state != "ready" or rec.queue != queue:
                    continue
                seen = found.get(rec.job_type)
                oldest = rec.updated_at if seen is None or seen.oldest_at is None else min(seen.oldest_at,
                                                                                           rec.updated_at)
                found[rec.job_type] = ReadyType(rec.job_type, (seen.ready if seen else 0) + 1, oldest)
            return sorted(found.values(), key=lambda t: (t.oldest_at or 0.0, t.job_type))

    # -- worker registry (capability worker_registry) ---------------------------------------------------------
    async def publish_worker(self, worker_id: str, record: bytes, ttl: float) -> None:
        with self._s.lock:
            self._s.workers[worker_id] = (self._now() + ttl, bytes(record))

    async def remove_worker(self, worker_id: str) -> None:
        with self._s.lock:
            self._s.workers.pop(worker_id, None)

    async def list_workers(self) -> list[bytes]:
        with self._s.lock:
            now = self._now()
            for worker_id in [w for w, (until, _) in self._s.workers.items() if until <= now]:
                del self._s.workers[worker_id]
            return [record for _, record in self._s.workers.values()]

    async def known_queues(self) -> list[str]:
        with self._s.lock:
            return sorted(self._s.ready)

    async def lookup(self, job_id: str) -> JobRecord | None:
        with self._s.lock:
            self._expire(self._now())
            rec = self._s.records.get(job_id)
            if rec is None:
                return None
            return JobRecord(
                rec.id, rec.queue, rec.state, rec.body, rec.deliveries, rec.crashes, rec.reason, rec.updated_at,
                rec.started_at,
            )

    async def set_progress(self, job_id: str, value: float, message: str | None = None, *,
                           queue: str | None = None) -> None:
        with self._s.lock:
            rec = self._s.records.get(job_id)
            if rec is not None:  # an unknown or expired job has no record to keep it with
                rec.progress = Progress(float(value), message, self._now())

    async def progress(self, job_id: str) -> Progress | None:
        with self._s.lock:
            self._expire(self._now())
            rec = self._s.records.get(job_id)
            return rec.progress if rec is not None else None

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        with self._s.lock:
            self._expire(self._now())
            # Newest first; letters buried at the same instant keep newest-first by burial order.
            letters = sorted(reversed(self._s.dead.get(queue, {}).values()), key=lambda d: d.dead_at, reverse=True)
            return letters[: max(limit, 0)]

    async def requeue_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        with self._s.lock:
            now = self._now()
            self._expire(now)
            dead = self._s.dead.get(queue, {})
            chosen = list(dead) if ids is None else [i for i in dict.fromkeys(ids) if i in dead]
            for job_id in chosen:
                letter = dead.pop(job_id)
                old = self._s.records.get(job_id)
                rec = _Record(job_id, queue, letter.body, "ready", updated_at=now,
                              job_type=old.job_type if old is not None else "")
                self._s.records[job_id] = rec
                self._push(rec, now)
            if chosen:
                self._wake()
            return len(chosen)

    async def purge_dead(self, queue: str) -> int:
        with self._s.lock:
            self._expire(self._now())
            dead = self._s.dead.pop(queue, {})
            for job_id in dead:
                self._s.records.pop(job_id, None)
            return len(dead)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


@hookimpl
def bananas_register_brokers(register: Register[BrokerSpec]) -> None:
    register(
        BrokerSpec(
            schemes=("memory",),
            factory=MemoryBroker,
            summary="in-process broker for tests and single-process development",
        )
    )
