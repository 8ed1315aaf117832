"""The job frame: header, dispatch to any installed serializer, signing, size limit, and the worker with each
serializer (issue 5)."""

from __future__ import annotations

import importlib
import itertools
import threading
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bananas import Bananas, Status
from bananas._manager import load_plugins
from bananas.broker import Envelope
from bananas.builtin.json_serializer import JsonSerializer
from bananas.config import load_settings
from bananas.errors import SerializationError
from bananas.job import Job
from bananas.serializer import JobCodec, SignatureError, pack_frame, read_frame
from bananas.testing.serializers import SerializerConformance, jobs, payloads
from bananas.worker_mode import PoolPlan, WorkerPlan


def _optional(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


PLUGIN_MODULES = {"orjson": "bananas_json", "msgpack": "bananas_msgpack", "protobuf": "bananas_protobuf"}
LOADED = {name: mod for name, module in PLUGIN_MODULES.items() if (mod := _optional(module)) is not None}
SERIALIZERS = ["json", *PLUGIN_MODULES]
"""Every serializer of issue 5; the plugin ones are skipped where their package is not installed."""


def _need(*names: str) -> None:
    missing = [name for name in names if name != "json" and name not in LOADED]
    if missing:
        pytest.skip(f"serializer plugin(s) not installed: {', '.join(missing)}")


def registry() -> Any:
    """A hermetic serializer registry: the built-in json plus the serializer plugins that are installed."""
    return load_plugins(plugins=list(LOADED.values()), entrypoints=False, env={}).serializers


def codec(name: str = "json", **keys: Any) -> JobCodec:
    reg = registry()
    return JobCodec(reg.get(name).factory(), reg, **keys)


def make_app(url: str, serializer: str = "json", **overrides: Any) -> Bananas:
    """An app on ``url`` with the serializer plugins registered explicitly (no entry points, no env)."""
    app = Bananas(
        broker=url,
        result_backend=url,
        serializer=serializer,
        overrides={"jobs.retry_backoff_base": 0.05, "jobs.retry_backoff_max": 0.2, **overrides},
        plugins=list(LOADED.values()),
        entrypoints=False,
        env={},
    )
    # Until app.py builds it this way itself: the codec that reads every installed serializer and signs.
    app.codec = JobCodec.from_settings(app.plugins.serializers, app.settings)
    return app


def one_slot(app: Bananas) -> WorkerPlan:
    queues = app.router.queues(priorities=["high", "normal", "low"])
    return WorkerPlan(mode="test", pools=(PoolPlan("solo", 1, queues, worker_id="solo-1"),), scheduler_interval=0.1)


def dead_letters(app: Bananas, queue: str = "normal") -> list[Any]:
    async def read() -> list[Any]:
        return await (await app.broker()).dead_letters(queue)

    return app.run_sync(read)


def put_raw(app: Bananas, job_id: str, body: bytes, queue: str = "normal") -> None:
    async def put() -> None:
        await (await app.broker()).enqueue([Envelope(job_id, queue, body)])

    app.run_sync(put)


_FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- the header ----------------------------------------------------------------------------------------------------
class TestBuiltinJsonSerializer(SerializerConformance):
    factory = JsonSerializer


def test_every_body_starts_with_magic_version_flags_and_the_serializer_name() -> None:
    # Given the json codec
    body = codec("json").encode(Job(name="x", id="j1"))
    # Then the header is b"BN", version 1, no flags, the name with its length, then the JSON body
    assert body[:9] == b"BN\x01\x00\x04json"
    assert body[9:10] == b"{"
    head = read_frame(body)
    assert (head.version, head.serializer, head.signed, head.body_offset) == (1, "json", False, 9)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"name":"x"}', "not a Bananas job frame"),
        (b"", "not a Bananas job frame"),
        (b"BN", "truncated frame header"),
        (b"BN\x02\x00\x04json{}", "frame version 2 is newer than this Bananas reads (up to 1)"),
        (b"BN\x00\x00\x04json{}", "unknown frame version 0"),
        (b"BN\x01\x80\x04json{}", "unknown frame flags 0x80"),
        (b"BN\x01\x00\x09json", "the serializer name is cut off"),
        (b"BN\x01\x00\x00{}", "the serializer name is cut off"),
        (b"BN\x01\x00\x04j\xffon{}", "invalid serializer name"),
        (b"BN\x01\x01\x04json" + b"\x00" * 5, "the signature is cut off"),
        (b"BN\x01\x00\x04avro{}", "serializer 'avro', which is not installed here: no serializer named 'avro'"),
    ],
    ids=["no-magic", "empty", "short", "newer", "zero", "flags", "name-cut", "no-name", "bad-name", "tag-cut",
         "unknown"],
)
def test_bad_headers_are_rejected_with_a_clear_reason(body: bytes, reason: str) -> None:
    with pytest.raises(SerializationError) as err:
        codec("json").decode(body)
    assert reason in err.value.reason
    assert err.value.data == body


