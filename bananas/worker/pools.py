"""Pools: one fetch loop per pool of the plan, keyed by its unique pool id, and the crash isolation of recovered
jobs.

A pool waits for a free slot and fetches at most as many jobs as it has free slots (``queues`` in priority order;
with a broker that fetches by job type, only the types the pool runs: :func:`bananas.broker_types.fetch_types`),
then starts one job task per delivery: :class:`~bananas.worker.execution.Execution` runs it and
:class:`~bananas.worker.settlement.Settlement` settles the outcome. A pool takes no work while the heartbeat cannot
renew leases, and a broker error never ends it (logged, retried after 1 s).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from bananas.broker import Delivery
from bananas.broker_types import fetch_types
from bananas.worker.execution import Execution
from bananas.worker.settlement import Ack, Settlement
from bananas.worker.state import WorkerState, _Slot, error_text
from bananas.worker_mode import PoolPlan

__all__ = ["PREFETCH_BELOW", "Pools"]

PREFETCH_BELOW = 0.02
"""A pool prefetches (``worker.prefetch_multiplier``) only while its jobs take less than this on average (seconds
from start to settled, as the worker sees them: a busy pool of no-op sync jobs on 8 slots shows 5-6 ms, mostly
waits for the GIL; the kill-storm drill's 30 ms jobs do not prefetch)."""

class Pools:
    """The fetch loops of one worker process (:meth:`run` per pool) and the job tasks they start."""

    def __init__(self, state: WorkerState, execution: Execution, settlement: Settlement) -> None:
        self.state = state
        self.execution = execution
        self.settlement = settlement

    async def run(self, pool: PoolPlan) -> None:
        """The fetch loop of one pool until the worker stops."""
        state, settlement = self.state, self.settlement
        assert state._broker is not None and state._stop is not None
        broker, stop = state._broker, state._stop
        combined = state._caps.ack_and_fetch
        blocked = state._blocked
        pool_id = pool.pool_id
        typed = {"job_types": self.job_types(pool)} if state._caps.typed_fetch else {}
        handlers = self.execution.handlers
        known = len(handlers)  # a handler registered after the start (an in-process worker) widens the fetch
        free = asyncio.Semaphore(pool.concurrency)
        in_use = 0
        failing_since: float | None = None  # the first failed fetch of an outage (logged once it ends)
        usage = state.stats.pool(pool_id, pool.concurrency)  # busy slot-seconds (bananas.metrics utilization)
        # Prefetch: up to ``prefetch`` more jobs than slots are leased and wait here (their slots are in
        # state.slots with ``queued`` set, so the heartbeat renews their leases and sees cancel requests). A busy
        # pool refills when half of them are gone, so one round trip carries several jobs (and acks). Only while
        # the pool's jobs are short (``mean`` run time under PREFETCH_BELOW): for longer jobs a round trip per job
        # costs little, and a worker that dies should take with it only the jobs it was running (the broker
        # charges every lease it loses a crash).
        prefetch = (state.prefetch_multiplier - 1) * pool.concurrency
        waiting: deque[_Slot] = deque()
        dry = False  # the last non-blocking refill found nothing: no more refills until the buffer is empty
        mean: float | None = None  # moving average of this pool's job run times (seconds)
        clock = time.monotonic

        def start(delivery: Delivery, *, solo: bool = False, slot: _Slot | None = None) -> asyncio.Task[None]:
            nonlocal in_use
            in_use += 1
            if slot is None:
                state.slots[delivery.id] = slot = _Slot(delivery, solo=solo)
            slot.queued = False
            began = clock()

            def release(_: object) -> None:
                nonlocal in_use, mean
                in_use -= 1
                free.release()
                took = clock() - began
                mean = took if mean is None else mean + (took - mean) * 0.2

            task = asyncio.create_task(self._process(slot, pool, pool_id), name=f"job-{delivery.id}")
            self._track(task)
            usage.enter()
            task.add_done_callback(usage.leave)
            task.add_done_callback(release)
            return task

        async def give_back() -> None:
            """The waiting (prefetched) jobs go back to the broker: stopping, or isolating a suspect."""
            if not waiting:
                return
            slots = [waiting.popleft() for _ in range(len(waiting))]
            for slot in slots:
                state.slots.pop(slot.delivery.id, None)
            try:
                await broker.release([slot.delivery for slot in slots])
            except Exception as exc:  # noqa: BLE001 - their leases expire and they run again
                state.log.error("could not give back {count} prefetched job(s): {error}; they run again once their "
                                "leases expire", count=len(slots), error=error_text(exc))

        # A stop request wakes a pool waiting for a free slot (one spare permit: the pool ends right after).
        stopping = asyncio.ensure_future(stop.wait())
        stopping.add_done_callback(lambda _: free.release())
        try:
            while not stop.is_set():
                await free.acquire()
                free.release()
                if stop.is_set():
                    break
                if self.state._paused or (self.state._heartbeat is not None and not self.state._heartbeat.healthy()):
                    await give_back()  # their leases cannot be renewed either: another worker may take them
                    await self._pause_while_unhealthy()
                    continue
                if self.state._isolating or (self.state._solo is not None and self.state._solo.locked()):
                    await give_back()
                    await self._isolated_turn(pool, start)
                    continue
                while waiting and in_use < pool.concurrency:
                    slot = waiting.popleft()
                    if slot.lost:  # the heartbeat could not renew its lease: it may run elsewhere already
                        state.slots.pop(slot.delivery.id, None)
                        continue
                    await free.acquire()  # a slot is free: does not wait
                    start(slot.delivery, slot=slot)
                depth = prefetch if mean is not None and mean < PREFETCH_BELOW else 0
                if waiting and (dry or len(waiting) > depth // 2):
                    continue  # every slot is busy (else the loop above started one): wait for one
                if in_use and not waiting:
                    # Jobs finishing in the same loop iteration free their slots together: one more turn lets them,
                    # so a busy pool fetches (and later acks) in batches instead of one job per round trip. An idle
                    # pool (in_use == 0) fetches at once, so this costs no latency.
                    await asyncio.sleep(0)
                limit = pool.concurrency + depth - in_use - len(waiting)
                if limit <= 0:
                    continue
                if typed and len(handlers) != known:
                    known = len(handlers)
                    typed = {"job_types": self.job_types(pool)}
                acks: list[Ack] = []
                try:
                    if combined is not None and settlement.pending:
                        # The acks of finished jobs ride along with the next take: one round trip for both.
                        acks = settlement.take_acks()
                        owned, deliveries = await combined([item[0] for item in acks], pool.queues, limit, **typed)
                        settlement.acked(acks, owned)
                        acks = []
                    elif waiting:  # a refill never blocks: the waiting jobs must start as slots free up
                        deliveries = await broker.fetch(pool.queues, limit, 0.0, **typed)
                    else:
                        deliveries = []
                    if not deliveries and not waiting:
                        blocked.add(pool_id)  # a job finishing now flushes its ack itself (see Settlement.settle)
                        settlement.flush_soon()  # finished meanwhile
                        try:
                            deliveries = await broker.fetch(pool.queues, limit, self.state.fetch_wait, **typed)
                        finally:
                            blocked.discard(pool_id)
                except Exception as exc:  # noqa: BLE001 - a broker outage must not end the pool
                    if acks:
                        state.log.error("ack of {count} job(s) failed: {error}; their leases will expire and they "
                                        "run again", count=len(acks), error=error_text(exc))
                        settlement.acked(acks, [False] * len(acks))
                    if failing_since is None:
                        failing_since = time.monotonic()
                    state.log.bind(component="queue", event="broker_connection_lost", pool_id=pool_id).error(
                        "fetch from {queues} failed: {error}; retrying in 1s", queues=list(pool.queues),
                        error=error_text(exc))
                    await asyncio.sleep(1.0)
                    continue
                dry = not deliveries
                if failing_since is not None:
                    state.log.bind(component="queue", event="broker_connection_back", pool_id=pool_id).info(
                        "fetch from {} works again after {:.1f}s", list(pool.queues), time.monotonic() - failing_since)
                    failing_since = None
                if stop.is_set() and deliveries:  # stopping: start nothing new, give them straight back
                    await broker.release(deliveries)
                    break
                if deliveries and self.state._solo is not None and self.state._solo.locked():
                    # another pool runs (or is about to run) a job alone: these may not run beside it
                    await broker.release(deliveries)
                    continue
                if (len(deliveries) == 1 and not waiting and self._suspect(deliveries[0])
                        and self.state._inflight == 0):
                    await self._run_alone(deliveries[0], start)  # nothing runs here: no need to give it back
                    continue
                if deliveries:
                    deliveries = await self._screen(deliveries)
                for delivery in deliveries:
                    if in_use < pool.concurrency and not waiting:
                        await free.acquire()  # a slot is free: does not wait
                        start(delivery)
                    else:
                        state.slots[delivery.id] = slot = _Slot(delivery, queued=True)
                        waiting.append(slot)
        finally:
            stopping.cancel()
            if waiting:
                await asyncio.shield(give_back())

    def job_types(self, pool: PoolPlan) -> frozenset[str] | None:
        """The job types ``pool`` fetches (``None``: every type); see :func:`bananas.broker_types.fetch_types`."""
        return fetch_types(pool.job_types, self.execution.handlers, self.state.unknown_job_types)

    # -- crash isolation ---------------------------------------------------------------------------------------
    # A job that kills its process (os._exit, a segfault, the OOM killer) takes the leases of every job running
    # beside it; the broker charges each a crash when it recovers them, and dead-letters a job as crash_loop after
    # max_crash_deliveries. So that only a real culprit gets there, a job on its last chance (one crash short of
    # the limit: a "suspect") never runs beside another job: it goes back to the head of its queue, this process
    # drains, then fetches one job at a time and runs each suspect alone until a clean job comes. A job can so only
    # be dead-lettered for a crash it had alone. Earlier recoveries run at full concurrency, so an ordinary crash
    # (a deploy's SIGKILL, a lost node) costs no throughput.
    def _suspect(self, delivery: Delivery) -> bool:
        assert self.state._broker is not None
        return delivery.crashes > 0 and delivery.crashes >= self.state._broker.options.max_crash_deliveries - 1

    def _track(self, task: asyncio.Task[None]) -> None:
        assert self.state._idle is not None
        self.state._inflight += 1
        self.state._idle.clear()

        def done(_: object) -> None:
            self.state._inflight -= 1
            if self.state._inflight == 0 and self.state._idle is not None:
                self.state._idle.set()

        task.add_done_callback(done)

    async def _screen(self, deliveries: list[Delivery]) -> list[Delivery]:
        """The deliveries to start now; suspects go back to the broker and switch this process to isolation."""
        assert self.state._broker is not None
        suspects = [d for d in deliveries if self._suspect(d)]
        if not suspects:
            return deliveries
        try:
            await self.state._broker.release(suspects)
        except Exception as exc:  # noqa: BLE001 - their leases expire; they come back as suspects again
            self.state.log.error("could not give back {count} recovered job(s): {error}", count=len(suspects),
                                 error=error_text(exc))
        if not self.state._isolating:
            self.state.log.info("{count} job(s) recovered from dead workers on their last chance: running them one "
                                "at a time, alone, in this process", count=len(suspects))
        self.state._isolating = True
        return [d for d in deliveries if not self._suspect(d)]

    async def _isolated_turn(self, pool: PoolPlan, start: Callable[..., asyncio.Task[None]]) -> None:
        """Wait until nothing runs in this process, fetch one job; run a suspect alone to its end."""
        assert self.state._broker is not None and self.state._solo is not None and self.state._idle is not None
        async with self.state._solo:
            if not await self.state._until(self.state._idle) or not self.state._isolating:
                return
            try:
                typed = {"job_types": self.job_types(pool)} if self.state._caps.typed_fetch else {}
                got = await self.state._broker.fetch(pool.queues, 1, self.state.fetch_wait, **typed)
            except Exception as exc:  # noqa: BLE001 - a broker outage must not end the pool
                self.state.log.bind(component="queue").error("fetch from {queues} failed: {error}; retrying in 1s",
                                                             queues=list(pool.queues), error=error_text(exc))
                await self.state._sleep(1.0)
                return
            if not got:
                self.state._isolating = False  # nothing waits in this pool's queues (others find their own suspects)
                return
            delivery = got[0]
            if self.state._stop_requested():
                await self.state._broker.release(got)
                return
            if not self._suspect(delivery):
                self.state._isolating = False
                self.state.log.info("no more recovered jobs at the head of {queues}: back to normal fetching",
                                    queues=list(pool.queues))
                start(delivery)
                return
            await self._run_alone(delivery, start, locked=True)

    async def _run_alone(
        self, delivery: Delivery, start: Callable[..., asyncio.Task[None]], *, locked: bool = False
    ) -> None:
        """Run a suspect with nothing beside it in this process, to its end (its ack included)."""
        assert self.state._solo is not None and self.state._broker is not None
        if not locked:
            async with self.state._solo:  # free here (the caller checked): taken without yielding to other pools
                return await self._run_alone(delivery, start, locked=True)
        self.state.log.info("running recovered job {job_id} alone: {crashes} crash(es) so far, one more makes it "
                            "crash_loop", job_id=delivery.id, crashes=delivery.crashes)
        # Awaited with asyncio.wait: cancelling this pool at shutdown does not cancel the job itself.
        await asyncio.wait({start(delivery, solo=True)})

    async def _until(self, event: asyncio.Event) -> bool:
        """Wait for ``event`` or a stop request; ``True`` if the event came first."""
        assert self.state._stop is not None
        if event.is_set():
            return True
        waiters = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(self.state._stop.wait())}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return event.is_set() and not self.state._stop_requested()

    async def _pause_while_unhealthy(self) -> None:
        """Take no work while this process cannot renew leases: jobs it started would run twice."""
        assert self.state._heartbeat is not None
        if not self.state._paused:
            self.state._paused = True
            self.state.log.error("leases cannot be renewed ({problem}): taking no new jobs until renewal works again; "
                                 "jobs already running may be recovered by other workers",
                                 problem=self.state._heartbeat.problem or "unknown")
        while not self.state._stop_requested() and not self.state._heartbeat.healthy():
            await self.state._sleep(0.2)
        if self.state._paused and self.state._heartbeat.healthy():
            self.state._paused = False
            self.state.log.info("lease renewal works again: taking jobs")

    # -- one job -------------------------------------------------------------------------------------------------
    async def _process(self, slot: _Slot, pool: PoolPlan, pool_id: str) -> None:
        try:
            outcome = await self.execution.run(slot, pool.job_types, pool_id)
            await self.settlement.settle(slot, pool_id, outcome)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - settling failed (broker outage past retry_for): the lease decides
            self.state.log.error("job {job_id}: could not settle it with the broker ({error}); its lease will expire "
                                 "and it runs again", job_id=slot.delivery.id, error=error_text(exc))
            slot.done = True
            self.state.slots.pop(slot.delivery.id, None)
