"""Which jobs of a batch enqueue were stored when part of it failed (``enqueue``, ``enqueue_sync``).

An enqueue sends one dispatcher call per queue and per :data:`~bananas_redis.broker._ENQUEUE_CHUNK` jobs, all in one
round trip (pipelined: Redis runs the first call while the rest is still arriving). Each call stores all of its jobs
or none (``lua/dispatch.lua`` reads every record before it writes one, and ``maxmemory`` refuses a call at its first
write), but the calls of one round trip succeed or fail one by one: a job key of another type (``WRONGTYPE``) or
memory running out half-way fails some calls after others stored their jobs.

The enqueue's first round trip is therefore sent as a :class:`Tolerant` list: its error replies come back in place
instead of raising, :func:`outcome` sorts the jobs into stored and lost, and the enqueue raises
:class:`PartialEnqueue`, which the broker turns into its usual error (:func:`partial_error`) naming, by position in
the call, exactly the jobs that were not stored (and carrying them as ``not_enqueued`` / ``not_enqueued_ids``). A job
whose call replied is never reported lost. An error reply in a later round trip of the same enqueue (the home-queue
bookkeeping of explicit ids, the queue registry) is thrown into the steps by :func:`drive` / :func:`drive_sync` and
reported the same way, with every stored job still counted as stored.

A connection failure or a time-out stays what it was (the broker retries once; the dispatcher's read of each record
makes a repeated call store nothing twice).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import ResponseError

from bananas.plugin_api import BrokerError, Envelope

if TYPE_CHECKING:
    from bananas_redis.broker import RedisBroker

__all__ = ["PartialEnqueue", "Tolerant", "drive", "drive_sync", "first_error", "outcome", "partial_error"]

R = TypeVar("R")
Command = tuple[Any, ...]


class Tolerant(list):  # type: ignore[type-arg]
    """The commands of one round trip whose error replies come back in the reply list instead of raising."""


class PartialEnqueue(Exception):  # noqa: N818 - internal: always turned into a BrokerError (partial_error)
    """Part of an enqueue failed: ``stored`` (id -> flag, as the calls that replied said), ``lost`` (ids whose call
    failed: nothing of them was written), ``error`` (the first error reply)."""

    def __init__(self, stored: dict[str, bool], lost: set[str], error: BaseException) -> None:
        super().__init__(str(error))
        self.stored = stored
        self.lost = lost
        self.error = error


def outcome(chunks: Sequence[Sequence[Envelope]], replies: Sequence[Any]
            ) -> tuple[dict[str, bool], set[str], BaseException | None]:
    """The stored flags by id of the calls that replied, the ids of the calls that failed, and the first error."""
    stored: dict[str, bool] = {}
    lost: set[str] = set()
    error: BaseException | None = None
    for envs, reply in zip(chunks, replies, strict=False):  # the scripts' replies come first
        if isinstance(reply, BaseException):
            lost.update(env.id for env in envs)
            error = error or reply
            continue
        for env, flag in zip(envs, reply, strict=True):
            stored[env.id] = flag == 1
    return stored, lost, error


def first_error(replies: Sequence[Any]) -> BaseException | None:
    return next((r for r in replies if isinstance(r, BaseException)), None)


def _call_sync(broker: RedisBroker, commands: list[Command]) -> list[Any]:
    return (broker._send_loaded_sync if type(commands) is Tolerant else broker._call_sync)(commands)


async def _call(broker: RedisBroker, commands: list[Command]) -> list[Any]:
    return await (broker._send_loaded if type(commands) is Tolerant else broker._call)(commands)


def drive_sync(broker: RedisBroker, steps: Generator[list[Command], list[Any], R]) -> R:
    """The broker's ``_drive_sync`` for enqueue steps: a :class:`Tolerant` round returns its error replies, an
    error reply in any other round is thrown into the steps (which know what was stored by then)."""
    try:
        commands = next(steps)
        while True:
            try:
                replies = _call_sync(broker, commands)
            except ResponseError as exc:
                commands = steps.throw(exc)
            else:
                commands = steps.send(replies)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def drive(broker: RedisBroker, steps: Generator[list[Command], list[Any], R]) -> R:
    """:func:`drive_sync` on the broker's async connections."""
    try:
        commands = next(steps)
        while True:
            try:
                replies = await _call(broker, commands)
            except ResponseError as exc:
                commands = steps.throw(exc)
            else:
                commands = steps.send(replies)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def _ranges(positions: Sequence[int]) -> str:
    """``0-249, 500, 750-999``: consecutive positions as ranges (the first 8 ranges, then how many more)."""
    spans: list[str] = []
    start = prev = positions[0]
    for p in [*positions[1:], None]:
        if p is not None and p == prev + 1:
            prev = p
            continue
        spans.append(str(start) if start == prev else f"{start}-{prev}")
        if p is not None:
            start = prev = p
    more = f" and {len(spans) - 8} more ranges" if len(spans) > 8 else ""
    return ", ".join(spans[:8]) + more


def partial_error(broker: RedisBroker, partial: PartialEnqueue, envelopes: Sequence[Envelope]) -> BrokerError:
    """The broker's error for ``partial.error`` (:meth:`RedisBroker._fail`), saying which jobs of the call (by
    position in ``envelopes``) were not stored; it carries them as ``not_enqueued`` (positions) and
    ``not_enqueued_ids``."""
    positions = tuple(i for i, env in enumerate(envelopes) if env.id in partial.lost)
    total = len(envelopes)
    if len(positions) == total:  # nothing stored: the error of a failed call, as before
        error = broker._fail("enqueue", partial.error, len({env.id for env in envelopes}))
    else:
        error = broker._fail("enqueue", partial.error, 0)
        if positions:
            text = (f"{error}; {len(positions)} of {total} jobs were not enqueued (positions {_ranges(positions)} "
                    "of the call), the others were")
        else:
            text = f"{error}; every job of the call was enqueued all the same"
        error.args = (text,)
    error.not_enqueued = positions  # type: ignore[attr-defined]
    error.not_enqueued_ids = tuple(envelopes[i].id for i in positions)  # type: ignore[attr-defined]
    return error
