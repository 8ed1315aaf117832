"""Values people pass (issue 16, point 4), end to end on the memory broker: typed payloads and results come back as
the same types through every installed serializer, a naive datetime is refused at enqueue naming its field, a
result that cannot be stored completes the job once and says why, and the JSON wire format of plain values is
unchanged (a 0.1 body still decodes)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from time import monotonic, sleep
from typing import Any

import pytest
from hypothesis import given, settings

from bananas import Bananas, Client, JobFailed, SerializationError, Status, UnstorableResult
from bananas._manager import load_plugins
from bananas.builtin.json_serializer import JsonSerializer
from bananas.builtin.memory_results import MemoryResultBackend
from bananas.cli import main
from bananas.serializer import JobCodec
from bananas.testing.serializers import assert_same, json_values, payloads, typed_payloads, typed_values
from bananas.values import JSON_TAG, find_problem, from_json, to_json

SERIALIZERS = ("json", "orjson", "msgpack", "protobuf")
INSTALLED = set(load_plugins(env={}).serializers)
RUNS: dict[str, int] = {}

TYPED = {
    "when": datetime(2024, 5, 1, 9, 30, tzinfo=timezone(timedelta(hours=2))),
    "day": date(2024, 5, 1),
    "at": time(9, 30),
    "order_id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "amount": Decimal("19.90"),
    "blob": b"\x00\x01\xff",
    "pair": (1, "a"),
    "tags": {"x"},
    "nested": [{"when": datetime(2024, 1, 1, tzinfo=UTC), JSON_TAG: "mine"}],
}


@pytest.fixture(autouse=True)
def _fresh_results(memory_url):
    yield
    MemoryResultBackend.reset(memory_url)


def completed(app: Bananas, job_id: str) -> bool:
    """Whether the job's record reaches ``completed`` within 10 s (the result is stored just before the ack)."""
    deadline = monotonic() + 10
    while app.get_job(job_id).status is not Status.COMPLETED:
        if monotonic() > deadline:
            return False
        sleep(0.02)
    return True


def _typed_app(make_app, run_worker, serializer: str) -> Bananas:
    if serializer not in INSTALLED:
        pytest.skip(f"serializer {serializer} is not installed")
    app = make_app(serializer=serializer)

    @app.job("echo_types")
    def echo_types(**values: Any) -> dict[str, Any]:
        assert type(values["when"]) is datetime and type(values["order_id"]) is uuid.UUID
        return {**values, "seen_at": datetime(2024, 5, 2, tzinfo=UTC)}

    @app.job("send_report", max_retries=3)
    def send_report(key: str) -> object:
        RUNS[key] = RUNS.get(key, 0) + 1
        return {"report": object()}

    @app.job("naive_result", max_retries=3)
    def naive_result(key: str) -> dict[str, Any]:
        RUNS[key] = RUNS.get(key, 0) + 1
        return {"rows": [{"when": datetime(2024, 1, 1)}]}

    run_worker(app)
    return app


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_typed_payloads_and_results_round_trip_through_a_worker(make_app, run_worker, serializer: str) -> None:
    # Given a worker with the serializer
    app = _typed_app(make_app, run_worker, serializer)
    # When a payload of every supported kind is enqueued and its handler returns them with one more
    handle = app.enqueue("echo_types", TYPED)
    result = handle.result(timeout=10)
    # Then the handler got the same types and the client gets them back (tuples and sets as lists)
    assert_same(result, {**TYPED, "seen_at": datetime(2024, 5, 2, tzinfo=UTC)})


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_an_unencodable_result_completes_the_job_once_and_stores_why(make_app, run_worker, serializer: str) -> None:
    # Given a handler (max_retries=3) whose result no serializer can hold
    app = _typed_app(make_app, run_worker, serializer)
    key = f"report-{serializer}-{uuid.uuid4().hex}"
    # When it runs
    handle = app.enqueue("send_report", {"key": key})
    with pytest.raises(UnstorableResult) as info:
        handle.result(timeout=10)
    # Then the client gets an error saying why, the job completed, and it ran exactly once
    assert "result of send_report cannot be stored: field 'report' is a builtins.object" in str(info.value)
    assert str(info.value).startswith(f"job {handle.id} completed, but result of send_report cannot be stored")
    assert isinstance(info.value, JobFailed) and info.value.error_type == "UnstorableResult"
    assert completed(app, handle.id)
    assert RUNS[key] == 1


