"""The job model validates on construction and round-trips through to_dict/from_dict."""

from __future__ import annotations

import pytest

from bananas.job import Job, Priority, Status


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


def test_from_dict_rejects_unknown_fields() -> None:
    data = Job(name="x").to_dict() | {"color": "red"}
    with pytest.raises(ValueError, match="unknown job field"):
        Job.from_dict(data)


def test_priority_rank_orders_high_first() -> None:
    assert sorted(Priority, key=lambda p: p.rank) == [Priority.HIGH, Priority.NORMAL, Priority.LOW]