def test_an_uninstalled_serializer_names_the_package_to_install() -> None:
    reg = load_plugins(entrypoints=False, env={}).serializers
    json_only = JobCodec(reg.get("json").factory(), reg)
    with pytest.raises(SerializationError, match="pip install bananas-msgpack"):
        json_only.decode(pack_frame("msgpack", b"\x80"))


def test_a_codec_without_a_registry_reads_only_its_own_serializer() -> None:
    with pytest.raises(SerializationError, match="this codec reads only 'json'"):
        JobCodec(JsonSerializer()).decode(pack_frame("msgpack", b"\x80"))


def test_serializer_names_must_fit_the_frame() -> None:
    with pytest.raises(SerializationError, match="cannot go into a frame"):
        pack_frame("no spaces", b"")
    with pytest.raises(SerializationError, match="cannot go into a frame"):
        pack_frame("x" * 65, b"")


def test_a_malformed_job_inside_a_valid_frame_carries_its_id() -> None:
    body = pack_frame("json", b'{"id":"j-9","name":"x","attempts":-1}')
    with pytest.raises(SerializationError) as err:
        codec("json").decode(body)
    assert err.value.job_id == "j-9" and err.value.reason.startswith("malformed job: attempts")


# -- reading jobs written with another serializer ------------------------------------------------------------------
@pytest.mark.parametrize(("writer", "reader"), list(itertools.permutations(SERIALIZERS, 2)))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(job=jobs)
def test_a_codec_reads_jobs_written_with_any_installed_serializer(writer: str, reader: str, job: Job) -> None:
    # Given a producer configured with one serializer and a worker configured with another, both installed
    _need(writer, reader)
    # When the worker decodes what the producer encoded
    decoded = codec(reader).decode(codec(writer).encode(job))
    # Then it is the same job, and the worker's own writes use its serializer
    assert decoded == job
    assert read_frame(codec(reader).encode(decoded)).serializer == reader


@pytest.mark.parametrize("name", SERIALIZERS)
@settings(max_examples=60, deadline=None)
@given(data=payloads)
def test_results_round_trip_across_serializers_through_dumps_and_loads(name: str, data: dict[str, Any]) -> None:
    _need(name)
    result = {"ok": True, "value": data}
    assert codec("json").loads(codec(name).dumps(result)) == result


# -- garbage -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SERIALIZERS)
@_FUZZ
@given(garbage=st.binary(max_size=300))
def test_garbage_bytes_never_raise_anything_but_serialization_error(name: str, garbage: bytes) -> None:
    _need(name)
    reader = codec(name, signing_key="k")
    for body in (garbage, b"BN" + garbage, b"BN\x01" + garbage, pack_frame(name, garbage)):
        with pytest.raises(SerializationError):
            reader.decode(body)  # signed codec: nothing unsigned passes, but every failure is SerializationError
    plain = codec(name)
    for body in (garbage, b"BN\x01\x00" + garbage, pack_frame(name, garbage)):
        try:
            assert isinstance(plain.decode(body), Job)
        except SerializationError:
            pass


def test_deeply_nested_json_raises_serialization_error() -> None:
    with pytest.raises(SerializationError, match="invalid JSON"):
        codec("json").decode(pack_frame("json", b'{"a":' + b"[" * 100_000))


