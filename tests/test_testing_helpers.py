"""bananas.testing for application authors: memory apps, run_until_idle (with fast-forward) and eager mode."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import time
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bananas import Bananas, JobFailed, Status
from bananas.builtin.memory_broker import MemoryBroker
from bananas.errors import UsageError
from bananas.testing import (
    FastForwardClock,
    eager,
    memory_app,
    run_until_idle,
    run_until_idle_async,
    use_memory,
)

TASKS_PY = '''
from bananas import Bananas

app = Bananas()  # at import time, from bananas.toml and the environment


@app.job()
def send_email(to: str) -> str:
    app.enqueue("audit", {"what": f"mail to {to}"})  # the module-level app, as application code does
    return f"sent to {to}"


@app.job()
async def audit(what: str) -> str:
    return what.upper()
'''


def _import_tasks(directory: Path, name: str):
    """Import ``directory/tasks.py`` under a unique module name (as the user's test session would import it)."""
    spec = importlib.util.spec_from_file_location(name, directory / "tasks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _redis_scheme_installed() -> bool:
    return importlib.util.find_spec("bananas_redis") is not None  # found, not imported (kernel tests import none)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A user's project directory with tasks.py; each test writes its own bananas.toml."""
    (tmp_path / "tasks.py").write_text(TASKS_PY)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop(f"tasks_{id(tmp_path):x}", None)


@pytest.mark.skipif(not _redis_scheme_installed(), reason="needs the redis:// scheme (bananas-redis installed)")
def test_a_module_level_app_configured_for_redis_runs_on_memory_without_touching_the_environment(project):
    # Given a bananas.toml pointing at a Redis nobody listens on, and tasks.py building its app at import
    (project / "bananas.toml").write_text('broker = "redis://127.0.0.1:1/0"\n[jobs]\nmax_retries = 7\n')
    environ = dict(os.environ)
    tasks = _import_tasks(project, f"tasks_{id(project):x}")
    assert tasks.app.broker_url == "redis://127.0.0.1:1/0"

    # When the test moves that very app object onto memory and runs a job that enqueues through the module global
    with use_memory(tasks) as app:
        handle = tasks.app.enqueue("send_email", {"to": "ada@example.org"})
        summary = run_until_idle(app)

        # Then both jobs ran on memory, the app kept its handlers and its file settings, and no Redis was needed
        assert app is tasks.app and app.broker_url.startswith("memory://")
        assert handle.result() == "sent to ada@example.org"
        assert (summary.succeeded, summary.failed) == (2, 0)
        assert summary.results_of("audit") == ["MAIL TO ADA@EXAMPLE.ORG"]
        assert app.settings["jobs.max_retries"] == 7
        assert app.settings.source("jobs.max_retries") == "file bananas.toml"

    # And afterwards the app is its Redis-configured self again, and the environment was never changed
    assert tasks.app.broker_url == "redis://127.0.0.1:1/0"
    assert sorted(tasks.app.handlers) == ["audit", "send_email"]
    assert dict(os.environ) == environ


def test_a_module_level_app_gets_a_fresh_memory_broker_of_its_own(project):
    # Given a project whose configuration names a shared memory broker, holding a stale job
    (project / "bananas.toml").write_text('broker = "memory://production-like"\n')
    tasks = _import_tasks(project, f"tasks_{id(project):x}")
    stale = tasks.app.enqueue("audit", {"what": "stale"})

    # When the test rebinds the app and runs it until idle
    with use_memory(tasks.app) as app:
        url = app.broker_url
        summary = run_until_idle(app)

    # Then the stale job of the configured broker was not seen, and the test's broker state is gone afterwards
    assert url != "memory://production-like"
    assert summary.succeeded == 0
    assert tasks.app.get_job(stale.id).status is Status.PENDING
    assert asyncio.run(MemoryBroker(url).depths()) == {}
    MemoryBroker.reset("memory://production-like")


def test_memory_app_builds_a_twin_with_the_same_handlers_and_settings_and_test_overrides(project):
    # Given an app with a handler, a file setting and a code schedule
    (project / "bananas.toml").write_text('[jobs]\ntimeout = "45s"\n')
    tasks = _import_tasks(project, f"tasks_{id(project):x}")
    tasks.app.periodic("nightly", cron="0 3 * * *", job="audit", payload={"what": "night"})

    # When a twin is built with an override
    twin = memory_app(tasks.app, **{"jobs.max_retries": 0})

    # Then it is a different object on its own memory broker with the same handlers, schedule and settings
    assert twin is not tasks.app and twin.broker_url.startswith("memory://")
    assert twin.result_backend_url == twin.broker_url
    assert twin.handlers == tasks.app.handlers
    assert twin.schedules.names() == ["nightly"]
    assert (twin.settings["jobs.timeout"], twin.settings.source("jobs.timeout")) == (45.0, "file bananas.toml")
    assert (twin.settings["jobs.max_retries"], twin.settings.source("jobs.max_retries")) == (0, "test override")
    assert isinstance(twin.broker_options.clock, FastForwardClock)


def test_a_test_app_refuses_a_broker_override_with_a_clear_error():
    # Given / When / Then
    with pytest.raises(UsageError, match="broker: a test app runs on its own memory:// broker"):
        memory_app(broker="redis://localhost")


def test_the_bananas_app_fixture_is_an_empty_app_on_a_fresh_memory_broker(bananas_app, bananas_memory_app):
    # Given / When a second app from the factory
    other = bananas_memory_app()

    # Then both are empty memory apps on different brokers
    assert bananas_app.handlers == {} and bananas_app.broker_url.startswith("memory://")
    assert other.broker_url != bananas_app.broker_url


def test_the_fixture_s_rebinding_is_undone_exactly(project):
    # Given a module-level app, and the rebinding the bananas_memory_app fixture makes and undoes at teardown
    from bananas.testing.apps import Rebinding

    tasks = _import_tasks(project, f"tasks_{id(project):x}")
    before = dict(vars(tasks.app))
    binding = Rebinding(tasks.app, "memory://rebinding-undo", {"jobs.max_retries": 1})
    tasks.app.enqueue("audit", {"what": "x"})

    # When it is undone
    binding.undo()

    # Then every attribute of the app is the object it was before, and the memory state is gone
    assert vars(tasks.app).keys() == before.keys()
    assert all(vars(tasks.app)[name] is value for name, value in before.items())
    assert asyncio.run(MemoryBroker("memory://rebinding-undo").depths()) == {}


def test_the_memory_app_factory_rebinds_a_module_for_the_test(project, bananas_memory_app):
    # Given a user module whose app reads a configuration naming another broker
    (project / "bananas.toml").write_text('broker = "memory://configured"\n')
    tasks = _import_tasks(project, f"tasks_{id(project):x}")

    # When the factory gets the module
    app = bananas_memory_app(tasks, **{"worker.concurrency": 2})

    # Then the module's own app object is on a fresh memory broker with the override
    assert app is tasks.app and app.broker_url not in ("memory://configured", "memory://")
    assert app.settings["worker.concurrency"] == 2


# -- run_until_idle ---------------------------------------------------------------------------------------------


def _app_with_handlers(**overrides) -> Bananas:
    app = memory_app(**overrides)
    attempts: list[int] = []

    @app.job()
    def add(a: int, b: int) -> int:
        return a + b

    @app.job()
    async def shout(text: str) -> str:
        await asyncio.sleep(0)
        return text.upper()

    @app.job()
    def flaky(fail_times: int) -> str:
        attempts.append(1)
        if len(attempts) <= fail_times:
            raise ConnectionError(f"attempt {len(attempts)} failed")
        return f"ok after {len(attempts)}"

    @app.job()
    def broken() -> None:
        raise ValueError("always broken")

    app.attempts = attempts  # type: ignore[attr-defined]
    return app


def test_run_until_idle_runs_sync_and_async_jobs_and_reports_what_happened():
    # Given two ready jobs and one that fails for good
    app = _app_with_handlers()
    added = app.enqueue("add", {"a": 2, "b": 3})
    shouted = app.enqueue("shout", {"text": "hi"})
    broken = app.enqueue("broken", max_retries=0)

    # When the worker runs in-process until idle
    summary = run_until_idle(app, timeout=10)

    # Then the summary counts each outcome, and the results are stored for the handles
    assert (summary.succeeded, summary.failed, summary.dead, summary.scheduled) == (2, 1, 1, 0)
    assert summary.results == {added.id: 5, shouted.id: "HI"}
    assert isinstance(summary.errors[broken.id], ValueError)
    assert summary.dead_reasons[broken.id].startswith("failed after 1 attempt(s): ValueError: always broken")
    assert (added.result(), shouted.result()) == (5, "HI")
    assert broken.status() is Status.DEAD


def test_without_fast_forward_jobs_scheduled_for_later_are_left_scheduled():
    # Given a job delayed by an hour
    app = _app_with_handlers()
    later = app.enqueue("add", {"a": 1, "b": 1}, delay="1h")

    # When the worker runs until idle
    summary = run_until_idle(app, timeout=5)

    # Then it did not run and is reported as left scheduled
    assert (summary.succeeded, summary.scheduled) == (0, 1)
    assert later.status() is Status.SCHEDULED


def test_fast_forward_runs_delayed_jobs_and_retries_without_waiting_for_them():
    # Given a job delayed by an hour and a flaky one whose retries back off a minute and more
    app = _app_with_handlers(**{"jobs.retry_backoff_base": 60, "jobs.retry_backoff_max": 3600})
    later = app.enqueue("add", {"a": 1, "b": 1}, delay="1h")
    flaky = app.enqueue("flaky", {"fail_times": 2}, max_retries=5)

    # When the worker runs until idle with the clock fast-forwarded
    started = time.monotonic()
    summary = run_until_idle(app, timeout=10, fast_forward=True)

    # Then both completed: the delay and two back-offs were skipped (well within the bounded timeout)
    assert time.monotonic() - started < 10
    assert (later.result(), flaky.result()) == (2, "ok after 3")
    assert (summary.succeeded, summary.failed, summary.retried, summary.scheduled) == (2, 2, 2, 0)
    assert app.get_job(flaky.id).attempts == 3
    assert app.broker_options.clock.offset > 3500  # the hour (less the wall time the test took)


def test_fast_forward_on_a_plain_memory_app_skips_time_for_that_run_only(tmp_path, monkeypatch):
    # Given an app built directly on memory:// (its brokers on the wall clock)
    monkeypatch.chdir(tmp_path)
    app = Bananas(broker="memory://plain-ff", result_backend="memory://plain-ff", env={}, entrypoints=False)

    @app.job()
    def ping() -> str:
        return "pong"

    handle = app.enqueue("ping", delay="2h")

    # When it is run until idle with fast_forward
    summary = run_until_idle(app, fast_forward=True)

    # Then the job ran and the app's own clock is the wall clock again
    assert summary.results == {handle.id: "pong"}
    assert app.broker_options.clock is time.time
    MemoryBroker.reset("memory://plain-ff")


def test_fast_forward_refuses_a_broker_that_is_not_memory(tmp_path, monkeypatch):
    # Given an app on another broker scheme (a stand-in plugin; nothing connects)
    from bananas.broker import BrokerSpec
    from bananas.hookspecs import hookimpl

    class Elsewhere:
        @hookimpl
        def bananas_register_brokers(self, register):
            register(BrokerSpec(schemes=("elsewhere",), factory=MemoryBroker, summary="stand-in"))

    monkeypatch.chdir(tmp_path)
    app = Bananas(broker="elsewhere://x", env={}, entrypoints=False, plugins=[Elsewhere()])

    # When / Then
    with pytest.raises(UsageError, match="fast_forward needs the memory:// broker"):
        run_until_idle(app, fast_forward=True)


def test_run_until_idle_times_out_naming_what_is_left():
    # Given a job that enqueues itself again, forever
    app = memory_app()

    @app.job()
    async def forever(n: int) -> None:
        await app.enqueue_async("forever", {"n": n + 1})

    app.enqueue("forever", {"n": 0})

    # When / Then
    with pytest.raises(TimeoutError, match=r"not idle after 0.3s: \d+ ready, \d+ running"):
        run_until_idle(app, timeout=0.3)


def test_a_hung_handler_times_out_and_the_worker_still_stops_within_its_shutdown_timeout():
    # Given a handler that would run for 30 s, on an app giving running jobs 0.2 s at shutdown
    app = memory_app(**{"worker.shutdown_timeout": 0.2})

    @app.job()
    def hang() -> None:
        for _ in range(3000):
            time.sleep(0.01)

    app.enqueue("hang")

    # When run_until_idle gives up after 0.3 s
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="1 running"):
        run_until_idle(app, timeout=0.3)

    # Then the worker stopped (the handler interrupted) long before the handler would have ended
    assert time.monotonic() - started < 10


async def test_run_until_idle_async_keeps_the_calling_loop_running():
    # Given an async test enqueuing with the async API
    app = _app_with_handlers()
    handle = await app.enqueue_async("shout", {"text": "async"})
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(tick())

    # When the worker runs until idle from the running loop
    summary = await run_until_idle_async(app)
    ticker.cancel()

    # Then the job ran, the result awaits at once, and this loop kept running meanwhile
    assert summary.results == {handle.id: "ASYNC"}
    assert await handle.result_async() == "ASYNC"
    assert ticks > 0
    await app.aclose()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(min_value=-1e6, max_value=1e6)), max_size=20))