def test_a_naive_datetime_result_names_its_field(make_app, run_worker) -> None:
    app = _typed_app(make_app, run_worker, "json")
    key = f"naive-{uuid.uuid4().hex}"
    handle = app.enqueue("naive_result", {"key": key})
    with pytest.raises(UnstorableResult, match=r"field 'rows\[0\]\.when' is a naive datetime; pass an aware one"):
        handle.result(timeout=10)
    assert RUNS[key] == 1


def test_bananas_job_shows_why_the_result_was_not_stored(make_app, run_worker, memory_url, capsys) -> None:
    # Given a completed job whose result could not be stored
    app = _typed_app(make_app, run_worker, "json")
    handle = app.enqueue("send_report", {"key": f"cli-{uuid.uuid4().hex}"})
    with pytest.raises(UnstorableResult):
        handle.result(timeout=10)
    assert completed(app, handle.id)
    # When `bananas job ID` looks at it (text and --json)
    text = run_cli(capsys, "job", handle.id, "--broker", memory_url)
    as_json = run_cli(capsys, "job", handle.id, "--broker", memory_url, "--json")
    # Then both say it completed and why its result is an error
    assert "status:      completed" in text
    assert "result:      not stored: result of send_report cannot be stored: field 'report'" in text
    assert json.loads(as_json)["result_error"].startswith("result of send_report cannot be stored")


def run_cli(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    assert not info.value.code, err
    return out


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"when": datetime(2024, 1, 1)}, "payload field 'when' is a naive datetime; pass an aware one "
                                         "(datetime.now(timezone.utc))"),
        ({"meeting": {"slots": [{"at": datetime(2024, 1, 1)}]}}, "payload field 'meeting.slots[0].at' is a naive"),
        ({"x": [object()]}, "payload field 'x[0]' is a builtins.object, which Bananas cannot carry"),
    ],
    ids=["top-level", "nested", "unsupported-type"],
)
def test_enqueue_refuses_what_cannot_be_carried_naming_the_field(make_app, payload: dict, message: str) -> None:
    # Given a producer
    app = make_app()
    # When a payload holds a naive datetime or an unsupported type, then enqueue refuses it naming the field
    with pytest.raises(SerializationError) as info:
        app.enqueue("anything", payload, job_id="refused-1")
    assert message in str(info.value)
    # And nothing was sent
    with pytest.raises(Exception, match="refused-1"):
        app.get_job("refused-1")


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_a_naive_datetime_is_refused_at_enqueue_with_every_serializer(make_app, serializer: str) -> None:
    if serializer not in INSTALLED:
        pytest.skip(f"serializer {serializer} is not installed")
    app = make_app(serializer=serializer)
    with pytest.raises(SerializationError, match=r"^payload field 'rows\[1\]\.when' is a naive datetime; pass an"):
        app.enqueue("anything", {"rows": [{}, {"when": datetime(2024, 1, 1)}]})


def test_a_body_written_by_bananas_0_1_still_decodes() -> None:
    # Given the exact bytes a 0.1 producer wrote (built-in json, plain values)
    body = (
        b'BN\x01\x00\x04json{"name":"send","payload":{"to":"a@b.c","n":[1,2.5,null,true],"m":{"k":"v"}},'
        b'"id":"0f3c","priority":"normal","status":"pending","attempts":0,"max_retries":3,"timeout":null,'
        b'"queue":"normal","last_error":null,"traceback":null,"headers":{},"created_at":1700000000.0,'
        b'"enqueued_at":1700000000.0,"scheduled_at":null,"started_at":null,"finished_at":null}'
    )
    codec = JobCodec(JsonSerializer())
    # When 0.2 decodes it, then it is the same job, and re-encoding writes the same bytes
    job = codec.decode(body)
    assert job.payload == {"to": "a@b.c", "n": [1, 2.5, None, True], "m": {"k": "v"}}
    assert codec.encode(job) == body


@settings(max_examples=200, deadline=None)
@given(data=payloads)
def test_plain_values_keep_the_json_wire_format(data: dict[str, Any]) -> None:
    # Given a mapping of JSON's own values (user dicts holding the tag key aside)
    body = JsonSerializer().dumps(data)
    if JSON_TAG in body.decode():
        return
    # Then the bytes are what 0.1 wrote: compact JSON
    assert body == json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


@settings(max_examples=200, deadline=None)
@given(data=typed_payloads)
def test_tagging_round_trips_through_plain_json(data: dict[str, Any]) -> None:
    tagged = to_json(data)
    assert_same(from_json(json.loads(json.dumps(tagged))), data)


