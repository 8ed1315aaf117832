"""The ``schedules`` capability of the memory broker (:mod:`bananas.broker_schedules`): leader lease, tick guard and
schedule state, shared by every memory broker of one URL (like its queues) and guarded by one lock."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import attrs

from bananas.broker import BrokerOptions
from bananas.broker_schedules import LeaderLease

__all__ = ["MemorySchedules", "reset_schedules"]


@attrs.define(eq=False)
class _Schedules:
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    leader: LeaderLease | None = None
    tokens: int = 0
    claimed: dict[str, float] = attrs.field(factory=dict)
    states: dict[str, str] = attrs.field(factory=dict)


_ALL: dict[str, _Schedules] = {}
_ALL_LOCK = threading.Lock()


def _for(url: str) -> _Schedules:
    with _ALL_LOCK:
        return _ALL.setdefault(url, _Schedules())


def reset_schedules(url: str) -> None:
    """Forget the leader, tick guards and states of ``url`` (``MemoryBroker.reset``)."""
    with _ALL_LOCK:
        _ALL.pop(url, None)


class MemorySchedules:
    """Mixin of :class:`~bananas.builtin.memory_broker.MemoryBroker`: ``url`` and ``options.clock`` come from it."""

    url: str
    options: BrokerOptions

    @property
    def _sched(self) -> _Schedules:
        return _for(self.url)

    def _live_lease(self, s: _Schedules, now: float) -> LeaderLease | None:
        return s.leader if s.leader is not None and s.leader.expires_at > now else None

    def _fenced(self, s: _Schedules, token: int, now: float) -> bool:
        live = self._live_lease(s, now)
        return live is not None and live.token == token

    async def acquire_leader(self, candidate: str, ttl: float) -> int | None:
        s, now = self._sched, self.options.clock()
        with s.lock:
            live = self._live_lease(s, now)
            if live is not None and live.holder != candidate:
                return None
            if live is None:
                s.tokens += 1
                live = LeaderLease(candidate, s.tokens, now + ttl)
            s.leader = attrs.evolve(live, expires_at=now + ttl)
            return live.token

    async def renew_leader(self, candidate: str, token: int, ttl: float) -> bool:
        s, now = self._sched, self.options.clock()
        with s.lock:
            live = self._live_lease(s, now)
            if live is None or (live.holder, live.token) != (candidate, token):
                return False
            s.leader = attrs.evolve(live, expires_at=now + ttl)
            return True

    async def release_leader(self, candidate: str, token: int) -> bool:
        s, now = self._sched, self.options.clock()
        with s.lock:
            live = self._live_lease(s, now)
            if live is None or (live.holder, live.token) != (candidate, token):
                return False
            s.leader = None
            return True

    async def current_leader(self) -> LeaderLease | None:
        s, now = self._sched, self.options.clock()
        with s.lock:
            return self._live_lease(s, now)

    async def claim_tick(self, schedule: str, tick: float, token: int) -> bool:
        s, now = self._sched, self.options.clock()
        with s.lock:
            if not self._fenced(s, token, now) or s.claimed.get(schedule, float("-inf")) >= tick:
                return False
            s.claimed[schedule] = tick
            return True

    async def unclaim_tick(self, schedule: str, tick: float, previous: float | None, token: int) -> bool:
        s, now = self._sched, self.options.clock()
        with s.lock:
            if not self._fenced(s, token, now) or s.claimed.get(schedule) != tick:
                return False
            if previous is None:
                del s.claimed[schedule]
            else:
                s.claimed[schedule] = previous
            return True

    async def schedule_states(self, names: Sequence[str] | None = None) -> dict[str, str]:
        s = self._sched
        with s.lock:
            if names is None:
                return dict(s.states)
            return {name: s.states[name] for name in names if name in s.states}

    async def save_schedule_state(self, schedule: str, state: str, token: int) -> bool:
        s, now = self._sched, self.options.clock()
        with s.lock:
            if not self._fenced(s, token, now):
                return False
            s.states[schedule] = state
            return True