@pytest.mark.parametrize("text", [b'{"a":NaN}', b'{"a":Infinity}', b'{"a":1e999}', b'{"a":"\xff"}'])
def test_the_builtin_json_refuses_non_finite_numbers_and_bad_utf8(text: bytes) -> None:
    with pytest.raises(SerializationError, match="invalid JSON"):
        JsonSerializer().loads(text)


# -- signing -------------------------------------------------------------------------------------------------------
def test_signed_bodies_round_trip_and_carry_a_tag() -> None:
    signer = codec("json", signing_key="s3cret")
    job = Job(name="x")
    body = signer.encode(job)
    assert body[3] == 0x01 and read_frame(body).signed and len(read_frame(body).tag) == 32
    assert signer.decode(body) == job


def test_a_tampered_body_fails_with_bad_signature() -> None:
    signer = codec("json", signing_key="s3cret")
    body = bytearray(signer.encode(Job(name="x", payload={"amount": 10})))
    body[body.index(b"10")] = ord("9")
    with pytest.raises(SignatureError) as err:
        signer.decode(bytes(body))
    assert err.value.reason == "bad signature"


@pytest.mark.parametrize("name", SERIALIZERS)
def test_changing_the_serializer_name_of_a_signed_body_breaks_the_signature(name: str) -> None:
    _need(name)
    signer = codec("json", signing_key="k")
    body = signer.encode(Job(name="x"))
    swapped = body.replace(b"\x04json", bytes([len(name)]) + name.encode(), 1)
    if swapped != body:
        with pytest.raises(SignatureError, match="bad signature"):
            signer.decode(swapped)


def test_unsigned_bodies_fail_when_a_key_is_set() -> None:
    with pytest.raises(SignatureError, match="bad signature: the job is not signed"):
        codec("json", signing_key="k").decode(codec("json").encode(Job(name="x")))


def test_a_wrong_key_fails_and_an_old_key_still_verifies() -> None:
    body = codec("json", signing_key="old").encode(Job(name="x"))
    with pytest.raises(SignatureError, match="bad signature"):
        codec("json", signing_key="new").decode(body)
    assert codec("json", signing_key="new", old_signing_keys=["older", "old"]).decode(body).name == "x"


def test_old_keys_verify_but_never_sign() -> None:
    rotated = codec("json", signing_key="new", old_signing_keys=["old"])
    body = rotated.encode(Job(name="x"))
    with pytest.raises(SignatureError):
        codec("json", signing_key="old").decode(body)


def test_a_codec_without_a_key_reads_signed_bodies_so_producers_can_sign_first() -> None:
    assert codec("json").decode(codec("json", signing_key="k").encode(Job(name="x"))).name == "x"


def test_empty_signing_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        codec("json", signing_key="")


def test_the_codec_reads_its_keys_from_settings() -> None:
    # Given the key and the old keys from the environment
    env = {"BANANAS_SIGNING_KEY": "new", "BANANAS_SIGNING_KEYS_OLD": "old1,old2"}
    settings_ = load_settings(env=env, overrides={"broker": "memory://"})
    # When the app's codec is built from them
    from_settings = JobCodec.from_settings(registry(), settings_)
    # Then it signs with the new key and verifies with each old one
    assert from_settings.signing and from_settings.old_signing_keys == (b"old1", b"old2")
    assert from_settings.decode(codec("json", signing_key="old2").encode(Job(name="x"))).name == "x"
    assert settings_.as_dict()["signing_keys_old"] == "***"


# -- max_payload_bytes ---------------------------------------------------------------------------------------------
def test_max_payload_bytes_is_enforced_at_enqueue_with_a_clear_error(memory_url: str) -> None:
    # Given an app that allows 600-byte bodies
    app = make_app(memory_url, max_payload_bytes=600)
    # When a job with a bigger payload is enqueued
    with pytest.raises(SerializationError) as err:
        app.enqueue("big", {"blob": "x" * 1000})
    # Then the error names the size and the limit, and nothing reached the broker
    assert "more than max_payload_bytes = 600" in str(err.value)
    assert err.value.job_id
    app.enqueue("small", {"blob": "x"})

    async def ready() -> int:
        return (await (await app.broker()).depths(["normal"]))["normal"].ready

    assert app.run_sync(ready) == 1
    app.close()