@settings(max_examples=100, deadline=None)
@given(value=typed_values | json_values)
def test_find_problem_finds_nothing_in_supported_values(value: Any) -> None:
    assert find_problem(value, "result") is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"x":{"__bananas__":"timedelta","v":"P1D"}}', "unknown tagged value kind 'timedelta'"),
        (b'{"x":{"__bananas__":"datetime","v":"2024-01-01T00:00:00"}}', "has no UTC offset"),
        (b'{"x":{"__bananas__":"uuid","v":"nope"}}', "invalid tagged uuid value"),
        (b'{"x":{"__bananas__":"dict","v":{"a":1}}}', r"\[key, value\] pairs"),
        (b'{"x":{"__bananas__":"date","v":"2024-01-01","extra":1}}', "is not a tagged value"),
    ],
    ids=["unknown-kind", "naive", "bad-uuid", "bad-escape", "extra-key"],
)
def test_bad_tags_are_refused_clearly(body: bytes, reason: str) -> None:
    with pytest.raises(SerializationError, match=reason):
        JsonSerializer().loads(body)


def test_client_get_result_returns_typed_values(make_app, run_worker, memory_url) -> None:
    app = _typed_app(make_app, run_worker, "json")
    handle = app.enqueue("echo_types", {"when": datetime(2024, 5, 1, tzinfo=UTC), "order_id": uuid.uuid4()})
    handle.result(timeout=10)
    with Client(memory_url, env={}) as client:
        value = client.get_result(handle.id)
    assert value["seen_at"] == datetime(2024, 5, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (datetime(2024, 5, 1, 9, 30, tzinfo=UTC), b'{"__bananas__":"datetime","v":"2024-05-01T09:30:00+00:00"}'),
        (date(2024, 5, 1), b'{"__bananas__":"date","v":"2024-05-01"}'),
        (time(9, 30), b'{"__bananas__":"time","v":"09:30:00"}'),
        (uuid.UUID("12345678-1234-5678-1234-567812345678"),
         b'{"__bananas__":"uuid","v":"12345678-1234-5678-1234-567812345678"}'),
        (Decimal("19.90"), b'{"__bananas__":"decimal","v":"19.90"}'),
        (b"\x00\xff", b'{"__bananas__":"bytes","v":"AP8="}'),
        ((1, 2), b"[1,2]"),
        ({JSON_TAG: 1, "v": 2}, b'{"__bananas__":"dict","v":[["__bananas__",1],["v",2]]}'),
    ],
    ids=["datetime", "date", "time", "uuid", "decimal", "bytes", "tuple", "escaped-dict"],
)
def test_the_json_wire_forms_are_the_documented_ones(value: Any, wire: bytes) -> None:
    # docs/SERIALIZERS.md, "Values beyond JSON": the table of what JSON writes
    assert JsonSerializer().dumps({"x": value}) == b'{"x":' + wire + b"}"


def test_bananas_result_prints_typed_values_as_json_text(make_app, run_worker, memory_url, capsys) -> None:
    # Given a stored result with a datetime, a UUID, a Decimal, bytes and a set
    app = _typed_app(make_app, run_worker, "json")
    order = uuid.UUID("12345678-1234-5678-1234-567812345678")
    handle = app.enqueue("echo_types", {"when": datetime(2024, 5, 1, tzinfo=UTC), "order_id": order,
                                        "amount": Decimal("1.10"), "blob": b"ok", "tags": {"x"}})
    handle.result(timeout=10)
    # When `bananas result` prints it, then it is JSON with ISO 8601 and canonical text
    printed = json.loads(run_cli(capsys, "result", handle.id, "--broker", memory_url))
    assert printed == {"when": "2024-05-01T00:00:00+00:00", "order_id": str(order), "amount": "1.10", "blob": "ok",
                       "tags": ["x"], "seen_at": "2024-05-02T00:00:00+00:00"}


def test_a_payload_that_refers_to_itself_is_refused_in_one_line(make_app) -> None:
    app = make_app()
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(SerializationError, match=r"^payload field 'loop\[0\]\[0\].*' is nested more than 200 levels"):
        app.enqueue("anything", {"loop": loop})


@settings(max_examples=300, deadline=None)
@given(data=typed_payloads)
def test_the_one_pass_and_the_exact_path_write_the_same_bytes(data: dict[str, Any]) -> None:
    # Given any typed payload (user dicts holding the tag key included), written by the serializer's fastest path
    written = JsonSerializer().dumps(data)
    # Then it is byte for byte what the exact path (the tagging walk, then the encoder) writes
    exact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(to_json(data))
    assert written == exact.encode()
