"""Serializers turn a job's fields into bytes and back.

A serializer only sees JSON-compatible mappings (``Job.to_dict()``); the kernel's :class:`JobCodec` adds the job
model on top. Serializers are registered by name through ``bananas_register_serializers`` and chosen with
``serializer = "<name>"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from bananas.errors import SerializationError
from bananas.job import Job

__all__ = ["JobCodec", "Serializer", "SerializerSpec"]


@runtime_checkable
class Serializer(Protocol):
    """Encode and decode JSON-compatible mappings.

    Implementations must never execute code while decoding (no pickle), and must raise
    :class:`bananas.errors.SerializationError` for any bytes they cannot decode.
    """

    name: str

    def dumps(self, data: Mapping[str, Any]) -> bytes:
        """Encode ``data``; raise ``SerializationError`` for values the format cannot hold."""
        ...

    def loads(self, data: bytes) -> dict[str, Any]:
        """Decode bytes produced by :meth:`dumps`; raise ``SerializationError`` for anything else."""
        ...


@attrs.frozen
class SerializerSpec:
    """What a plugin registers: a name and a factory that builds the serializer."""

    name: str
    factory: Callable[[], Serializer] = attrs.field(eq=False)
    summary: str = ""


@attrs.define
class JobCodec:
    """Job ↔ bytes through a serializer; every failure becomes ``SerializationError``."""

    serializer: Serializer

    def encode(self, job: Job) -> bytes:
        try:
            return self.serializer.dumps(job.to_dict())
        except SerializationError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(f"cannot encode job: {exc}", job_id=job.id) from exc

    def decode(self, data: bytes) -> Job:
        fields = self.serializer.loads(data)
        if not isinstance(fields, dict):
            raise SerializationError("decoded job is not a mapping", data)
        try:
            return Job.from_dict(fields)
        except (TypeError, ValueError) as exc:
            job_id = fields.get("id") if isinstance(fields.get("id"), str) else None
            raise SerializationError(f"malformed job: {exc}", data, job_id) from exc
