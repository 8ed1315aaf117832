"""The lease heartbeat: renews the leases of a worker's running jobs from its own thread and event loop, and tells
running jobs of their cancel requests (``client.cancel``)."""

from __future__ import annotations

import asyncio
import threading
import time

from bananas.broker import Broker, Delivery
from bananas.worker.state import WorkerState, error_text

__all__ = ["CANCEL_POLL", "_Heartbeat"]

CANCEL_POLL = 1.0
"""Seconds between two questions to the broker (capability ``cancellation``: ``cancel_requested``) whether a job this
process runs was cancelled; asked only while it runs jobs: one cheap round trip per second per busy worker."""

class _Heartbeat:
    """Renews the leases of running jobs from its own thread and event loop (a blocked worker loop cannot stop
    it), with its own broker connection.

    It never dies of a broker error: connecting and renewing are retried every beat. While it cannot renew the
    leases of the jobs this process holds (or cannot reach the broker at all), :meth:`healthy` is false and the
    worker takes no new jobs: a job started then would lose its lease and run twice.

    With a broker that has the ``cancellation`` capability it also asks, every :data:`CANCEL_POLL` seconds while
    jobs run here, which of them were cancelled, and hands those to the worker's loop
    (:meth:`~bananas.worker.state._Slot.request_cancel`), which stops their handlers.
    """

    def __init__(self, worker: WorkerState) -> None:
        self.worker = worker
        self.lease = worker.context.lease
        self.interval = max(self.lease / 3, 0.05)
        self.cancellation = worker._caps.cancellation is not None
        self._told: set[int] = set()  # tokens of deliveries whose cancel request was handed to the worker's loop
        self.problem: str | None = "not connected yet"
        self._connected = False
        self._renewed = True  # the last renewal of held leases succeeded (or nothing was held)
        self.first_beat = threading.Event()  # the first connect attempt is over (pools start after it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bananas-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def healthy(self) -> bool:
        """Leases of this process can be renewed: the heartbeat runs, is connected and its last renewal worked."""
        return self._thread.is_alive() and self._connected and self._renewed

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            self._beat_forever(loop)
        except BaseException as exc:  # noqa: BLE001 - say so loudly: without it the worker must not take work
            self.problem = f"heartbeat thread died: {error_text(exc)}"
            self.worker.log.opt(exception=exc).critical("lease heartbeat stopped unexpectedly: {}", error_text(exc))
        finally:
            self.first_beat.set()
            loop.close()

    def _beat_forever(self, loop: asyncio.AbstractEventLoop) -> None:
        broker: Broker | None = None
        # A renewal that takes longer than this is of no use (the lease may be gone): give up, try the next beat.
        bound = max(self.interval, 0.5)
        failing_since: float | None = None
        tick = min(self.interval, CANCEL_POLL) if self.cancellation else self.interval
        next_renewal = 0.0
        try:
            wait = 0.0
            while not self._stop.wait(wait):
                wait = tick
                if time.monotonic() < next_renewal:
                    self._check_cancels(loop, broker, bound)
                    continue
                next_renewal = time.monotonic() + self.interval - tick / 10
                try:
                    if broker is None:
                        fresh = self.worker.context.new_broker()
                        try:
                            loop.run_until_complete(asyncio.wait_for(fresh.connect(), max(bound, 5.0)))
                        except BaseException:
                            loop.run_until_complete(fresh.close())
                            raise
                        broker = fresh
                        self._connected = True
                    held = [s.delivery for s in list(self.worker.slots.values()) if not s.done]
                    if not held:
                        self._renewed = True
                        ok = True
                    else:
                        owned = loop.run_until_complete(asyncio.wait_for(broker.renew(held), bound))
                        self._renewed = ok = True
                        self._report_lost(held, owned)
                        self._check_cancels(loop, broker, bound)
                except Exception as exc:  # noqa: BLE001 - try again next beat
                    ok = False
                    text = error_text(exc) if str(exc) else f"{type(exc).__name__}: no reply within {bound:g}s"
                    self.problem = text
                    if broker is None:
                        self._connected = False
                    else:
                        self._renewed = False
                    if failing_since is None:
                        failing_since = time.monotonic()
                        self.worker.log.bind(error=text).error("lease renewal failed: {}; retrying every {:g}s", text,
                                                               self.interval)
                if ok and failing_since is not None:
                    self.worker.log.info("lease renewal works again after {:.1f}s", time.monotonic() - failing_since)
                    failing_since = None
                    self.problem = None
                elif ok:
                    self.problem = None
                self.first_beat.set()
        finally:
            if broker is not None:
                try:
                    loop.run_until_complete(asyncio.wait_for(broker.close(), 2.0))
                except Exception:  # noqa: BLE001 - closing a dead connection
                    pass

    def _check_cancels(self, loop: asyncio.AbstractEventLoop, broker: Broker | None, bound: float) -> None:
        """Ask which running jobs were cancelled; hand each to the worker's loop once. Errors wait for the next
        tick (renewal failures are what the heartbeat reports)."""
        worker = self.worker
        if broker is None or not self.cancellation or worker._loop is None:
            return
        held = list(worker.slots.values())
        if self._told:  # forget the tokens of jobs that have left this process
            self._told &= {s.delivery.token for s in held}
        slots = [s for s in held if not (s.done or s.settling or s.cancelled) and s.delivery.token not in self._told]
        if not slots:
            return
        try:  # this thread's own broker (same class as the worker's, so it has the capability too)
            ask = broker.cancel_requested  # type: ignore[attr-defined]
            flags = loop.run_until_complete(asyncio.wait_for(ask([s.delivery for s in slots]), bound))
        except Exception:  # noqa: BLE001 - asked again next tick
            return
        for slot, cancelled in zip(slots, flags, strict=True):
            if cancelled:
                self._told.add(slot.delivery.token)
                worker.log.info("job {job_id} was cancelled; stopping it", job_id=slot.delivery.id)
                try:
                    worker._loop.call_soon_threadsafe(slot.request_cancel)
                except RuntimeError:  # the worker's loop is closed: it is stopping anyway
                    return

    def _report_lost(self, held: list[Delivery], owned: list[bool]) -> None:
        """Warn about leases the broker says this process lost, except for jobs settled since the snapshot (their
        record is completed, retried or dead, so the renewal found no live lease: no news)."""
        slots = self.worker.slots
        for delivery, mine in zip(held, owned, strict=True):
            if mine:
                continue
            slot = slots.get(delivery.id)
            if slot is None or slot.delivery is not delivery or slot.done or slot.settling:
                continue
            if slot.queued:
                slot.lost = True  # its pool drops it instead of starting it
                self.worker.log.warning("lease of prefetched job {job_id} was lost before it started; it is not "
                                        "started here", job_id=delivery.id)
                continue
            self.worker.log.warning("lease of job {job_id} was lost while it runs here; another worker may run it "
                                    "too", job_id=delivery.id)
