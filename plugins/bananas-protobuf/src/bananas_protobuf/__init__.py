"""``serializer = "protobuf"``: a job as a ``bananas.v1.Job`` protobuf message (``job.proto``).

Every field of :data:`bananas.job.JOB_FIELDS` has a typed protobuf field; the payload is a UTF-8 JSON object in a
``bytes`` field, because ``google.protobuf.Struct`` keeps every number as a double (``1`` would come back as
``1.0`` and integers above 2**53 would lose digits). Job fields the schema has no field for (written by a newer
Bananas, see :attr:`bananas.job.Job.extra`) travel as a JSON object in ``Job.extra``; fields of a newer
``job.proto`` that this one does not number are kept as protobuf unknown fields, carried through the job as the
extra field ``"bananas.protobuf.unknown"`` (base64) and written back. A mapping that is not a job (a stored result,
say) is written as ``Body.json``. Decoding never executes code: protobuf's parser, then the kernel's JSON rules (no
NaN/Infinity) for the payload and the extra fields.

Every JSON part is written and read by the kernel's ``json`` serializer (``JsonSerializer``), so ``datetime``,
``date``, ``time``, ``UUID``, ``Decimal``, ``bytes`` and sets in a payload or a result travel as its tagged objects
and come back as the same types (``docs/HANDLERS.md``, "Values you can pass").
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from google.protobuf.message import DecodeError, EncodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from bananas.plugin_api import (
    JOB_FIELDS,
    JsonSerializer,
    Priority,
    Register,
    SerializationError,
    SerializerSpec,
    Status,
    hookimpl,
)
from bananas_protobuf import job_pb2

__all__ = ["UNKNOWN_FIELDS_KEY", "ProtobufSerializer", "job_pb2"]

__version__ = "0.1.0"

UNKNOWN_FIELDS_KEY = "bananas.protobuf.unknown"
"""The extra job field that carries, base64-encoded, the protobuf fields of a newer ``job.proto`` (numbers this
schema does not have) from the message they came in to the one written for a retry or a dead letter."""

_PROTO_FIELDS = tuple(field.name for field in job_pb2.Job.DESCRIPTOR.fields)
_OPTIONAL = tuple(
    field.name
    for field in job_pb2.Job.DESCRIPTOR.fields
    if field.has_presence and field.message_type is None and field.name != "extra"
)
_PRIORITY_TO_PB = {p.value: job_pb2.Priority.Value(f"PRIORITY_{p.name}") for p in Priority}
_PRIORITY_FROM_PB = {number: name for name, number in _PRIORITY_TO_PB.items()}
_STATUS_TO_PB = {s.value: job_pb2.Status.Value(f"STATUS_{s.name}") for s in Status}
_STATUS_FROM_PB = {number: name for name, number in _STATUS_TO_PB.items()}
_JSON = JsonSerializer()
_ENCODE = _JSON.dumps
_ORDER = tuple(field.name for field in JOB_FIELDS)
_KNOWN = frozenset(_ORDER)
_TEXT = frozenset({"queue", "last_error", "traceback"})


if frozenset(_PROTO_FIELDS) != _KNOWN | {"extra"}:  # pragma: no cover - guards job.proto against drifting
    raise ImportError(f"job.proto fields {sorted(_PROTO_FIELDS)} do not match bananas.job.JOB_FIELDS + extra")


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        return _JSON.loads(raw)
    except SerializationError as exc:
        raise ValueError(f"{what}: {exc.reason}") from None


class ProtobufSerializer:
    """Jobs (every field of ``JOB_FIELDS``, and any extra ones) as ``bananas.v1.Body{job}``; any other mapping as
    ``bananas.v1.Body{json}``."""

    name = "protobuf"

    def dumps(self, data: Mapping[str, Any]) -> bytes:
        try:
            if data.keys() >= _KNOWN:
                try:
                    return self._job(data).SerializeToString()
                except (TypeError, ValueError, KeyError, EncodeError, DecodeError, binascii.Error, SerializationError):
                    pass  # job-shaped but not a job's types: keep it exact as JSON below
            return job_pb2.Body(json=_ENCODE(data)).SerializeToString()
        except SerializationError as exc:
            raise SerializationError(f"not protobuf-serializable: {exc.reason}") from exc
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
            "payload": _ENCODE(payload),
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
        if len(data) == len(_ORDER):
            return job_pb2.Body(job=job_pb2.Job(**fields))
        extra = {key: value for key, value in data.items() if key not in _KNOWN}
        unknown = extra.pop(UNKNOWN_FIELDS_KEY, None)
        if extra:
            fields["extra"] = _ENCODE(extra)
        body = job_pb2.Body(job=job_pb2.Job(**fields))
        if unknown is not None:
            if not isinstance(unknown, str):
                raise TypeError(f"{UNKNOWN_FIELDS_KEY} is not a base64 string")
            raw = base64.b64decode(unknown, validate=True)
            if job_pb2.Job.FromString(raw).ListFields():  # only numbers this schema does not know, never a known one
                raise ValueError(f"{UNKNOWN_FIELDS_KEY} holds fields job.proto knows")
            body.job.MergeFromString(raw)
        return body

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
        ordered = {name: fields[name] for name in _ORDER}
        if job.extra:
            try:
                extra = _json_object(job.extra, "the extra fields")
            except (ValueError, RecursionError) as exc:
                raise SerializationError(f"invalid JSON in the extra fields: {exc}", data, job_id) from exc
            clash = sorted(_KNOWN.intersection(extra))
            if clash:
                raise SerializationError(f"extra fields {', '.join(clash)} clash with typed job fields", data, job_id)
            ordered.update(extra)
        if len(UnknownFieldSet(job)):  # fields of a newer job.proto: keep their bytes to write them back
            rest = job_pb2.Job()
            rest.CopyFrom(job)
            for name in _PROTO_FIELDS:
                rest.ClearField(name)
            ordered[UNKNOWN_FIELDS_KEY] = base64.b64encode(rest.SerializeToString()).decode("ascii")
        return ordered


@hookimpl
def bananas_register_serializers(register: Register[SerializerSpec]) -> None:
    register(
        SerializerSpec(name="protobuf", factory=ProtobufSerializer, summary="protobuf bananas.v1.Job (job.proto)")
    )
