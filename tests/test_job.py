"""The job model validates on construction and round-trips through to_dict/from_dict, keeping fields it does not
know (written by a newer producer) and filling in optional ones an older producer did not write."""

from __future__ import annotations

import re
import time
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bananas.job import JOB_FIELDS, REQUIRED_FIELDS, Job, Priority, Status
from bananas.testing.serializers import extra_fields, jobs


def test_defaults_and_round_trip() -> None:
    # Given a job with every kind of field set
    job = Job(name="send_email", payload={"to": "a@b.c"}, priority="HIGH", timeout="30s", headers={"trace": 1})
    # When it goes through a dict and back
    again = Job.from_dict(job.to_dict())
    # Then nothing changed and the strings became enums/seconds
    assert again == job
    assert job.priority is Priority.HIGH and job.status is Status.PENDING
    assert job.timeout == 30.0 and job.headers == {"trace": "1"} and len(job.id) == 32


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"priority": "urgent"}, "priority: 'urgent' is not one of high, normal, low"),
        ({"max_retries": -1}, "max_retries: expected a non-negative integer, got -1"),
        ({"payload": [1, 2]}, "payload: expected a mapping of keyword arguments, got list"),
        ({"payload": {1: "x"}}, "payload: keys must be strings"),
        ({"timeout": "soon"}, "timeout: expected a duration"),
        ({"timeout": 0}, "timeout: must be positive"),
        ({"status": "lost"}, "status: 'lost' is not one of"),
        ({"name": ""}, "name: expected a non-empty string"),
    ],
)
def test_invalid_fields_name_the_field(fields: dict[str, object], message: str) -> None:
    # Given / When a job is built with one bad field / Then a ValueError names that field
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace("[", r"\[")):
        Job(**{"name": "x", **fields})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"priority": "urgent"}, "priority: 'urgent' is not one of high, normal, low"),
        ({"max_retries": -1}, "max_retries: expected a non-negative integer, got -1"),
        ({"attempts": True}, "attempts: expected a non-negative integer, got True"),
        ({"attempts": 1.0}, "attempts: expected a non-negative integer, got 1.0"),
        ({"payload": [1, 2]}, "payload: expected a mapping of keyword arguments, got list"),
        ({"payload": {1: "x"}}, "payload: keys must be strings"),
        ({"timeout": "soon"}, "timeout: expected a duration"),
        ({"timeout": 0}, "timeout: must be positive"),
        ({"timeout": -1.5}, "timeout: expected a non-negative duration"),
        ({"status": "lost"}, "status: 'lost' is not one of"),
        ({"name": ""}, "name: expected a non-empty string"),
        ({"id": 7}, "id: expected a non-empty string, got 7"),
        ({"headers": ["a"]}, "headers: expected a mapping of strings, got list"),
    ],
)
def test_from_dict_validates_like_the_constructor(fields: dict[str, object], message: str) -> None:
    # Given the dict of a valid job with one bad field / When it is read / Then the same ValueError names the field
    data = Job(name="x").to_dict() | fields
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace("[", r"\[")):
        Job.from_dict(data)


def test_from_dict_converts_like_the_constructor() -> None:
    # Given values the constructor converts (member names in any case, an int timeout, non-string headers)
    data = Job(name="x").to_dict() | {"priority": "LOW", "timeout": 5, "headers": {"n": 1}, "status": Status.DEAD}
    # When read, then they are converted exactly as Job(...) converts them
    job = Job.from_dict(data)
    assert job.priority is Priority.LOW and job.status is Status.DEAD
    assert job.timeout == 5.0 and type(job.timeout) is float and job.headers == {"n": "1"}
    assert job == Job(**{k: v for k, v in data.items()})


def test_the_field_table_is_the_job_model() -> None:
    # The table lists every attribute but extra, in order, with the attrs defaults; name and id are required
    assert [f.name for f in JOB_FIELDS] == [a.name for a in attrs.fields(Job)][:-1]
    assert attrs.fields(Job)[-1].name == "extra"
    assert REQUIRED_FIELDS == ("name", "id")
    assert {f.name: f.default for f in JOB_FIELDS}["max_retries"] == 3
    assert list(Job(name="x").to_dict()) == [f.name for f in JOB_FIELDS]


def test_unknown_fields_are_kept_in_extra_and_written_back() -> None:
    # Given the dict a newer producer wrote: every field this version knows, plus two it does not
    data = Job(name="x", payload={"n": 1}).to_dict() | {"region": "eu-west", "cost": {"cpu": 2.5, "tags": ["a"]}}
    # When this version reads it
    job = Job.from_dict(data)
    # Then the known fields are the job and the unknown ones are kept, untouched, in extra
    assert job.name == "x" and job.payload == {"n": 1}
    assert job.extra == {"region": "eu-west", "cost": {"cpu": 2.5, "tags": ["a"]}}
    # And writing it back (a retry, a dead letter) gives them back, after the known fields
    assert job.to_dict() == data
    assert list(job.to_dict())[-2:] == ["region", "cost"]


def test_extra_takes_part_in_equality_and_survives_evolve() -> None:
    job = Job(name="x", id="j", created_at=1.0, extra={"region": "eu"})
    assert job != Job(name="x", id="j", created_at=1.0)
    assert job == Job(name="x", id="j", created_at=1.0, extra={"region": "eu"})
    assert attrs.evolve(job, status="running").extra == {"region": "eu"}