def test_fast_forward_clock_only_moves_forward_and_never_behind_the_wall_clock(moves):
    # Given a clock and any sequence of jumps (by seconds, or to a time that may be in the past)
    clock = FastForwardClock()
    last = clock()
    for by_seconds, amount in moves:
        # When it is moved
        if by_seconds and amount >= 0:
            clock.advance(amount)
        elif not by_seconds:
            clock.advance_to(time.time() + amount)
        now = clock()

        # Then it never went back and is never behind the wall clock
        assert now >= last and now >= time.time() - 0.001
        last = now


async def test_next_eta_is_the_earliest_live_scheduled_job(memory_url):
    # Given a memory broker with two scheduled jobs, the earlier one then moved to its queue
    from bananas.broker import Envelope

    broker = MemoryBroker(memory_url)
    now = time.time()
    await broker.enqueue([Envelope("a", "q", b"a", now + 10), Envelope("b", "q", b"b", now + 20)])
    assert broker.next_eta() == now + 10
    clock = FastForwardClock()
    clock.advance(15)
    moved = MemoryBroker(memory_url, attrs.evolve(broker.options, clock=clock))

    # When the due one is moved
    assert await moved.move_due() == 1

    # Then the next eta is the later job's, and none once it is gone too
    assert broker.next_eta() == now + 20
    clock.advance(10)
    await moved.move_due()
    assert broker.next_eta() is None


