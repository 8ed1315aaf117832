"""The queue-depths duty: every 10 s, one INFO record per queue with its counts (``ready``, ``scheduled``,
``running``, ``dead``), from the broker's core ``depths``.

It ``needs_leader`` (one process of the deployment reports, like the scheduler) and stays quiet on an idle system:
a queue is logged while it holds jobs, and once more when it becomes empty, so a dashboard sees it drop to zero.
"""

from __future__ import annotations

from bananas.broker import Broker, QueueDepth
from bananas.worker.context import Duty
from bananas.worker.state import WorkerState

__all__ = ["DEPTH_INTERVAL", "depth_duty"]

DEPTH_INTERVAL = 10.0
"""Seconds between two depth reports."""


def depth_duty(state: WorkerState, interval: float = DEPTH_INTERVAL) -> Duty:
    """The ``queue-depths`` duty of this worker (first report one interval after start)."""
    log = state.log.bind(component="queue", event="queue_depth")
    last: dict[str, QueueDepth] = {}

    async def report(broker: Broker) -> None:
        depths = await broker.depths()
        for queue, depth in sorted(depths.items()):
            empty = not (depth.ready or depth.scheduled or depth.running or depth.dead)
            before = last.get(queue)
            last[queue] = depth
            if empty and (before is None or before == depth):
                continue
            log.bind(queue=queue, ready=depth.ready, scheduled=depth.scheduled, running=depth.running,
                     dead=depth.dead).info("queue {}: {} ready, {} scheduled, {} running, {} dead", queue,
                                           depth.ready, depth.scheduled, depth.running, depth.dead)

    return Duty("queue-depths", interval, report, needs_leader=True, at_start=False)