@pytest.mark.parametrize(
    "missing",
    [
        "payload",
        "priority",
        "status",
        "attempts",
        "max_retries",
        "timeout",
        "queue",
        "last_error",
        "traceback",
        "headers",
        "created_at",
        "enqueued_at",
        "scheduled_at",
        "started_at",
        "finished_at",
    ],
)
def test_a_missing_optional_field_takes_its_default(missing: str) -> None:
    # Given the dict an older producer wrote, without one optional field
    data = Job(
        name="x",
        payload={"a": 1},
        queue="q",
        timeout=3,
        headers={"h": "v"},
        last_error="E: e",
        traceback="tb",
        enqueued_at=2.0,
        scheduled_at=3.0,
        started_at=4.0,
        finished_at=5.0,
    ).to_dict()
    del data[missing]
    # When it is read
    before = time.time()
    job = Job.from_dict(data)
    # Then that field has the default Job() gives it and every other field is what was written
    if missing == "created_at":
        assert before <= job.created_at <= time.time()
    else:
        assert getattr(job, missing) == getattr(Job(name="y"), missing)
    assert {k: v for k, v in job.to_dict().items() if k != missing} == data
    assert job.extra == {}


def test_a_body_with_only_the_required_fields_is_a_default_job() -> None:
    job = Job.from_dict({"name": "send", "id": "j-1"})
    assert (job.name, job.id, job.payload, job.priority, job.status) == (
        "send",
        "j-1",
        {},
        Priority.NORMAL,
        Status.PENDING,
    )
    assert job.max_retries == 3 and job.attempts == 0 and job.headers == {} and job.created_at > 0


@pytest.mark.parametrize(("missing", "reason"), [(["id"], "id"), (["name"], "name"), (["name", "id"], "name, id")])
def test_a_missing_required_field_is_an_error_naming_it(missing: list[str], reason: str) -> None:
    data = {k: v for k, v in Job(name="x").to_dict().items() if k not in missing}
    with pytest.raises(ValueError, match=re.escape(f"missing required job field(s): {reason} (every job carries")):
        Job.from_dict(data)


@pytest.mark.parametrize("key", [b"region", 7, None, ("a", "b")], ids=["bytes", "int", "none", "tuple"])
def test_unknown_field_names_that_are_not_strings_are_refused(key: Any) -> None:
    data: dict[Any, Any] = Job(name="x").to_dict()
    data[key] = "v"
    message = f"unknown job field {key!r}: job field names must be strings"
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        Job.from_dict(data)


@pytest.mark.parametrize("name", [f.name for f in JOB_FIELDS])
def test_an_extra_field_cannot_shadow_a_known_one(name: str) -> None:
    with pytest.raises(ValueError, match=f"^extra: '{name}' is a field this version knows"):
        Job(name="x", extra={name: "shadow"})
    job = Job(name="x")
    with pytest.raises(ValueError, match="^extra: job field names must be strings"):
        job.extra = {1: "x"}  # assignments are converted like the constructor's arguments


def test_a_known_field_wins_over_an_extra_of_its_name_added_in_place() -> None:
    # extra is a plain dict: changing it in place skips the check, but to_dict never lets it replace a known field
    job = Job(name="x", extra={"region": "eu"})
    job.extra["name"] = "evil"
    assert job.to_dict()["name"] == "x" and job.to_dict()["region"] == "eu"


def test_extra_is_not_a_wire_field() -> None:
    # "extra" is the attribute, not a key: a newer producer's field called "extra" is just another unknown field
    data = Job(name="x").to_dict() | {"extra": {"a": 1}}
    job = Job.from_dict(data)
    assert job.extra == {"extra": {"a": 1}} and job.to_dict() == data


def test_a_job_assembled_field_by_field_has_an_empty_extra() -> None:
    # The producer's hot path builds jobs from Job.__new__(Job) and writes each field: extra is there already
    job = Job.__new__(Job)
    for f in JOB_FIELDS:
        object.__setattr__(job, f.name, getattr(Job(name="x", id="j", created_at=1.0), f.name))
    assert job.extra == {} and job == Job(name="x", id="j", created_at=1.0)
    assert job.to_dict() == Job(name="x", id="j", created_at=1.0).to_dict()


def test_trusted_builds_without_checking_and_with_the_same_defaults() -> None:
    # Given values the validators would refuse, the trusted constructor takes them as they are
    job = Job._trusted(name="", attempts=-1)
    assert job.name == "" and job.attempts == -1
    # And its defaults are the constructor's (fresh containers, a new id and a creation time)
    a, b = Job._trusted(name="x"), Job._trusted(name="x")
    assert a.payload == {} and a.payload is not b.payload and a.headers is not b.headers and a.extra == {}
    assert a.id != b.id and len(a.id) == 32 and a.created_at > 0
    assert a.priority is Priority.NORMAL and a.status is Status.PENDING and a.max_retries == 3
    full = Job(name="x", payload={"a": 1}, priority="high", timeout=2, headers={"h": "v"}, extra={"z": 1})
    assert Job._trusted(**attrs.asdict(full, recurse=False)) == full


_SETTINGS = settings(max_examples=200, deadline=None)


@_SETTINGS
@given(job=jobs, extra=extra_fields)
def test_any_job_with_any_extra_fields_round_trips_through_a_dict(job: Job, extra: dict[str, Any]) -> None:
    job.extra = extra
    again = Job.from_dict(job.to_dict())
    assert again == job and again.extra == extra
    assert again.to_dict() == job.to_dict()


@_SETTINGS
@given(job=jobs, drop=st.sets(st.sampled_from([f.name for f in JOB_FIELDS if not f.required])))
def test_any_subset_of_optional_fields_may_be_missing(job: Job, drop: set[str]) -> None:
    data = {k: v for k, v in job.to_dict().items() if k not in drop}
    again = Job.from_dict(data)
    for name, value in data.items():
        assert again.to_dict()[name] == value


def test_priority_rank_orders_high_first() -> None:
    assert sorted(Priority, key=lambda p: p.rank) == [Priority.HIGH, Priority.NORMAL, Priority.LOW]