def test_fast_forward_clock_never_runs_behind_the_wall_clock_nor_back():
    # Given a clock
    clock = FastForwardClock()

    # When it is moved forward, and asked to move back
    before = time.time()
    clock.advance(10)
    clock.advance_to(before)  # in the past: stays

    # Then it is ahead of the wall clock by the jump, and refuses to go back
    assert clock() >= time.time() + 9.9
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(-1)


# -- eager ------------------------------------------------------------------------------------------------------


def test_eager_runs_sync_and_async_jobs_at_enqueue():
    # Given an eager block
    app = _app_with_handlers()
    with eager(app) as block:
        # When jobs are enqueued
        added = app.enqueue("add", {"a": 20, "b": 22})
        assert added.status() is Status.COMPLETED  # ran before enqueue returned
        shouted = app.enqueue("shout", {"text": "now"})

        # Then each has run before enqueue returned, and its result is stored
        assert (added.result(), shouted.result()) == (42, "NOW")
        assert block.last.results == {shouted.id: "NOW"}

    # And after the block jobs are only enqueued again
    pending = app.enqueue("add", {"a": 1, "b": 1})
    assert pending.status() is Status.PENDING


async def test_eager_runs_jobs_enqueued_with_the_async_api():
    # Given an eager block in async code
    app = _app_with_handlers()
    with eager(app):
        # When a job is enqueued with await
        handle = await app.enqueue_async("shout", {"text": "awaited"})

        # Then it has run
        assert await handle.result_async() == "AWAITED"
    await app.aclose()


