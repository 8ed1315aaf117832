"""Serializer conformance: hypothesis round trips and fuzzing that every serializer plugin runs.

A serializer package proves it keeps the :class:`bananas.serializer.Serializer` contract with one class::

    from bananas.testing.serializers import SerializerConformance

    class TestMySerializer(SerializerConformance):
        factory = MySerializer          # the class your plugin registers (plugins/bananas-msgpack/tests has one)

The strategies (:data:`json_values`, :data:`payloads`, :data:`jobs`, :data:`extra_fields`, :data:`newer_jobs`) are
public for a package's own properties. Besides the mapping contract, the class checks the job format's evolution
rules (``docs/SERIALIZERS.md``, "Evolving the job format"): a job written by a newer producer, with fields this
version does not know, decodes, and every re-encode (a retry, a dead letter) writes those fields back unchanged; a
job written by an older producer, without some optional fields, decodes with their defaults.
Needs the ``testing`` extra (pytest, hypothesis).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bananas.errors import SerializationError
from bananas.job import JOB_FIELDS, REQUIRED_FIELDS, Job, Priority, Status
from bananas.serializer import JobCodec, Serializer, pack_frame

__all__ = [
    "SerializerConformance",
    "assert_same",
    "extra_fields",
    "jobs",
    "json_values",
    "newer_jobs",
    "payloads",
    "worker_reencodes",
]

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
"""Integers every serializer must keep exactly (protobuf and orjson stop at 64 bits)."""

json_scalars = (
    st.none()
    | st.booleans()
    | INT64
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.sampled_from(["", "é", "日本語", "🍌", "\u0000", "a\nb"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=25,
)
"""Any JSON-compatible value: unicode, 64-bit ints, floats, nested lists and maps, empty containers."""
payloads = st.dictionaries(st.text(), json_values, max_size=6)
"""A job payload: a mapping of keyword arguments (keys are any strings, values any JSON value)."""

_times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
_maybe_text = st.none() | st.text()
jobs = st.builds(
    Job,
    name=st.text(min_size=1),
    payload=payloads,
    id=st.text(min_size=1),
    priority=st.sampled_from(Priority),
    status=st.sampled_from(Status),
    attempts=st.integers(min_value=0, max_value=2**32),
    max_retries=st.integers(min_value=0, max_value=2**32),
    timeout=st.none() | st.floats(min_value=0.001, max_value=1e9),
    queue=_maybe_text,
    last_error=_maybe_text,
    traceback=_maybe_text,
    headers=st.dictionaries(st.text(), st.text(), max_size=4),
    created_at=_times,
    enqueued_at=st.none() | _times,
    scheduled_at=st.none() | _times,
    started_at=st.none() | _times,
    finished_at=st.none() | _times,
)
"""Jobs with every field set to something (optional ones sometimes ``None``)."""
_KNOWN = frozenset(f.name for f in JOB_FIELDS)
extra_fields = st.dictionaries(
    st.text(min_size=1).filter(lambda name: name not in _KNOWN) | st.sampled_from(["region", "extra", "é", "🍌"]),
    json_values,
    min_size=1,
    max_size=4,
)
"""Fields a newer producer adds to a job: names this version does not know, any JSON value."""
newer_jobs = st.builds(lambda job, extra: attrs.evolve(job, extra=extra), jobs, extra_fields)
"""Jobs as this version reads them from a newer producer: every field set, and some :data:`extra_fields`."""
_set = object.__setattr__


def worker_reencodes(codec: JobCodec, body: bytes) -> list[bytes]:
    """What a worker writes back for the job in ``body``: it runs and fails twice (two retries), then is
    dead-lettered; the bodies of the two retries and of the dead letter, in order. Mimics the worker's hot path: the
    decoded job is changed in place (attrs validators skipped, as the worker does) and re-encoded."""
    written: list[bytes] = []
    for attempt in range(3):
        job = codec.decode(body)
        _set(job, "attempts", job.attempts + 1)
        _set(job, "status", Status.RUNNING)
        _set(job, "started_at", 1_700_000_000.0 + attempt)
        job.last_error = f"RuntimeError: attempt {attempt + 1}"
        job.traceback = "Traceback (most recent call last): ..."
        if attempt < 2:
            _set(job, "status", Status.RETRYING)
            _set(job, "scheduled_at", 1_700_000_100.0 + attempt)
        else:
            _set(job, "status", Status.DEAD)
            _set(job, "finished_at", 1_700_000_200.0)
        body = codec.encode(job)
        written.append(body)
    return written


def assert_same(actual: Any, expected: Any, path: str = "$") -> None:
    """Equality that also checks types, so ``1`` vs ``1.0`` vs ``True`` and list vs tuple differences show."""
    if isinstance(expected, tuple):
        expected = list(expected)
    assert type(actual) is type(expected), f"{path}: {actual!r} ({type(actual).__name__}) != {expected!r}"
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        for key, value in expected.items():
            assert_same(actual[key], value, f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{path}: length {len(actual)} != {len(expected)}"
        for index, (left, right) in enumerate(zip(actual, expected, strict=True)):
            assert_same(left, right, f"{path}[{index}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors]
)


class SerializerConformance:
    """Checks a serializer against the :class:`~bananas.serializer.Serializer` contract. Subclass it and set
    :attr:`factory`; set :attr:`exact_types` to ``False`` only for a format that cannot keep ``int`` vs ``float``.
    """

    factory: ClassVar[Callable[[], Serializer]]
    exact_types: ClassVar[bool] = True

    def make(self) -> Serializer:
        return type(self).factory()

    def check(self, actual: Any, expected: Any) -> None:
        if self.exact_types:
            assert_same(actual, expected)
        else:
            assert actual == expected

    def test_satisfies_the_protocol_and_has_a_frame_name(self) -> None:
        serializer = self.make()
        assert isinstance(serializer, Serializer)
        assert pack_frame(serializer.name, b"")[:2] == b"BN"

    @_SETTINGS
    @given(data=payloads)
    def test_any_json_mapping_round_trips(self, data: dict[str, Any]) -> None:
        # Given a serializer and any JSON-compatible mapping
        serializer = self.make()
        # When it is encoded and decoded
        encoded = serializer.dumps(data)
        # Then the bytes come back as an equal mapping of the same types
        assert isinstance(encoded, bytes)
        self.check(serializer.loads(encoded), data)

    @_SETTINGS
    @given(job=jobs)
    def test_every_job_field_round_trips(self, job: Job) -> None:
        serializer = self.make()
        fields = job.to_dict()
        decoded = serializer.loads(serializer.dumps(fields))
        assert decoded == fields
        assert Job.from_dict(decoded) == job

    @_SETTINGS
    @given(job=jobs)
    def test_jobs_round_trip_through_the_codec_frame(self, job: Job) -> None:
        codec = JobCodec(self.make())
        body = codec.encode(job)
        assert body.startswith(b"BN\x01\x00")
        assert codec.decode(body) == job

    @pytest.mark.parametrize(
        "data",
        [{}, {"": ""}, {"empty": [], "map": {}, "none": None}, {"big": 2**63 - 1, "small": -(2**63)}],
        ids=["empty", "empty-key", "empty-values", "int64-bounds"],
    )
    def test_edge_mappings_round_trip(self, data: dict[str, Any]) -> None:
        serializer = self.make()
        self.check(serializer.loads(serializer.dumps(data)), data)

    @pytest.mark.parametrize("value", [object(), {1, 2}, 1j], ids=["object", "set", "complex"])
    def test_values_that_are_not_json_compatible_raise_serialization_error(self, value: object) -> None:
        with pytest.raises(SerializationError):
            self.make().dumps({"value": value})

    @_SETTINGS
    @given(garbage=st.binary(max_size=512))
    def test_garbage_bytes_raise_only_serialization_error(self, garbage: bytes) -> None:
        # Given any bytes at all
        serializer = self.make()
        # When they are decoded
        try:
            decoded = serializer.loads(garbage)
        except SerializationError:
            return
        # Then either SerializationError was raised or the result is a mapping
        assert isinstance(decoded, dict)

    @_SETTINGS
    @given(job=jobs, data=st.data())
    def test_truncated_or_flipped_bodies_raise_only_serialization_error(self, job: Job, data: st.DataObject) -> None:
        # Given a valid body, cut short or with one byte changed
        codec = JobCodec(self.make())
        body = bytearray(codec.encode(job))
        if data.draw(st.booleans(), label="truncate"):
            body = body[: data.draw(st.integers(0, len(body) - 1), label="cut")]
        else:
            index = data.draw(st.integers(0, len(body) - 1), label="index")
            body[index] ^= data.draw(st.integers(1, 255), label="xor")
        # When it is decoded, then it is a job or SerializationError, never anything else
        try:
            assert isinstance(codec.decode(bytes(body)), Job)
        except SerializationError:
            pass

    @_SETTINGS
    @given(garbage=st.binary(max_size=512))
    def test_garbage_inside_a_valid_frame_raises_only_serialization_error(self, garbage: bytes) -> None:
        codec = JobCodec(self.make())
        try:
            assert isinstance(codec.decode(pack_frame(codec.serializer.name, garbage)), Job)
        except SerializationError:
            pass

    # -- evolving the job format ------------------------------------------------------------------------------
    @_SETTINGS
    @given(job=newer_jobs)
    def test_unknown_job_fields_round_trip(self, job: Job) -> None:
        # Given the fields of a job from a newer producer: every field this version knows, and some it does not
        serializer = self.make()
        fields = job.to_dict()
        assert set(job.extra) <= set(fields)
        # When the serializer writes and reads them
        decoded = serializer.loads(serializer.dumps(fields))
        # Then every field comes back, the unknown ones with their exact values, and they are the job's extra
        assert decoded == fields
        for name, value in job.extra.items():
            self.check(decoded[name], value)
        assert Job.from_dict(decoded) == job

    @_SETTINGS
    @given(job=newer_jobs)
    def test_a_newer_producers_job_keeps_its_unknown_fields_through_retries_and_the_dead_letter(self, job: Job) -> None:
        # Given a body a newer producer wrote: the job's fields and some this version does not know
        codec = JobCodec(self.make())
        body = codec.dumps(job.to_dict())
        # When this version decodes it
        decoded = codec.decode(body)
        # Then the unknown fields are the job's extra
        assert decoded == job and decoded.extra == job.extra
        # And a worker that runs it, retries it twice and dead-letters it writes them back every time, unchanged
        for written in worker_reencodes(codec, body):
            fields = codec.loads(written)
            for name, value in job.extra.items():
                self.check(fields[name], value)
            again = codec.decode(written)
            assert again.extra == job.extra
        assert again.status is Status.DEAD and again.attempts == job.attempts + 3

    @_SETTINGS
    @given(job=jobs, data=st.data())
    def test_an_older_producers_job_without_optional_fields_decodes_with_defaults(
        self, job: Job, data: st.DataObject
    ) -> None:
        # Given a body without some optional fields (an older producer did not know them)
        optional = [f for f in JOB_FIELDS if not f.required]
        dropped = data.draw(st.sets(st.sampled_from([f.name for f in optional]), min_size=1), label="dropped")
        fields = {name: value for name, value in job.to_dict().items() if name not in dropped}
        codec = JobCodec(self.make())
        # When it is decoded
        decoded = codec.decode(codec.dumps(fields))
        # Then the fields it carries are kept and the missing ones take the model's defaults
        written = decoded.to_dict()
        for name, value in fields.items():
            assert written[name] == value, name
        for f in optional:
            if f.name in dropped and f.name != "created_at" and not isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
                assert getattr(decoded, f.name) == f.default, f.name
        assert decoded.extra == {}

    @pytest.mark.parametrize("missing", REQUIRED_FIELDS)
    def test_a_job_without_a_required_field_is_a_serialization_error(self, missing: str) -> None:
        codec = JobCodec(self.make())
        fields = {k: v for k, v in Job(name="x", id="job-1").to_dict().items() if k != missing}
        with pytest.raises(SerializationError, match=f"missing required job field\\(s\\): {missing}"):
            codec.decode(codec.dumps(fields))

    def test_an_unknown_field_name_that_is_not_a_string_is_refused_clearly(self) -> None:
        # Formats that can write a non-string map key (msgpack's bytes) must not slip it into a job
        codec = JobCodec(self.make())
        try:
            body = codec.dumps(Job(name="x").to_dict() | {b"region": "eu"})
        except SerializationError:
            return  # the format cannot even write it
        with pytest.raises(SerializationError, match="job field names must be strings|keys? must be str"):
            codec.decode(body)
