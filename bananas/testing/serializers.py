"""Serializer conformance: hypothesis round trips and fuzzing that every serializer plugin runs.

A serializer package proves it keeps the :class:`bananas.serializer.Serializer` contract with one class::

    from bananas.testing.serializers import SerializerConformance

    class TestMySerializer(SerializerConformance):
        factory = MySerializer          # the class your plugin registers (plugins/bananas-msgpack/tests has one)

The strategies (:data:`json_values`, :data:`payloads`, :data:`jobs`, :data:`extra_fields`, :data:`newer_jobs`, and
:data:`typed_values` / :data:`typed_payloads` / :data:`tag_lookalikes` for the values beyond JSON) are public for a
package's own properties. The class checks that every value of "Values you can pass" (``docs/HANDLERS.md``: aware
``datetime``, ``date``, ``time``, ``UUID``, ``Decimal``, ``bytes``, tuples and sets as lists), nested anywhere in a
payload, comes back as the same type, that user dicts which look like the JSON tags come back as they were, and that
a naive ``datetime`` is refused. Besides the mapping contract, the class checks the job format's evolution
rules (``docs/SERIALIZERS.md``, "Evolving the job format"): a job written by a newer producer, with fields this
version does not know, decodes, and every re-encode (a retry, a dead letter) writes those fields back unchanged; a
job written by an older producer, without some optional fields, decodes with their defaults.
Needs the ``testing`` extra (pytest, hypothesis).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bananas.errors import SerializationError
from bananas.job import JOB_FIELDS, REQUIRED_FIELDS, Job, Priority, Status
from bananas.serializer import JobCodec, Serializer, pack_frame
from bananas.values import JSON_TAG

__all__ = [
    "SerializerConformance",
    "assert_same",
    "extra_fields",
    "jobs",
    "json_values",
    "newer_jobs",
    "payloads",
    "tag_lookalikes",
    "typed_payloads",
    "typed_values",
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

_offsets = st.just(UTC) | st.integers(-23 * 60 - 59, 23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
typed_scalars = (
    st.datetimes(timezones=_offsets)
    | st.dates()
    | st.times(timezones=st.none() | _offsets)
    | st.uuids()
    | st.decimals(allow_nan=False, min_value=-(10**30), max_value=10**30)
    | st.sampled_from([Decimal("Infinity"), Decimal("-0"), Decimal("1.10"), Decimal("1E+5"), Decimal("-1E-30")])
    | st.binary(max_size=64)
)
"""The scalars beyond JSON: aware datetimes (fixed offsets), dates, times, UUIDs, Decimals (every digit), bytes."""
_hashable = INT64 | st.text(max_size=8) | st.uuids() | st.dates()
_tag_keys = st.sampled_from([JSON_TAG, "v", "dict", "datetime"]) | st.text(max_size=8)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.frozensets(_hashable, max_size=4)
        | st.sets(_hashable, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
        | st.builds(lambda tag, rest: {JSON_TAG: tag, **rest}, children | st.sampled_from(["datetime", "dict", "x"]),
                    st.dictionaries(_tag_keys, children, max_size=3))
    )


typed_values = st.recursive(json_scalars | typed_scalars, _containers, max_leaves=20)
"""Any value of "Values you can pass", nested in lists, tuples, sets, dicts and dicts that hold the tag key."""
typed_payloads = st.dictionaries(st.text(max_size=10), typed_values, max_size=6)
"""A job payload with typed values anywhere."""
tag_lookalikes = st.builds(
    lambda tag, rest: {**rest, JSON_TAG: tag},
    st.sampled_from(["datetime", "dict", "uuid", "bytes", "nope"]) | json_values,
    st.dictionaries(_tag_keys, json_values | typed_scalars, max_size=3),
)
"""User dicts that hold the JSON tag key, shaped like a tag or not: they must come back as they were."""

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
    """Equality that also checks types, so ``1`` vs ``1.0`` vs ``True`` and list vs tuple differences show.

    What the serializers carry as another type is expected as that type: tuples and sets (in their iteration
    order) as lists, ``bytearray`` and ``memoryview`` as ``bytes``. Datetimes and times must also keep their UTC
    offset, Decimals every digit (``Decimal("1.10")`` is not ``Decimal("1.1")`` here)."""
    if isinstance(expected, tuple | set | frozenset):
        expected = list(expected)
    elif isinstance(expected, bytearray | memoryview):
        expected = bytes(expected)
    assert type(actual) is type(expected), f"{path}: {actual!r} ({type(actual).__name__}) != {expected!r}"
    if isinstance(expected, datetime | time):
        assert actual.utcoffset() == expected.utcoffset(), f"{path}: offset of {actual!r} != {expected!r}"
    if isinstance(expected, Decimal):
        assert str(actual) == str(expected), f"{path}: {actual!r} != {expected!r}"
        return
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

    @pytest.mark.parametrize("value", [object(), 1j, [object()]], ids=["object", "complex", "nested-object"])
    def test_values_that_are_not_json_compatible_raise_serialization_error(self, value: object) -> None:
        with pytest.raises(SerializationError):
            self.make().dumps({"value": value})

    # -- values you can pass ----------------------------------------------------------------------------------
    @_SETTINGS
    @given(data=typed_payloads)
    def test_typed_values_round_trip_as_the_same_types(self, data: dict[str, Any]) -> None:
        # Given a mapping with datetimes, dates, times, UUIDs, Decimals, bytes, tuples and sets nested anywhere
        serializer = self.make()
        # When it is encoded and decoded
        decoded = serializer.loads(serializer.dumps(data))
        # Then every value comes back as the same Python type (tuples and sets as lists), offsets and digits kept
        assert_same(decoded, data)

    @_SETTINGS
    @given(job=jobs, payload=typed_payloads, result=typed_values)
    def test_typed_payloads_and_results_round_trip_through_the_codec(self, job: Job, payload: Any, result: Any) -> None:
        # Given a job whose payload holds typed values, and a handler's typed return value
        codec = JobCodec(self.make())
        job = attrs.evolve(job, payload=payload)
        # When the job goes through the frame, and the result is stored as the worker stores it
        decoded = codec.decode(codec.encode(job))
        stored = codec.loads(codec.dumps({"ok": True, "value": result}))
        # Then the handler gets the same values, and the client gets the same result
        assert_same(decoded.payload, payload)
        assert_same(stored["value"], result)

    @_SETTINGS
    @given(data=st.dictionaries(st.text(max_size=8), tag_lookalikes | st.lists(tag_lookalikes, max_size=3),
                                min_size=1, max_size=4))
    def test_user_dicts_that_look_like_tags_come_back_as_they_were(self, data: dict[str, Any]) -> None:
        # Given user dicts that hold the JSON tag key (shaped like a tag or not), alone or in lists
        serializer = self.make()
        # When they are encoded and decoded, then they are the same dicts, never read as tagged values
        assert_same(serializer.loads(serializer.dumps(data)), data)

    @pytest.mark.parametrize(
        "data",
        [{"when": datetime(2024, 1, 1)}, {"nested": [{"when": datetime(2024, 1, 1, 12, 30)}]}],
        ids=["top-level", "nested"],
    )
    def test_a_naive_datetime_is_refused(self, data: dict[str, Any]) -> None:
        with pytest.raises(SerializationError, match="naive datetime"):
            self.make().dumps(data)

    def test_each_kind_round_trips_alone(self) -> None:
        values = {
            "utc": datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
            "offset": datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            "date": date(2024, 5, 1),
            "time": time(23, 59, 59, 999999),
            "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
            "decimal": Decimal("-1234567890.123456789012345678901234567890"),
            "bytes": b"\x00\xff\x80 bytes",
            "tuple": (1, "a"),
            "set": {3},
            "empty": [(), set(), b""],
        }
        serializer = self.make()
        assert_same(serializer.loads(serializer.dumps(values)), values)

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