def test_eager_raises_the_handlers_own_exception_for_a_job_that_fails_for_good():
    # Given an eager block (propagate is the default)
    app = _app_with_handlers()
    with eager(app), pytest.raises(ValueError, match="always broken") as raised:
        # When a job that always fails is enqueued
        app.enqueue("broken", max_retries=1)

    # Then the handler's exception propagates, with a note naming the job and its attempts
    assert any("job broken" in note and "after 2 attempt(s)" in note for note in raised.value.__notes__)


def test_eager_without_propagation_stores_the_failure_like_a_worker():
    # Given an eager block that does not propagate
    app = _app_with_handlers()
    with eager(app, propagate=False):
        # When a failing job is enqueued
        handle = app.enqueue("broken", max_retries=0)

    # Then enqueue returned, the job is dead and its result raises JobFailed
    assert handle.status() is Status.DEAD
    with pytest.raises(JobFailed, match="ValueError: always broken"):
        handle.result()


def test_eager_follows_the_retry_policy_fast_forwarded_or_runs_once():
    # Given a handler failing twice, with a minute of backoff
    app = _app_with_handlers(**{"jobs.retry_backoff_base": 60})

    # When it is enqueued eagerly with retries (the default)
    with eager(app):
        handle = app.enqueue("flaky", {"fail_times": 2}, max_retries=3)

    # Then it succeeded on its third attempt within the enqueue call
    assert handle.result() == "ok after 3"

    # And with retries=False a failure is final at once
    app.attempts.clear()
    with eager(app, retries=False), pytest.raises(ConnectionError, match="attempt 1 failed"):
        app.enqueue("flaky", {"fail_times": 2})


