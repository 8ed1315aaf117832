"""bananas-protobuf: the contract, the job message layout, and safe decoding."""

from __future__ import annotations

import pytest
from bananas_protobuf import UNKNOWN_FIELDS_KEY, ProtobufSerializer, job_pb2

from bananas.builtin.json_serializer import JsonSerializer
from bananas.errors import SerializationError
from bananas.job import Job, Priority, Status
from bananas.serializer import JobCodec, read_frame
from bananas.testing.serializers import SerializerConformance, worker_reencodes


class TestProtobufSerializer(SerializerConformance):
    factory = ProtobufSerializer


def test_a_job_is_written_as_a_typed_job_message() -> None:
    # Given a job with every kind of field
    job = Job(name="send", payload={"n": 2**62, "x": 1.0}, priority="high", timeout=5, headers={"trace": "t1"})
    # When it is serialized
    body = job_pb2.Body.FromString(ProtobufSerializer().dumps(job.to_dict()))
    # Then the fields are typed protobuf fields and the payload is JSON
    assert body.WhichOneof("kind") == "job"
    assert body.job.name == "send" and body.job.priority == job_pb2.PRIORITY_HIGH
    assert body.job.status == job_pb2.STATUS_PENDING and body.job.timeout == 5.0
    assert body.job.payload == b'{"n":4611686018427387904,"x":1.0}'
    assert dict(body.job.headers) == {"trace": "t1"} and not body.job.HasField("queue")


def test_other_mappings_are_written_as_json() -> None:
    result = {"ok": True, "value": [1, "two", None]}
    body = job_pb2.Body.FromString(ProtobufSerializer().dumps(result))
    assert body.WhichOneof("kind") == "json"
    assert ProtobufSerializer().loads(body.SerializeToString()) == result


def test_ints_and_floats_stay_distinct_in_the_payload() -> None:
    # Struct would turn 1 into 1.0 and lose digits above 2**53; the JSON payload does not
    job = Job(name="n", payload={"one": 1, "big": 2**53 + 1, "half": 0.5})
    decoded = JobCodec(ProtobufSerializer()).decode(JobCodec(ProtobufSerializer()).encode(job))
    assert decoded.payload == {"one": 1, "big": 2**53 + 1, "half": 0.5}
    assert type(decoded.payload["one"]) is int


def test_a_corrupt_payload_reports_the_job_id_it_could_read() -> None:
    # Given a job message whose payload is not JSON
    message = job_pb2.Body(job=job_pb2.Job(id="job-7", name="x", payload=b"{not json"))
    # When decoded, then the error carries the id
    with pytest.raises(SerializationError) as err:
        ProtobufSerializer().loads(message.SerializeToString())
    assert err.value.job_id == "job-7" and "invalid JSON payload" in err.value.reason


def test_unknown_enum_values_are_refused() -> None:
    message = job_pb2.Body(job=job_pb2.Job(id="j", name="x", payload=b"{}", priority=9, status=1))
    with pytest.raises(SerializationError, match="unknown priority 9"):
        ProtobufSerializer().loads(message.SerializeToString())


def test_an_empty_message_is_refused() -> None:
    with pytest.raises(SerializationError, match="empty protobuf body"):
        ProtobufSerializer().loads(b"")


def test_every_priority_and_status_maps_both_ways() -> None:
    serializer = ProtobufSerializer()
    for priority in Priority:
        for status in Status:
            job = Job(name="x", priority=priority, status=status)
            assert Job.from_dict(serializer.loads(serializer.dumps(job.to_dict()))) == job


def test_job_shaped_mappings_with_other_types_round_trip_exactly() -> None:
    # A mapping with exactly the job's keys but an int timestamp cannot be a typed Job message without turning
    # the int into a float; it goes as JSON instead and comes back identical.
    fields = Job(name="x").to_dict() | {"created_at": 5}
    decoded = ProtobufSerializer().loads(ProtobufSerializer().dumps(fields))
    assert decoded == fields and type(decoded["created_at"]) is int


# -- evolving the job format ---------------------------------------------------------------------------------------
NEWER_FIELD = b"\x9a\x01\x07eu-west"
"""Field 19 (length-delimited, "eu-west"): a typed field of a newer job.proto that this schema does not number."""


def test_unknown_job_fields_go_in_the_extra_json_of_a_typed_message() -> None:
    # Given a job read from a newer producer, with fields this version does not know
    job = Job(name="send", payload={"n": 1}, extra={"region": "eu", "cost": {"cpu": 2, "ratio": 0.5}})
    # When it is serialized
    body = job_pb2.Body.FromString(ProtobufSerializer().dumps(job.to_dict()))
    # Then it is still a typed job message, the unknown fields a JSON object in Job.extra
    assert body.WhichOneof("kind") == "job" and body.job.name == "send"
    assert body.job.extra == b'{"region":"eu","cost":{"cpu":2,"ratio":0.5}}'
    decoded = JobCodec(ProtobufSerializer()).decode(JobCodec(ProtobufSerializer()).encode(job))
    assert decoded == job and type(decoded.extra["cost"]["cpu"]) is int