def test_max_payload_bytes_defaults_to_one_mebibyte(memory_url: str) -> None:
    app = make_app(memory_url)
    assert app.settings["max_payload_bytes"] == 1 << 20
    with pytest.raises(SerializationError, match="max_payload_bytes = 1048576"):
        app.build("big", {"blob": "x" * (1 << 20)})
    app.close()


# -- the worker with each serializer -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SERIALIZERS)
def test_the_worker_runs_retries_and_dead_letters_with_each_serializer(
    name: str, memory_url: str, run_worker: Any, wait_for: Any
) -> None:
    # Given an app configured with this serializer and a handler that fails once
    _need(name)
    app = make_app(memory_url, serializer=name)
    calls: list[dict[str, Any]] = []

    @app.job("echo", max_retries=2)
    def echo(**payload: Any) -> dict[str, Any]:
        calls.append(payload)
        if len(calls) == 1:
            raise RuntimeError("first try fails")
        return payload

    @app.job("doomed", max_retries=0)
    def doomed() -> None:
        raise ValueError("never works")

    payload = {"text": "🍌 é", "big": 2**62, "float": 0.5, "nested": {"list": [1, None, True]}, "empty": {}}
    handle = app.enqueue("echo", payload)
    dead = app.enqueue("doomed")
    # When a worker runs them
    run_worker(app, one_slot(app))
    # Then the job was retried with its payload intact and completed, and the other one is dead
    assert handle.result(timeout=10) == payload
    assert calls == [payload, payload]
    wait_for(lambda: app.get_job(dead.id).status is Status.DEAD)
    [letter] = dead_letters(app)
    assert letter.reason == "failed after 1 attempt(s): ValueError: never works"
    assert read_frame(letter.body).serializer == name


@pytest.mark.parametrize(("writer", "reader"), [("json", "protobuf"), ("protobuf", "json"), ("msgpack", "json")])
def test_rolling_migration_workers_run_jobs_written_with_another_serializer(
    writer: str, reader: str, memory_url: str, run_worker: Any, wait_for: Any
) -> None:
    # Given a producer on one serializer and a worker on another, sharing one broker
    _need(writer, reader)
    producer = make_app(memory_url, serializer=writer)
    worker_app = make_app(memory_url, serializer=reader)
    seen: list[Any] = []
    worker_app.job("work")(lambda n: seen.append(n))
    for n in range(3):
        producer.enqueue("work", {"n": n})
    # When the worker drains the queue
    run_worker(worker_app, one_slot(worker_app))
    # Then every job ran, none is dead
    wait_for(lambda: sorted(seen) == [0, 1, 2])
    assert dead_letters(worker_app) == []


def test_a_worker_with_a_key_dead_letters_unsigned_and_tampered_jobs_and_goes_on(
    memory_url: str, run_worker: Any, wait_for: Any
) -> None:
    # Given a worker with a signing key, an unsigned job, a tampered signed job and a good signed job
    worker_app = make_app(memory_url, signing_key="k-new", signing_keys_old=["k-old"])
    ran: list[str] = []
    done = threading.Event()

    @worker_app.job("work")
    def work(tag: str) -> None:
        ran.append(tag)
        if len(ran) == 2:
            done.set()

    unsigned = make_app(memory_url)
    unsigned.enqueue("work", {"tag": "unsigned"}, job_id="unsigned-1")
    tampered = bytearray(worker_app.codec.encode(Job(name="work", id="tampered-1", payload={"tag": "ok"})))
    tampered[-4] ^= 0x01
    put_raw(worker_app, "tampered-1", bytes(tampered))
    worker_app.enqueue("work", {"tag": "signed"})
    make_app(memory_url, signing_key="k-old").enqueue("work", {"tag": "old-key"})
    # When the worker runs
    run_worker(worker_app, one_slot(worker_app))
    # Then the good jobs ran and the bad ones are dead at once, with reason "bad signature"
    assert done.wait(10)
    assert sorted(ran) == ["old-key", "signed"]
    wait_for(lambda: len(dead_letters(worker_app)) == 2)
    reasons = {letter.id: letter.reason for letter in dead_letters(worker_app)}
    assert set(reasons) == {"unsigned-1", "tampered-1"}
    assert all("bad signature" in reason for reason in reasons.values())
