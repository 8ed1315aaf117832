"""The producer's lean build path (issue 17 point 4): same bytes, same errors, same jobs as before, cheaper.

* the built-in ``json`` serializer's prebuilt C encoder writes exactly what ``json.JSONEncoder.encode`` wrote and
  fails exactly as it failed (its fallback path is the old one);
* ``new_job_ids`` draws a batch of uuid4 hex ids from one ``os.urandom`` call;
* ``enqueue_many`` reads the clock once: one ``created_at`` per call, delays counted from it.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import datetime
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bananas import Bananas, SerializationError
from bananas.builtin.json_serializer import JsonSerializer
from bananas.job import new_job_ids
from bananas.testing import fresh_memory_url
from bananas.testing.serializers import json_values, payloads, typed_payloads

_UUID4 = re.compile(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}")


def _old_dumps(data: Any) -> bytes:
    """What the serializer wrote before its C encoder was built once: the plain path, kept as ``_dumps``."""
    return JsonSerializer()._dumps(data)


@settings(max_examples=300, deadline=None)
@given(st.one_of(payloads, typed_payloads, st.dictionaries(st.text(), json_values)))
def test_json_fast_path_writes_the_same_bytes(data):
    assert JsonSerializer().dumps(data) == _old_dumps(data)


@pytest.mark.parametrize(
    "data",
    [
        {"x": math.nan},
        {"x": [1, math.inf]},
        {"when": datetime(2026, 1, 1)},  # naive: refused
        {"x": object()},
        {1: "int key"},
        {"__bananas__": "a user's key that looks like a tag"},
    ],
)
def test_json_fast_path_fails_or_falls_back_like_the_plain_path(data):
    fast, plain = JsonSerializer(), JsonSerializer()
    try:
        expected: bytes | str = plain._dumps(data)
    except SerializationError as exc:
        expected = str(exc)
    try:
        got: bytes | str = fast.dumps(data)
    except SerializationError as exc:
        got = str(exc)
    assert got == expected


def test_json_fast_path_survives_a_cycle_then_encodes_again():
    serializer = JsonSerializer()
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(SerializationError):
        serializer.dumps({"loop": loop})
    assert serializer.dumps({"a": [1, 2]}) == b'{"a":[1,2]}'


def test_new_job_ids_are_uuid4_hex_and_distinct():
    ids = new_job_ids(500)
    batch = [next(ids) for _ in range(520)]  # past the batch: one call per id
    assert len(set(batch)) == 520
    for job_id in batch:
        assert _UUID4.fullmatch(job_id)
        parsed = uuid.UUID(job_id)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_enqueue_many_reads_the_clock_once_per_call():
    app = Bananas(broker=fresh_memory_url(), entrypoints=False)
    handles = app.enqueue_many([{"name": "a", "payload": {"i": i}} for i in range(50)]
                               + [{"name": "a", "delay": 60}])
    created = {h.job.created_at for h in handles}
    assert len(created) == 1
    assert handles[-1].job.scheduled_at == pytest.approx(created.pop() + 60, abs=1e-6)
    assert len({h.id for h in handles}) == 51
    app.close()


def test_a_built_body_decodes_to_the_job():
    app = Bananas(broker=fresh_memory_url(), entrypoints=False)
    job, envelope = app.build("a", {"when": datetime.fromisoformat("2026-01-01T00:00:00+00:00"), "n": 1.5})
    assert app.codec.decode(envelope.body) == job
    assert json.loads(envelope.body[envelope.body.index(b"{"):])["payload"]["n"] == 1.5


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(payloads, typed_payloads), min_size=2, max_size=6),
       st.lists(st.sampled_from(["a", "b"]), min_size=6, max_size=6))
def test_a_batch_encodes_to_the_bytes_of_each_job(payloads_, names):
    # Given jobs of one enqueue_many call (shared fields, varying payloads and names)
    app = Bananas(broker=fresh_memory_url(), entrypoints=False)
    specs = [{"name": names[i], "payload": p} for i, p in enumerate(payloads_)]
    jobs, envelopes, _ = app._build_all(specs)
    # Then each body is what encoding the job alone writes, and decodes to that job
    assert [e.body for e in envelopes] == [app.codec.encode(job) for job in jobs]
    decoded = [app.codec.decode(e.body) for e in envelopes]
    assert [(j.id, j.name) for j in decoded] == [(j.id, j.name) for j in jobs]


def test_a_batch_raises_for_the_first_job_at_fault_in_order():
    app = Bananas(broker=fresh_memory_url(), entrypoints=False, overrides={"max_payload_bytes": 2000})
    naive = datetime(2026, 1, 1)
    # an encoding error (job 1) comes before a validation error (job 2)
    with pytest.raises(SerializationError, match=r"^payload field 'when' is a naive datetime"):
        app._build_all([{"name": "a"}, {"name": "a", "payload": {"when": naive}}, {"name": "a", "priority": "bogus"}])
    # a validation error (job 1) before an encoding error (job 2)
    with pytest.raises(ValueError, match="priority"):
        app._build_all([{"name": "a"}, {"name": "a", "priority": "bogus"}, {"name": "a", "payload": {"when": naive}}])
    # a body too big (job 0) before an encoding error (job 1)
    with pytest.raises(SerializationError, match="max_payload_bytes"):
        app._build_all([{"name": "a", "payload": {"x": "y" * 3000}}, {"name": "a", "payload": {"when": naive}}])


def test_a_batch_of_plain_specs_builds_the_jobs_each_spec_builds_alone():
    # Given handlers with their own defaults, one with none, and a name no handler has here
    app = Bananas(broker=fresh_memory_url(), entrypoints=False)

    @app.job("slow", priority="low", max_retries=7, timeout=30)
    def slow(i: int = 0) -> None:  # pragma: no cover - never run
        del i

    @app.job("plain")
    def plain(i: int = 0) -> None:  # pragma: no cover - never run
        del i

    names = ["slow", "plain", "unknown", "slow", "unknown", "plain", "slow", "unknown"]
    specs: list[dict[str, Any]] = [{"name": n, "payload": {"i": i}} for i, n in enumerate(names)]
    specs += [{"name": "slow", "payload": None}, {"name": "unknown"}, {"name": "plain", "priority": "high"}]

    # When they are built as one batch (plain specs after the first of their name take the batch's fast path)
    jobs, envelopes, generated = app._build_all(specs)

    # Then each job is the one its spec builds alone, but for the id and the clock
    for spec, job in zip(specs, jobs, strict=True):
        alone, _ = app.build(spec["name"], spec.get("payload"), priority=spec.get("priority"))
        assert job == attrs.evolve(alone, id=job.id, created_at=job.created_at, enqueued_at=job.enqueued_at)
    assert generated == {job.id for job in jobs} and len(generated) == len(specs)
    assert [(e.id, e.queue, e.job_type, e.eta) for e in envelopes] == [(j.id, j.queue, j.name, None) for j in jobs]
    assert [e.body for e in envelopes] == [app.codec.encode(job) for job in jobs]
    # and no two jobs share a mutable field
    assert len({id(job.headers) for job in jobs}) == len(jobs)
    assert len({id(job.payload) for job in jobs}) == len(jobs)
    assert len({id(job.extra) for job in jobs}) == len(jobs)
    app.close()


def test_the_fast_constructors_set_every_field_of_the_models():
    # A field added to Job or Envelope must be set by app_build's constructors too (else a job would lack it)
    from bananas import app_build
    from bananas.broker import Envelope
    from bananas.job import Job

    assert sorted(app_build.JOB_SLOTS) == sorted(f.name for f in attrs.fields(Job))
    assert sorted(app_build.ENVELOPE_SLOTS) == sorted(f.name for f in attrs.fields(Envelope))
    with pytest.raises(RuntimeError, match="differ"):
        app_build._slot_setters(Job, app_build.JOB_SLOTS[:-1])


def test_the_dumps_many_example_of_serializers_md_runs():
    # docs/SERIALIZERS.md, "Batches: the optional dumps_many": its example is a serializer whose batch path writes
    # what dumps writes, and the codec uses it (a broken example would fail its own asserts here)
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "SERIALIZERS.md").read_text(encoding="utf-8")
    section = text[text.index("## Batches: the optional `dumps_many`"):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("\n```\n")]
    namespace: dict[str, Any] = {}
    exec(compile(code, "SERIALIZERS.md", "exec"), namespace)  # noqa: S102 - the project's own docs
    serializer = namespace["CompactJson"]()
    batch = [{"a": i, "b": [1, 2]} for i in range(3)]
    assert serializer.dumps_many(batch) == [serializer.dumps(m) for m in batch]
