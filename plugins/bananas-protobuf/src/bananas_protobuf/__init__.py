"""``serializer = "protobuf"``: a job as a ``bananas.v1.Job`` protobuf message (``job.proto``).

Every field of :class:`bananas.job.Job` has a typed protobuf field; the payload is a UTF-8 JSON object in a
``bytes`` field, because ``google.protobuf.Struct`` keeps every number as a double (``1`` would come back as
``1.0`` and integers above 2**53 would lose digits). A mapping that is not a job's complete field set (a stored
result, say) is written as ``Body.json``. Decoding never executes code: protobuf's parser, then the kernel's JSON
rules (no NaN/Infinity) for the payload.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, NoReturn

import attrs
from google.protobuf.message import DecodeError, EncodeError

from bananas import hookimpl
from bananas.errors import SerializationError
from bananas.job import Job, Priority, Status
from bananas.registry import Register
from bananas.serializer import SerializerSpec
from bananas_protobuf import job_pb2

__all__ = ["ProtobufSerializer", "job_pb2"]

__version__ = "0.1.0"

_JOB_FIELDS = frozenset(field.name for field in job_pb2.Job.DESCRIPTOR.fields)
_OPTIONAL = tuple(
    field.name for field in job_pb2.Job.DESCRIPTOR.fields if field.has_presence and field.message_type is None
)
_PRIORITY_TO_PB = {p.value: job_pb2.Priority.Value(f"PRIORITY_{p.name}") for p in Priority}
_PRIORITY_FROM_PB = {number: name for name, number in _PRIORITY_TO_PB.items()}
_STATUS_TO_PB = {s.value: job_pb2.Status.Value(f"STATUS_{s.name}") for s in Status}
_STATUS_FROM_PB = {number: name for name, number in _STATUS_TO_PB.items()}
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_ORDER = tuple(field.name for field in attrs.fields(Job))
_TEXT = frozenset({"queue", "last_error", "traceback"})


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON-compatible")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


_DECODE = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite).decode

if _JOB_FIELDS != frozenset(_ORDER):  # pragma: no cover - guards job.proto against drifting from bananas.job.Job
    raise ImportError(f"job.proto fields {sorted(_JOB_FIELDS)} do not match bananas.job.Job {sorted(_ORDER)}")


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    value = _DECODE(raw.decode("utf-8"))
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object but {type(value).__name__}")
    return value


class ProtobufSerializer:
    """Jobs as ``bananas.v1.Body{job}``; any other mapping as ``bananas.v1.Body{json}``."""

    name = "protobuf"

    def dumps(self, data: Mapping[str, Any]) -> bytes:
        try:
            if data.keys() == _JOB_FIELDS:
                try:
                    return self._job(data).SerializeToString()
                except (TypeError, ValueError, KeyError, EncodeError):
                    pass  # job-shaped but not a job's types: keep it exact as JSON below
            return job_pb2.Body(json=_ENCODE(data).encode("utf-8")).SerializeToString()
        except (TypeError, ValueError, OverflowError, RecursionError, EncodeError) as exc:
            raise SerializationError(f"not protobuf-serializable: {exc}") from exc

    def loads(self, data: bytes) -> dict[str, Any]:
        try:
            body = job_pb2.Body.FromString(data)
        except (DecodeError, ValueError, TypeError, RecursionError) as exc:
            raise SerializationError(f"invalid protobuf: {exc}", data) from exc
        kind = body.WhichOneof("kind")
        if kind == "job":
            return self._fields(body.job, data)
        if kind == "json":
            try:
                return _json_object(body.json, "the body")
            except (ValueError, RecursionError) as exc:
                raise SerializationError(f"invalid JSON in a protobuf body: {exc}", data) from exc
        raise SerializationError("empty protobuf body: neither a job nor a JSON mapping", data)

    # -- job <-> message ------------------------------------------------------------------------------------
    @staticmethod
    def _job(data: Mapping[str, Any]) -> job_pb2.Body:
        payload = data["payload"]
        if not isinstance(payload, Mapping):
            raise TypeError("payload is not a mapping")
        fields: dict[str, Any] = {
            "id": data["id"],
            "name": data["name"],
            "payload": _ENCODE(payload).encode("utf-8"),
            "priority": _PRIORITY_TO_PB[data["priority"]],
            "status": _STATUS_TO_PB[data["status"]],
            "attempts": data["attempts"],
            "max_retries": data["max_retries"],
            "headers": data["headers"],
        }
        for name in ("attempts", "max_retries"):
            if type(fields[name]) is not int:
                raise TypeError(f"{name} is not an int")
        for name in _OPTIONAL:
            value = data[name]
            if value is None:
                continue
            if type(value) is not (str if name in _TEXT else float):  # anything else goes as exact JSON
                raise TypeError(f"{name} has type {type(value).__name__}")
            fields[name] = value
        return job_pb2.Body(job=job_pb2.Job(**fields))

    @staticmethod
    def _fields(job: job_pb2.Job, data: bytes) -> dict[str, Any]:
        job_id = job.id or None
        try:
            payload = _json_object(job.payload, "the payload")
        except (ValueError, RecursionError) as exc:
            raise SerializationError(f"invalid JSON payload: {exc}", data, job_id) from exc
        priority = _PRIORITY_FROM_PB.get(job.priority)
        status = _STATUS_FROM_PB.get(job.status)
        if priority is None or status is None:
            raise SerializationError(f"unknown priority {job.priority} or status {job.status}", data, job_id)
        fields: dict[str, Any] = {
            "name": job.name,
            "payload": payload,
            "id": job.id,
            "priority": priority,
            "status": status,
            "attempts": job.attempts,
            "max_retries": job.max_retries,
            "headers": dict(job.headers),
        }
        for name in _OPTIONAL:
            fields[name] = getattr(job, name) if job.HasField(name) else None
        return {name: fields[name] for name in _ORDER}


@hookimpl
def bananas_register_serializers(register: Register[SerializerSpec]) -> None:
    register(
        SerializerSpec(name="protobuf", factory=ProtobufSerializer, summary="protobuf bananas.v1.Job (job.proto)")
    )