def test_a_job_without_unknown_fields_has_an_empty_extra_field() -> None:
    body = job_pb2.Body.FromString(ProtobufSerializer().dumps(Job(name="x").to_dict()))
    assert body.job.extra == b"" and not body.job.HasField("queue")


def test_a_message_written_before_the_extra_field_existed_still_reads() -> None:
    # Given the exact bytes bananas-protobuf 0.1 (job.proto without field 18) wrote for a job
    old = b'\n.\n\x06job-01\x12\x04send\x1a\x07{"n":1} \x01(\x018\x03b\x06\n\x01t\x12\x011i\x00\x00\x00@\xfcT\xd9A'
    # When this version reads them, then it is that job, with no extra fields
    job = Job.from_dict(ProtobufSerializer().loads(old))
    assert (job.id, job.name, job.payload, job.priority, job.max_retries) == ("job-01", "send", {"n": 1}, "high", 3)
    assert job.headers == {"t": "1"} and job.created_at == 1700000000.0 and job.extra == {}
    # And what this version writes for that job is the same bytes
    assert ProtobufSerializer().dumps(job.to_dict()) == old


def newer_message(**fields: object) -> bytes:
    """A body from a producer with a newer job.proto: a typed field number 19 this schema does not have."""
    body = job_pb2.Body(job=job_pb2.Job(id="job-9", name="send", payload=b'{"n":1}', priority=2, status=1, **fields))
    body.job.MergeFromString(NEWER_FIELD)
    return body.SerializeToString()


def test_fields_of_a_newer_job_proto_survive_a_retry_and_the_dead_letter() -> None:
    # Given a body from a producer whose job.proto has a typed field this one does not number
    codec = JobCodec(ProtobufSerializer())
    body = codec.dumps(ProtobufSerializer().loads(newer_message(extra=b'{"region":"eu"}')))
    # When this version decodes it, then the job runs with the field kept as raw protobuf, next to the JSON extras
    job = codec.decode(body)
    assert job.name == "send" and job.extra == {"region": "eu", UNKNOWN_FIELDS_KEY: "mgEHZXUtd2VzdA=="}
    # And every re-encode (two retries, the dead letter) writes the field back as the same protobuf field
    statuses = []
    for written in worker_reencodes(codec, body):
        message = job_pb2.Body.FromString(written[read_frame(written).body_offset :])
        assert message.job.SerializeToString().endswith(NEWER_FIELD)
        assert message.job.extra == b'{"region":"eu"}'
        statuses.append(message.job.status)
    assert statuses == [job_pb2.STATUS_RETRYING, job_pb2.STATUS_RETRYING, job_pb2.STATUS_DEAD]


def test_newer_protobuf_fields_survive_a_detour_through_another_serializer() -> None:
    # Given a job with a newer protobuf field, re-encoded by a worker configured with JSON (a rolling migration)
    job = Job.from_dict(ProtobufSerializer().loads(newer_message()))
    as_json = JsonSerializer().loads(JsonSerializer().dumps(job.to_dict()))
    # When a protobuf worker writes it again, then the field is back as protobuf field 19
    message = job_pb2.Body.FromString(ProtobufSerializer().dumps(Job.from_dict(as_json).to_dict()))
    assert message.job.SerializeToString().endswith(NEWER_FIELD) and message.job.extra == b""


def test_raw_unknown_fields_may_not_overwrite_typed_ones() -> None:
    # Given an extra that claims to be unknown protobuf fields but holds field 2 (name)
    fields = Job(name="x").to_dict() | {UNKNOWN_FIELDS_KEY: "EgVldmlsIQ=="}
    # When serialized, then it is not merged into the typed message: the mapping goes as exact JSON instead
    body = job_pb2.Body.FromString(ProtobufSerializer().dumps(fields))
    assert body.WhichOneof("kind") == "json"
    assert ProtobufSerializer().loads(body.SerializeToString()) == fields


def test_extra_json_that_names_a_typed_field_is_refused() -> None:
    job = job_pb2.Job(id="j-3", name="x", payload=b"{}", priority=2, status=1, extra=b'{"name":1}')
    message = job_pb2.Body(job=job)
    with pytest.raises(SerializationError, match="extra fields name clash with typed job fields") as err:
        ProtobufSerializer().loads(message.SerializeToString())
    assert err.value.job_id == "j-3"


@pytest.mark.parametrize("extra", [b"[1]", b"{bad", b'{"x":NaN}'], ids=["not-an-object", "not-json", "nan"])
def test_invalid_extra_json_is_refused(extra: bytes) -> None:
    message = job_pb2.Body(job=job_pb2.Job(id="j-4", name="x", payload=b"{}", priority=2, status=1, extra=extra))
    with pytest.raises(SerializationError, match="extra fields"):
        ProtobufSerializer().loads(message.SerializeToString())