def test_eager_runs_delayed_jobs_and_jobs_enqueued_by_jobs_before_enqueue_returns():
    # Given a handler that enqueues a follow-up job
    app = _app_with_handlers()
    seen: list[str] = []

    @app.job()
    def parent() -> str:
        child = app.enqueue("child", delay="1h")  # inside a job: does not wait for itself
        seen.append(f"child {child.status().value}")
        return child.id

    @app.job()
    async def child() -> str:
        seen.append("child ran")
        return "child done"

    # When the parent is enqueued eagerly
    with eager(app) as block:
        handle = app.enqueue("parent")

    # Then the delayed child ran too, before enqueue returned
    child_id = handle.result()
    assert app.get_result(child_id) == "child done"
    assert seen == ["child scheduled", "child ran"]
    assert block.last.succeeded == 2


def test_eager_raises_job_failed_for_a_job_without_a_handler():
    # Given an eager app without a handler named "nobody"
    app = _app_with_handlers()

    # When / Then
    with eager(app), pytest.raises(JobFailed, match="no handler for job 'nobody'"):
        app.enqueue("nobody")


def test_eager_refuses_to_nest_on_the_same_app():
    # Given an eager block
    app = _app_with_handlers()
    with eager(app):
        # When / Then a second one on the same app is refused
        with pytest.raises(UsageError, match="eager block already"):
            eager(app).__enter__()
