"""bananas-protobuf: the contract, the job message layout, and safe decoding."""

from __future__ import annotations

import pytest
from bananas_protobuf import ProtobufSerializer, job_pb2

from bananas.errors import SerializationError
from bananas.job import Job, Priority, Status
from bananas.serializer import JobCodec
from bananas.testing.serializers import SerializerConformance


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
