"""Jobs that evolve, end to end on the memory broker: a worker runs a job written by a newer producer (fields this
version does not know), retries it and dead-letters another, and every body it writes back still carries those
fields; a job from an older producer (only the required fields) runs with the defaults."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from bananas import Bananas, Status
from bananas._manager import load_plugins
from bananas.broker import Envelope
from bananas.serializer import pack_frame

SERIALIZERS = ("json", "orjson", "msgpack", "protobuf")
"""The built-in json and the serializer plugins of this repository; a plugin not installed is skipped."""
INSTALLED = set(load_plugins(env={}).serializers)
NEWER = {
    "region": "eu-west",
    "trace_context": {"span": "0af7651916cd43dd", "sampled": True, "hops": [1, 2]},
    "cost": 12,
}
"""Fields a newer Bananas writes into every job and this one does not know."""


def newer_body(app: Bananas, serializer: str, job_id: str, name: str, payload: dict[str, Any], retries: int) -> bytes:
    """The body a newer producer writes: every field this version knows, then its own, in this app's frame."""
    now = time.time()
    fields = {
        "name": name,
        "payload": payload,
        "id": job_id,
        "priority": "normal",
        "status": "pending",
        "attempts": 0,
        "max_retries": retries,
        "timeout": None,
        "queue": "normal",
        "last_error": None,
        "traceback": None,
        "headers": {"trace": "t-1"},
        "created_at": now,
        "enqueued_at": now,
        "scheduled_at": None,
        "started_at": None,
        "finished_at": None,
        **NEWER,
    }
    return pack_frame(serializer, app.plugins.serializers.get(serializer).factory().dumps(fields))


def put_raw(app: Bananas, job_id: str, body: bytes) -> None:
    async def put() -> None:
        await (await app.broker()).enqueue([Envelope(job_id, "normal", body)])

    app.run_sync(put)


def stored_body(app: Bananas, job_id: str) -> bytes:
    async def lookup() -> bytes:
        record = await (await app.broker()).lookup(job_id)
        assert record is not None
        return record.body

    return app.run_sync(lookup)


@pytest.mark.parametrize("serializer", list(SERIALIZERS))
def test_a_newer_producers_job_is_retried_and_dead_lettered_with_its_unknown_fields(
    serializer: str, make_app: Callable[..., Bananas], run_worker: Any, wait_for: Any
) -> None:
    # Given a worker of this version, configured with this serializer, and a handler that fails once
    if serializer not in INSTALLED:
        pytest.skip(f"no serializer named {serializer!r} installed")
    app = make_app(serializer=serializer)
    calls: list[int] = []

    @app.job("charge")
    def charge(amount: int) -> int:
        calls.append(amount)
        if len(calls) == 1:
            raise RuntimeError("card declined once")
        return amount * 2

    @app.job("doomed")
    def doomed() -> None:
        raise ValueError("never works")

    # And two jobs a newer producer wrote, with fields this version does not know (bodies built by hand)
    put_raw(app, "charge-1", newer_body(app, serializer, "charge-1", "charge", {"amount": 10}, retries=2))
    put_raw(app, "doomed-1", newer_body(app, serializer, "doomed-1", "doomed", {}, retries=1))
    # When the worker runs them
    run_worker(app)
    # Then the job failed once, was retried and completed
    wait_for(lambda: app.get_job("charge-1").status is Status.COMPLETED)
    assert calls == [10, 10]
    # And the body the retry stored still carries the newer producer's fields, exactly
    retried = app.codec.loads(stored_body(app, "charge-1"))
    assert (retried["status"], retried["attempts"]) == ("retrying", 1)
    assert retried["last_error"] == "RuntimeError: card declined once"
    assert {key: retried[key] for key in NEWER} == NEWER
    extra = app.get_job("charge-1").extra  # the newer fields, exactly, beside this version's attempt history
    assert {key: extra[key] for key in NEWER} == NEWER and set(extra) - set(NEWER) == {"history"}
    # And the other job, retried once and dead-lettered, carries them in its dead letter too
    wait_for(lambda: app.get_job("doomed-1").status is Status.DEAD)
    dead = app.codec.loads(stored_body(app, "doomed-1"))
    assert (dead["status"], dead["attempts"]) == ("dead", 2)
    assert {key: dead[key] for key in NEWER} == NEWER
    app.close()


def test_an_older_producers_job_with_only_the_required_fields_runs_with_defaults(
    make_app: Callable[..., Bananas], run_worker: Any, wait_for: Any
) -> None:
    # Given a body with nothing but a name and an id (the payload defaults to no arguments)
    app = make_app()
    ran: list[str] = []
    app.job("ping")(lambda: ran.append("pong"))
    put_raw(app, "ping-1", pack_frame("json", b'{"name":"ping","id":"ping-1"}'))
    # When a worker runs it, then the handler ran and the job completed with the defaults filled in
    run_worker(app)
    wait_for(lambda: app.get_job("ping-1").status is Status.COMPLETED)
    job = app.get_job("ping-1")
    assert ran == ["pong"] and job.attempts == 1 and job.max_retries == 3
    assert set(job.extra) <= {"history"}  # no field invented; only this version's own attempt history
    app.close()


def test_a_job_without_an_id_is_dead_lettered_as_malformed(
    make_app: Callable[..., Bananas], run_worker: Any, wait_for: Any
) -> None:
    # Given a body that lacks a required field
    app = make_app()
    app.job("ping")(lambda: None)
    put_raw(app, "no-id-1", pack_frame("json", b'{"name":"ping"}'))
    run_worker(app)
    # Then the worker dead-letters it with a reason that names the missing field

    async def record() -> Any:
        return await (await app.broker()).lookup("no-id-1")

    wait_for(lambda: app.run_sync(record).state == "dead")
    assert "malformed job: missing required job field(s): id" in app.run_sync(record).reason
    app.close()
