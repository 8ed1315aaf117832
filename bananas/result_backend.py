"""The result backend protocol: where handler return values are kept for clients to fetch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import attrs

__all__ = ["ResultBackend", "ResultBackendSpec"]


@runtime_checkable
class ResultBackend(Protocol):
    """Stores encoded results by job id. One instance belongs to one event loop."""

    async def connect(self) -> None:
        """Open connections; raise ``BrokerUnavailable`` if the backend cannot be reached."""
        ...

    async def close(self) -> None:
        """Close connections; calling it twice is harmless."""
        ...

    async def store(self, job_id: str, body: bytes, ttl: float | None) -> None:
        """Keep ``body`` for ``ttl`` seconds (``None``: the backend default; ``0``: do not store) and wake waiters."""
        ...

    async def get(self, job_id: str, wait: float | None = None) -> bytes | None:
        """Return the stored body; with ``wait`` block up to that many seconds for it (no polling loop)."""
        ...


@attrs.frozen
class ResultBackendSpec:
    """What a result-backend plugin registers: URL schemes and ``factory(url, options_dict)``."""

    schemes: tuple[str, ...] = attrs.field(converter=tuple)
    factory: Callable[[str, dict[str, object]], ResultBackend] = attrs.field(eq=False)
    summary: str = ""

    @property
    def name(self) -> str:
        return self.schemes[0]
