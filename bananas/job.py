"""The job model: what a producer asks for and what a worker runs."""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Mapping
from typing import Any

import attrs

from bananas.units import parse_duration

__all__ = ["Job", "Priority", "Status", "new_job_id"]


class Priority(enum.StrEnum):
    """Job priority. Workers that handle several priorities always take the highest ready one first."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for high, 1 for normal, 2 for low: sort key, lowest first."""
        return _RANK[self]

    @classmethod
    def parse(cls, value: str | Priority, *, field: str = "priority") -> Priority:
        """Accept a member or its name (any case); raise ``ValueError`` naming ``field`` otherwise."""
        if isinstance(value, Priority):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            allowed = ", ".join(p.value for p in cls)
            raise ValueError(f"{field}: {value!r} is not one of {allowed}") from None


_RANK = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}


class Status(enum.StrEnum):
    """Where a job is in its life."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRYING = "retrying"
    DEAD = "dead"


def new_job_id() -> str:
    """A random 32-hex-digit job id (``uuid.uuid4().hex``, built without the ``UUID`` object)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


def _payload(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"payload: expected a mapping of keyword arguments, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise ValueError(f"payload: keys must be strings (they become keyword arguments), got {key!r}")
    return dict(value)


def _priority(value: str | Priority) -> Priority:
    return Priority.parse(value)


def _status(value: str | Status) -> Status:
    try:
        return Status(value)
    except ValueError:
        allowed = ", ".join(s.value for s in Status)
        raise ValueError(f"status: {value!r} is not one of {allowed}") from None


def _timeout(value: str | float | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"timeout: {exc}") from None
    if seconds <= 0:
        raise ValueError(f"timeout: must be positive, got {value!r}")
    return seconds


def _non_negative(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name}: expected a non-negative integer, got {value!r}")


def _name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{attribute.name}: expected a non-empty string, got {value!r}")


def _headers(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValueError(f"headers: expected a mapping of strings, got {type(value).__name__}")
    return {str(k): str(v) for k, v in value.items()}


@attrs.define(kw_only=True)
class Job:
    """One unit of work.

    Attributes:
        id: Unique id (32 hex digits unless the producer chose one).
        name: The registered handler name.
        payload: JSON-compatible mapping, passed to the handler as keyword arguments.
        priority: ``high``, ``normal`` or ``low``.
        status: See :class:`Status`.
        attempts: How many times the handler has been started for this job.
        max_retries: Retries allowed after the first attempt fails.
        timeout: Seconds the handler may run, or ``None`` for the worker default.
        queue: The queue the router chose (set at enqueue).
        last_error: ``"Type: message"`` of the last failure.
        traceback: Text of the last failure's traceback.
        headers: Free-form string headers (trace ids and the like).
        created_at / enqueued_at / scheduled_at / started_at / finished_at: Unix timestamps or ``None``.
    """

    name: str = attrs.field(validator=_name)
    payload: dict[str, Any] = attrs.field(factory=dict, converter=_payload)
    id: str = attrs.field(factory=new_job_id, validator=_name)
    priority: Priority = attrs.field(default=Priority.NORMAL, converter=_priority)
    status: Status = attrs.field(default=Status.PENDING, converter=_status)
    attempts: int = attrs.field(default=0, validator=_non_negative)
    max_retries: int = attrs.field(default=3, validator=_non_negative)
    timeout: float | None = attrs.field(default=None, converter=_timeout)
    queue: str | None = None
    last_error: str | None = None
    traceback: str | None = None
    headers: dict[str, str] = attrs.field(factory=dict, converter=_headers)
    created_at: float = attrs.field(factory=time.time)
    enqueued_at: float | None = None
    scheduled_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible mapping of every field (enums as their string values)."""
        return {  # field order, as attrs.asdict would give it (built directly: this is on every enqueue)
            "name": self.name,
            "payload": self.payload,
            "id": self.id,
            "priority": self.priority.value,
            "status": self.status.value,
            "attempts": self.attempts,
            "max_retries": self.max_retries,
            "timeout": self.timeout,
            "queue": self.queue,
            "last_error": self.last_error,
            "traceback": self.traceback,
            "headers": self.headers,
            "created_at": self.created_at,
            "enqueued_at": self.enqueued_at,
            "scheduled_at": self.scheduled_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        """Rebuild a job from :meth:`to_dict` output; unknown keys raise ``ValueError`` naming them."""
        known = _FIELD_NAMES
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown job field(s): {', '.join(sorted(unknown))}")
        return cls(**data)


_FIELD_NAMES = frozenset(a.name for a in attrs.fields(Job))
assert len(_FIELD_NAMES) == 17, "Job.to_dict lists every field: update it with the model"  # noqa: PLR2004
