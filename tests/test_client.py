"""Client SDK and results on the kernel's memory:// broker and result backend (the Redis twins of these tests live
in plugins/bananas-redis/tests/test_redis_results.py, which also runs the backend behaviour tests on memory://)."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
import uuid
from typing import Any

import pytest

from bananas import AsyncClient, Bananas, Client, JobFailed, JobNotFound, ResultNotStored, ResultTimeout, Status
from bananas.broker import BrokerSpec
from bananas.builtin.memory_broker import MemoryBroker
from bananas.builtin.memory_results import MemoryResultBackend
from bananas.cli import main
from bananas.errors import ConfigError, UsageError
from bananas.hookspecs import hookimpl
from bananas.result_backend import (
    RESULT_TTL_HEADER,
    decode_result,
    encode_failure,
    encode_success,
    parse_ttl,
    result_ttl_header,
    ttl_from_headers,
)
from bananas.worker import settlement as worker_runtime

RUNTIME_READS_RESULT_TTL = "ttl_from_headers" in inspect.getsource(worker_runtime)

ATTEMPTS: dict[str, int] = {}
RELEASE: dict[str, threading.Event] = {}


@pytest.fixture(autouse=True)
def _fresh_results(memory_url):
    yield
    MemoryResultBackend.reset(memory_url)


@pytest.fixture
def worker_app(make_app, run_worker):
    """``worker_app(**overrides)``: an app with the test handlers and a worker thread on the memory broker."""

    def start(**overrides: Any) -> Bananas:
        app = make_app(overrides={"worker.concurrency": 16, **overrides})

        @app.job("echo")
        async def echo(n: int) -> dict[str, int]:
            await asyncio.sleep((n % 5) / 1000)
            return {"n": n}

        @app.job("fail")
        def fail(reason: str) -> None:
            raise ValueError(f"bad input: {reason}")

        @app.job("flaky")
        def flaky(key: str, failures: int) -> str:
            ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
            if ATTEMPTS[key] <= failures:
                raise RuntimeError(f"transient failure {ATTEMPTS[key]}")
            return f"ok after {ATTEMPTS[key]}"

        @app.job("gate")
        def gate(key: str) -> str:
            RELEASE[key].wait(20)
            return "released"

        @app.job("unencodable")
        def unencodable() -> object:
            return object()

        run_worker(app)
        return app

    return start


@pytest.fixture
def client(memory_url):
    made = Client(memory_url, env={})
    yield made
    made.close()


# -- construction ---------------------------------------------------------------------------------------------------


def test_client_url_brings_its_own_result_backend(memory_url) -> None:
    # Given / When a client built from a memory:// URL only
    client = Client(memory_url, env={})

    # Then it is a producer-only app on that broker, with results from the same URL
    assert client.broker_url == memory_url and client.result_backend_url == memory_url
    assert client.app.handlers == {}
    assert "Client broker=memory://" in repr(client)


def test_client_from_config_keeps_the_configured_result_backend(tmp_path, monkeypatch) -> None:
    # Given a config file with a broker and another result backend
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bananas.toml").write_text('broker = "memory://b"\nresult_backend = "memory://r"\n')

    # When / Then Client() reads both; an explicit result_backend wins; a URL brings its own
    assert Client(env={}).result_backend_url == "memory://r"
    assert Client(env={}, result_backend="memory://x").result_backend_url == "memory://x"
    assert Client("memory://c", env={}).result_backend_url == "memory://c"
    # and without a configured result backend, the broker's URL serves when its scheme has one
    (tmp_path / "bananas.toml").write_text('broker = "memory://b"\n')
    assert Client(env={}).result_backend_url == "memory://b"


class _PlainBrokerPlugin:
    """A broker scheme with no result backend of the same name."""

    @hookimpl
    def bananas_register_brokers(self, register) -> None:
        register(BrokerSpec(schemes=("plain",), factory=lambda url, options: MemoryBroker("memory://plain", options)))


def test_client_url_without_a_result_backend_falls_back_to_config(tmp_path, monkeypatch) -> None:
    # Given a broker scheme that has no result backend, and a configured one
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bananas.toml").write_text('result_backend = "memory://cfg"\n')

    # When / Then the configured result backend is used; with none configured there is none
    assert Client("plain://x", plugins=[_PlainBrokerPlugin()], env={}).result_backend_url == "memory://cfg"
    (tmp_path / "bananas.toml").write_text("")
    assert Client("plain://x", plugins=[_PlainBrokerPlugin()], env={}).result_backend_url is None


def test_submit_and_wait_without_result_backend_is_a_usage_error_and_sends_nothing(tmp_path, monkeypatch) -> None:
    # Given a client with no result backend
    monkeypatch.chdir(tmp_path)
    client = Client("plain://x", plugins=[_PlainBrokerPlugin()], env={})

    # When / Then RPC refuses before sending, and get_result says what to configure
    with pytest.raises(UsageError, match="submit_and_wait needs a result backend"):
        client.submit_and_wait("echo", {"n": 1})
    with pytest.raises(UsageError, match="no result backend configured"):
        client.get_result("x")
    client.close()


async def test_blocking_client_inside_a_loop_points_to_async_client(client) -> None:
    # Given / When / Then a blocking call inside a running loop is refused
    with pytest.raises(UsageError, match="use bananas.AsyncClient"):
        client.get_job("x")


# -- behaviour ------------------------------------------------------------------------------------------------------


def test_sync_round_trip_status_and_handle(worker_app, client) -> None:
    # Given a worker
    worker_app()

    # When jobs are submitted, waited for and inspected
    handle = client.submit_job(name="echo", payload={"n": 3}, priority="high")
    assert client.submit_and_wait(name="echo", payload={"n": 4}, timeout=10) == {"n": 4}
    assert handle.result(timeout=10) == {"n": 3}
    assert client.get_result(handle.id, wait="10s") == {"n": 3}

    # Then the job record has status, attempts, queue and timestamps
    deadline = time.monotonic() + 10
    while handle.status() is not Status.COMPLETED and time.monotonic() < deadline:
        time.sleep(0.01)
    job = client.get_job(handle.id)
    assert job.status is Status.COMPLETED and job.attempts == 1 and job.queue == "high"
    assert job.finished_at is not None and job.finished_at >= job.created_at


async def test_async_client_concurrent_rpc_each_get_their_own_result(worker_app, memory_url) -> None:
    # Given a worker and an AsyncClient
    worker_app()
    async with AsyncClient(memory_url, env={}) as client:
        # When 100 RPC calls run at once
        results = await asyncio.gather(*(client.submit_and_wait("echo", {"n": n}, timeout=30) for n in range(100)))

        # Then each got its own result, and handles work asynchronously too
        assert results == [{"n": n} for n in range(100)]
        handle = await client.submit_job("echo", {"n": 7})
        assert await handle.result_async(timeout=10) == {"n": 7}
        assert await handle.status_async() in (Status.RUNNING, Status.COMPLETED)


def test_failed_job_raises_job_failed_with_remote_details(worker_app, client) -> None:
    # Given a handler that raises
    worker_app()

    # When it is called RPC style (no retries)
    with pytest.raises(JobFailed) as info:
        client.submit_and_wait("fail", {"reason": "x"}, timeout=10, max_retries=0)

    # Then the remote type, message and traceback come back, and the job is dead with its last error
    err = info.value
    assert (err.error_type, err.message) == ("ValueError", "bad input: x")
    assert "Traceback (most recent call last)" in err.traceback and "raise ValueError" in err.traceback
    job = client.get_job(err.job_id)
    assert job.status is Status.DEAD and job.last_error == "ValueError: bad input: x"


def test_dead_job_without_stored_failure_is_explained_from_the_broker(worker_app, memory_url, client) -> None:
    # Given a dead job whose stored failure is gone (reset backend), only the broker's record remains
    worker_app()
    with pytest.raises(JobFailed):
        client.submit_and_wait("fail", {"reason": "y"}, timeout=10, max_retries=0, job_id="gone-1")
    MemoryResultBackend.reset(memory_url)

    # When / Then the failure still comes back, from the dead job's record
    with pytest.raises(JobFailed) as info:
        client.get_result("gone-1")
    assert (info.value.error_type, info.value.message) == ("ValueError", "bad input: y")
    assert "raise ValueError" in info.value.traceback


def test_waiting_spans_retries_until_success(worker_app, client) -> None:
    # Given a handler that fails twice, then succeeds
    worker_app()
    key = uuid.uuid4().hex

    # When / Then one wait returns the final result
    assert client.submit_and_wait("flaky", {"key": key, "failures": 2}, timeout=20, max_retries=3) == "ok after 3"


def test_timeout_while_running_then_the_job_completes(worker_app, client) -> None:
    # Given a running job
    worker_app()
    key = uuid.uuid4().hex
    RELEASE[key] = threading.Event()
    handle = client.submit_job("gate", {"key": key})

    # When waiters give up
    with pytest.raises(ResultTimeout, match="within 0.2s; the job keeps running"):
        client.get_result(handle.id, wait=0.2)
    with pytest.raises(ResultTimeout, match="no result yet"):
        handle.result()
    with pytest.raises(ResultTimeout, match="keeps running"):
        client.submit_and_wait("gate", {"key": key}, timeout=0.2)

    # Then the job still completes
    RELEASE[key].set()
    assert handle.result(timeout=10) == "released"


def test_unknown_job_id_is_job_not_found_at_once(worker_app, client) -> None:
    # Given / When / Then
    worker_app()
    started = time.monotonic()
    with pytest.raises(JobNotFound, match="no job with id 'missing'"):
        client.get_result("missing", wait=10)
    assert time.monotonic() - started < 2
    with pytest.raises(JobNotFound, match="no job with id 'missing'"):
        client.get_job("missing")


def test_result_ttl_from_options_expires(worker_app, client) -> None:
    # Given results that live 300 ms
    worker_app(**{"result_backend_options": {"ttl": "300ms"}})
    handle = client.submit_job("echo", {"n": 1})
    assert client.get_result(handle.id, wait=10) == {"n": 1}

    # When the TTL passes
    time.sleep(0.5)

    # Then the result is gone, with a clear message
    with pytest.raises(JobNotFound, match="completed but no result is stored"):
        client.get_result(handle.id)


@pytest.mark.skipif(not RUNTIME_READS_RESULT_TTL, reason="needs the runtime to pass the result_ttl header to store()")
def test_per_job_result_ttl_zero_stores_nothing(worker_app, client) -> None:
    # Given a job that asks for no stored result
    worker_app()
    handle = client.submit_job("echo", {"n": 2}, result_ttl=0)
    deadline = time.monotonic() + 10
    while handle.status() is not Status.COMPLETED and time.monotonic() < deadline:
        time.sleep(0.01)

    # When / Then it completed and nothing was kept
    with pytest.raises(JobNotFound, match="completed but no result is stored"):
        client.get_result(handle.id)


def test_a_worker_with_no_result_setting_keeps_results_in_its_brokers_backend(run_worker, memory_url) -> None:
    # Given a worker app whose configuration names no result backend at all (as in the README)
    app = Bananas(broker=memory_url, env={}, overrides={"worker.mode": "thin"})
    assert app.settings["result_backend"] is None and app.result_backend_url == memory_url

    @app.job("double")
    def double(n: int) -> int:
        return n * 2

    run_worker(app)
    # When a client on the same URL asks for a result
    with Client(memory_url, env={}) as client:
        # Then it comes back: results live beside the jobs, with no setting on either side
        assert client.submit_and_wait("double", {"n": 21}, timeout=10) == 42


def test_result_backend_none_stores_nothing_and_the_client_fails_before_sending(memory_url) -> None:
    # Given result_backend = "none" (any case) on the client side
    app = Bananas(broker=memory_url, result_backend="None", env={})
    assert app.settings["result_backend"] == "none" and app.result_backend_url is None
    with Client(app=app) as client:
        # When / Then RPC refuses before anything is sent
        with pytest.raises(UsageError, match="result_backend is 'none'"):
            client.submit_and_wait("echo", {"n": 1}, job_id="never-sent")
        with pytest.raises(JobNotFound):
            client.get_job("never-sent")


def test_waiting_for_a_result_a_worker_never_stores_ends_at_once(run_worker, memory_url) -> None:
    # Given a worker that stores no results, and a client that has a result backend
    worker = Bananas(broker=memory_url, result_backend="none", env={}, overrides={"worker.mode": "thin"})

    @worker.job("echo")
    def echo(n: int) -> int:
        return n

    run_worker(worker)
    with Client(memory_url, env={}) as client:
        # When it waits (up to 30 s) for a result
        started = time.monotonic()
        with pytest.raises(ResultNotStored, match="completed but no result is stored"):
            client.submit_and_wait("echo", {"n": 1}, timeout=30)
        # Then the wait ends as soon as the job's record says it completed, not at the timeout
        assert time.monotonic() - started < 5


def test_submit_and_wait_with_result_ttl_zero_is_a_usage_error_and_sends_nothing(client) -> None:
    with pytest.raises(UsageError, match="result_ttl=0 would wait for a result that is never stored"):
        client.submit_and_wait("echo", {"n": 1}, result_ttl=0, job_id="never-sent-1")
    with pytest.raises(UsageError, match="result_ttl=0"):
        client.submit_and_wait("echo", {"n": 1}, result_ttl="0s", job_id="never-sent-2")
    for job_id in ("never-sent-1", "never-sent-2"):
        with pytest.raises(JobNotFound):
            client.get_job(job_id)


def test_unencodable_result_completes_the_job_and_stores_why(worker_app, client) -> None:
    # Given a handler whose result no serializer can hold, and retries allowed
    worker_app()

    # When / Then the job completes (never retried) and its result is an error naming the job and the reason
    with pytest.raises(JobFailed) as info:
        client.submit_and_wait("unencodable", {}, timeout=10, max_retries=3)
    assert info.value.error_type == "UnstorableResult"
    assert "result of unencodable cannot be stored" in info.value.message
    deadline = time.monotonic() + 10  # the result is stored just before the ack
    while client.get_job(info.value.job_id).status is not Status.COMPLETED and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.get_job(info.value.job_id).status is Status.COMPLETED


def test_result_ttl_option_becomes_a_validated_header(client) -> None:
    # Given / When a job submitted with result_ttl
    handle = client.submit_job("echo", {"n": 1}, result_ttl="10m", headers={"trace": "t1"})

    # Then it travels as a header next to the others; bad values are refused before sending
    assert handle.job.headers["trace"] == "t1" and handle.job.headers[RESULT_TTL_HEADER] == "600.0"
    assert ttl_from_headers(handle.job.headers) == 600.0
    with pytest.raises(ValueError, match="result_ttl"):
        client.submit_job("echo", {"n": 1}, result_ttl="soon")


def test_result_helpers_round_trip() -> None:
    # Given the kernel's serializer
    from bananas.builtin.json_serializer import JsonSerializer

    serializer = JsonSerializer()

    # When / Then success and failure bodies decode to a value and to JobFailed
    assert decode_result(serializer, "j", encode_success(serializer, [1, "a"])) == [1, "a"]
    with pytest.raises(JobFailed) as info:
        decode_result(serializer, "j", encode_failure(serializer, "KeyError", "'x'", "tb"))
    assert (info.value.error_type, info.value.message, info.value.traceback) == ("KeyError", "'x'", "tb")
    assert parse_ttl("1h") == 3600.0 and parse_ttl(0) == 0.0 and result_ttl_header(5) == "5.0"
    assert ttl_from_headers({}) is None and ttl_from_headers({RESULT_TTL_HEADER: "junk"}) is None
    with pytest.raises(ValueError, match="result_ttl"):
        parse_ttl(-1)


def test_memory_backend_rejects_unknown_options() -> None:
    # Given / When / Then
    with pytest.raises(ConfigError, match=r"result_backend_options\.size"):
        MemoryResultBackend("memory://x", {"size": 1})
    with pytest.raises(ConfigError, match=r"result_backend_options\.ttl"):
        MemoryResultBackend("memory://x", {"ttl": "later"})


# -- CLI ------------------------------------------------------------------------------------------------------------


def _run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_cli_result_and_job_exit_codes(worker_app, client, memory_url, tmp_path, capsys) -> None:
    # Given a config naming the memory broker (same process: same store), a completed, a dead and a running job
    worker_app()
    config = tmp_path / "cli.toml"
    config.write_text(f'broker = "{memory_url}"\n')
    ok = client.submit_job("echo", {"n": 5})
    client.get_result(ok.id, wait=10)
    with pytest.raises(JobFailed):
        client.submit_and_wait("fail", {"reason": "cli"}, timeout=10, max_retries=0, job_id="cli-dead")
    key = uuid.uuid4().hex
    RELEASE[key] = threading.Event()
    running = client.submit_job("gate", {"key": key})

    # When / Then: 0 with the JSON result
    assert _run_cli(capsys, "--config", str(config), "result", ok.id, "--wait", "5s") == (0, '{"n": 5}\n', "")
    # 1 with the remote error and traceback
    code, _, err = _run_cli(capsys, "--config", str(config), "result", "cli-dead")
    assert code == 1 and err.startswith("Error: job cli-dead failed: ValueError: bad input: cli\nRemote traceback:")
    # 3 while running, 2 for an unknown id or a bad duration
    code, _, err = _run_cli(capsys, "--config", str(config), "result", running.id, "--wait", "100ms")
    assert code == 3 and "the job keeps running" in err
    assert _run_cli(capsys, "--config", str(config), "result", "nope")[0] == 2
    code, _, err = _run_cli(capsys, "--config", str(config), "result", ok.id, "--wait", "soon")
    assert code == 2 and err.startswith("Error: --wait:")
    RELEASE[key].set()
    # `bananas job` as text and JSON
    code, out, _ = _run_cli(capsys, "--config", str(config), "job", "cli-dead")
    assert code == 0 and "status:      dead" in out and "last error:  ValueError: bad input: cli" in out
    assert "reason:      failed after 1 attempt(s): ValueError: bad input: cli" in out
    code, out, _ = _run_cli(capsys, "--config", str(config), "job", "cli-dead", "--json")
    data = json.loads(out)
    assert data["status"] == "dead" and data["attempts"] == 1 and data["queue"] == "normal"
    assert "raise ValueError" in data["traceback"]
    code, _, err = _run_cli(capsys, "--config", str(config), "job", "nope")
    assert code == 2 and err.startswith("Error: no job with id 'nope'")
