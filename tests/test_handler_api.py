"""The handler API (issue 16, points 1-3 and 8): task objects, ``current_job()`` and progress, retry control,
the payload signature check, ``job_id`` on wait errors, and the attempt history — memory broker, real worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

import bananas
from bananas import Bananas, JobFailed, Reject, ResultTimeout, Retry, Status, current_job
from bananas.attempts import attempts_of
from bananas.errors import UsageError
from bananas.job_context import JobContext
from bananas.task import Task

MakeApp = Callable[..., Bananas]


def _dead_or_done(app: Bananas, job_id: str) -> Callable[[], bool]:
    return lambda: app.get_job(job_id).status in (Status.COMPLETED, Status.DEAD)


# -- 1. task objects -------------------------------------------------------------------------------------------------
def test_task_still_calls_the_function_sync_and_async(make_app: MakeApp) -> None:
    app = make_app()

    @app.job()
    def add(a: int, b: int) -> int:
        return a + b

    @app.job()
    async def mul(a: int, b: int) -> int:
        return a * b

    assert isinstance(add, Task) and add.__name__ == "add"
    assert add(2, b=3) == 5
    assert asyncio.run(mul(a=2, b=3)) == 6
    assert app.handlers["add"].func is add.func  # the worker's HandlerSpec still holds the plain function


def test_enqueue_applies_the_handler_defaults_and_options_override_them(make_app: MakeApp) -> None:
    app = make_app()

    @app.job(priority="high", max_retries=7, timeout="9s")
    def send_email(to: str, subject: str) -> None: ...

    handle = send_email.enqueue(to="a@example.com", subject="hi")
    job = handle.job
    assert (job.priority.value, job.max_retries, job.timeout, job.queue) == ("high", 7, 9.0, "high")
    assert job.payload == {"to": "a@example.com", "subject": "hi"}
    bound = send_email.options(priority="low", delay="60s", job_id="fixed-1", max_retries=1, timeout=2)
    job = bound.enqueue(to="b", subject="x").job
    assert (job.id, job.priority.value, job.max_retries, job.timeout, job.status) == ("fixed-1", "low", 1, 2.0,
                                                                                       Status.SCHEDULED)
    again = bound.options(priority="normal", job_id="fixed-2").enqueue(to="c", subject="y")
    assert again.job.priority.value == "normal" and not again.duplicate
    assert bound.enqueue(to="c", subject="y").duplicate  # fixed-1 is still scheduled: the existing job comes back
    by_name = app.enqueue("send_email", {"to": "d", "subject": "z"})  # by name: same defaults as before
    assert (by_name.job.priority.value, by_name.job.max_retries) == ("high", 7)


def test_enqueue_async_and_queue_guard(make_app: MakeApp) -> None:
    app = make_app()

    @app.job(priority="low")
    async def crunch(n: int) -> int:
        return n

    async def go() -> str:
        handle = await crunch.enqueue_async(n=1)
        await app.aclose()
        return handle.job.queue or ""

    assert asyncio.run(go()) == "low"
    assert crunch.options(queue="low").enqueue(n=2).job.queue == "low"
    with pytest.raises(UsageError, match="jobs 'crunch' go to queue 'low'"):
        crunch.options(queue="high").enqueue(n=3)
    with pytest.raises(TypeError, match="unknown option"):
        crunch.options(colour="red")


def test_enqueue_checks_the_payload_against_the_signature(make_app: MakeApp) -> None:
    app = make_app()

    @app.job()
    def send_email(to: str, subject: str) -> None: ...

    with pytest.raises(TypeError, match=r"payload does not match send_email\(to, subject\): unexpected keyword 'too'"):
        send_email.enqueue(too="a", subject="x")
    with pytest.raises(TypeError, match="missing argument 'subject'"):
        send_email.enqueue(to="a")


def test_submit_and_wait_sync_and_async(make_app: MakeApp, run_worker: Any) -> None:
    app = make_app()

    @app.job()
    def add(a: int, b: int) -> int:
        return a + b

    @app.job()
    async def amul(a: int, b: int) -> int:
        return a * b

    run_worker(app)
    assert add.submit_and_wait(timeout=10, a=1, b=2) == 3

    async def go() -> int:
        try:
            return int(await amul.submit_and_wait_async(timeout=10, a=3, b=4))
        finally:
            await app.aclose()

    assert asyncio.run(go()) == 12


def test_result_timeout_and_job_failed_carry_the_job_id(make_app: MakeApp, run_worker: Any) -> None:
    app = make_app()

    @app.job(max_retries=0)
    def boom() -> None:
        raise RuntimeError("nope")

    @app.job()
    def never() -> None: ...

    handle = never.enqueue()  # no worker yet: nothing runs it
    expected = r"no result for job never \w+ within 200ms; the job keeps running"
    with pytest.raises(ResultTimeout, match=expected) as timeout:
        never.submit_and_wait(timeout="200ms")
    assert timeout.value.job_id and timeout.value.job_id != handle.id
    with pytest.raises(ResultTimeout) as direct:
        app.get_result(handle.id)
    assert direct.value.job_id == handle.id
    run_worker(app)
    with pytest.raises(JobFailed) as failed:
        boom.submit_and_wait(timeout=10)
    assert failed.value.job_id and failed.value.error_type == "RuntimeError"


def test_client_in_a_running_loop_points_to_async_client(make_app: MakeApp) -> None:
    client = bananas.Client(app=make_app())

    async def go() -> None:
        client.get_job("x")

    with pytest.raises(UsageError, match="AsyncClient"):
        asyncio.run(go())


# -- 2. job context and progress ----------------------------------------------------------------------------------
def test_current_job_outside_a_job_is_a_usage_error(make_app: MakeApp) -> None:
    app = make_app()

    @app.job()
    def peek() -> JobContext:
        return current_job()

    with pytest.raises(UsageError, match="only available inside a job handler"):
        current_job()
    with pytest.raises(UsageError):
        peek()  # a direct call runs outside any job


@pytest.mark.parametrize("is_async", [False, True])
def test_current_job_and_progress_in_sync_and_async_handlers(make_app: MakeApp, run_worker: Any, wait_for: Any,
                                                             is_async: bool) -> None:
    app = make_app()
    seen: dict[str, Any] = {}

    def body() -> str:
        ctx = current_job()
        seen.update(id=ctx.id, name=ctx.name, attempt=ctx.attempt, max_retries=ctx.max_retries,
                    enqueued=ctx.enqueued_at, started=ctx.started_at, headers=dict(ctx.headers))
        ctx.logger.info("working")
        ctx.report_progress(0.25, "a quarter")
        ctx.report_progress(1, "done")
        return "ok"

    if is_async:
        @app.job("work", max_retries=4)
        async def work() -> str:
            return body()
    else:
        @app.job("work", max_retries=4)
        def work() -> str:
            return body()

    handle = work.options(headers={"tenant": "t1"}).enqueue()
    assert handle.progress() is None
    run_worker(app)
    assert handle.result(timeout=10) == "ok"
    assert seen["id"] == handle.id and seen["name"] == "work" and seen["attempt"] == 1
    assert seen["max_retries"] == 4 and seen["headers"] == {"tenant": "t1"}
    assert seen["enqueued"] <= seen["started"] <= time.time()
    progress = handle.progress()
    assert progress is not None and (progress.value, progress.message) == (1.0, "done")
    assert bananas.Client(app=app).get_progress(handle.id) == progress


def test_report_progress_refuses_non_numbers(make_app: MakeApp, run_worker: Any) -> None:
    app = make_app()

    @app.job(max_retries=0)
    def bad() -> None:
        current_job().report_progress("half")  # type: ignore[arg-type]

    run_worker(app)
    with pytest.raises(JobFailed, match="value must be a number"):
        bad.submit_and_wait(timeout=10)


# -- 3. retry control ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("is_async", [False, True])
def test_retry_retries_on_the_chosen_delay_and_counts_an_attempt(make_app: MakeApp, run_worker: Any,
                                                                 wait_for: Any, is_async: bool) -> None:
    app = make_app()
    runs: list[float] = []

    def body() -> int:
        runs.append(time.monotonic())
        if current_job().attempt < 3:
            raise Retry(delay=0.3)
        return current_job().attempt

    if is_async:
        @app.job("flaky", max_retries=5)
        async def flaky() -> int:
            return body()
    else:
        @app.job("flaky", max_retries=5)
        def flaky() -> int:
            return body()

    run_worker(app)
    handle = flaky.enqueue()
    assert handle.result(timeout=15) == 3
    assert len(runs) == 3 and all(b - a >= 0.25 for a, b in zip(runs, runs[1:], strict=False))
    wait_for(_dead_or_done(app, handle.id))  # the result is stored just before the ack
    job = app.get_job(handle.id)
    assert job.attempts == 3
    assert [a["outcome"] for a in attempts_of(job)] == ["retried", "retried", "completed"]


def test_retry_past_max_retries_goes_to_the_dead_letters(make_app: MakeApp, run_worker: Any) -> None:
    app = make_app()

    @app.job(max_retries=1)
    def again() -> None:
        raise Retry(delay=0)

    run_worker(app)
    with pytest.raises(JobFailed, match="Retry"):
        again.submit_and_wait(timeout=10)


@pytest.mark.parametrize("is_async", [False, True])
def test_reject_dead_letters_at_once_with_its_reason(make_app: MakeApp, run_worker: Any, wait_for: Any,
                                                     is_async: bool) -> None:
    app = make_app()
    runs: list[int] = []

    if is_async:
        @app.job("refuse", max_retries=5)
        async def refuse() -> None:
            runs.append(1)
            raise Reject("customer unknown")
    else:
        @app.job("refuse", max_retries=5)
        def refuse() -> None:
            runs.append(1)
            raise Reject("customer unknown")

    worker = run_worker(app)
    handle = refuse.enqueue()
    wait_for(_dead_or_done(app, handle.id))
    job = app.get_job(handle.id)
    assert job.status is Status.DEAD and runs == [1]
    letters = app.run_sync(lambda: _letters(app, job.queue or ""))
    assert letters[handle.id] == "rejected: customer unknown"
    assert worker.failed == 1  # one failed run, dead with its reason: counted like any failure


async def _letters(app: Bananas, queue: str) -> dict[str, str]:
    broker = await app.broker()
    admin = app.capabilities(broker).admin
    assert admin is not None
    return {d.id: d.reason for d in await admin.dead_letters(queue)}


def test_dont_retry_for_and_retry_for(make_app: MakeApp, run_worker: Any, wait_for: Any) -> None:
    app = make_app()
    runs: dict[str, int] = {"strict": 0, "picky": 0, "net": 0}

    @app.job(max_retries=5, dont_retry_for=(ValueError,))
    def strict() -> None:
        runs["strict"] += 1
        raise ValueError("bad input")

    @app.job(max_retries=5, retry_for=(ConnectionError,))
    def picky() -> None:
        runs["picky"] += 1
        raise KeyError("not a network error")

    @app.job(max_retries=2, retry_for=(ConnectionError,), retry_backoff=lambda attempt: 0.01)
    def net() -> None:
        runs["net"] += 1
        raise ConnectionError("down")

    run_worker(app)
    handles = [strict.enqueue(), picky.enqueue(), net.enqueue()]
    for handle in handles:
        wait_for(_dead_or_done(app, handle.id))
        assert app.get_job(handle.id).status is Status.DEAD
    assert runs == {"strict": 1, "picky": 1, "net": 3}
    reasons = app.run_sync(lambda: _letters(app, "normal"))
    assert reasons[handles[0].id].startswith("not retried (ValueError is in dont_retry_for)")
    assert reasons[handles[1].id].startswith("not retried (KeyError is not in retry_for)")
    assert reasons[handles[2].id].startswith("failed after 3 attempt(s)")


def test_retry_backoff_tuple_is_checked(make_app: MakeApp) -> None:
    app = make_app()
    with pytest.raises(ValueError, match="retry_backoff"):
        app.job(retry_backoff=(1, 2))
    with pytest.raises(ValueError, match="retry_for"):
        app.job(retry_for=("ValueError",))  # type: ignore[arg-type]
    app.job(retry_backoff=(0.1, 2, 5))(lambda: None)


def test_a_payload_that_does_not_match_is_dead_at_once(make_app: MakeApp, run_worker: Any, wait_for: Any) -> None:
    app = make_app()
    runs: list[int] = []

    @app.job(max_retries=5)
    def send_email(to: str, subject: str) -> None:
        runs.append(1)

    run_worker(app)
    handle = app.enqueue("send_email", {"too": "a", "subject": "x"})  # by name: no producer-side check
    with pytest.raises(JobFailed) as failed:
        handle.result(timeout=10)
    assert failed.value.error_type == "TypeError"
    assert failed.value.message == "payload does not match send_email(to, subject): unexpected keyword 'too'"
    job = app.get_job(handle.id)
    assert job.status is Status.DEAD and runs == [] and job.attempts == 0


# -- 8. attempt history -----------------------------------------------------------------------------------------
def test_started_at_and_the_attempt_history_survive_retries_and_completion(make_app: MakeApp, run_worker: Any,
                                                                            wait_for: Any) -> None:
    app = make_app()

    @app.job(max_retries=3, retry_backoff=lambda attempt: 0.01)
    def twice() -> str:
        if current_job().attempt == 1:
            raise RuntimeError("first try fails")
        return "ok"

    worker = run_worker(app)
    handle = twice.enqueue()
    assert handle.result(timeout=10) == "ok"
    wait_for(_dead_or_done(app, handle.id))
    job = app.get_job(handle.id)
    assert job.status is Status.COMPLETED and job.started_at is not None and job.finished_at is not None
    history = attempts_of(job)
    assert [(a["attempt"], a["outcome"]) for a in history] == [(1, "retried"), (2, "completed")]
    assert history[0]["worker"] == worker.id and history[0]["error"] == "RuntimeError: first try fails"
    assert history[0]["started_at"] <= history[0]["finished_at"] <= history[1]["started_at"]
    assert history[1]["started_at"] == job.started_at


def test_the_history_is_bounded() -> None:
    from bananas.attempts import MAX_HISTORY, add_attempt
    from bananas.job import Job

    job = Job(name="x")
    for n in range(1, MAX_HISTORY + 6):
        job.attempts = n
        add_attempt(job, "w", "retried")
    history = attempts_of(job)
    assert len(history) == MAX_HISTORY and history[0]["attempt"] == 6


def test_bananas_job_shows_progress_and_each_attempt(make_app: MakeApp, run_worker: Any, wait_for: Any,
                                                      memory_url: str, tmp_path: Any,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from bananas.cli import main

    app = make_app()

    @app.job(max_retries=1, retry_backoff=lambda attempt: 0.01)
    def import_rows(rows: int) -> None:
        current_job().report_progress(rows / 2, f"{rows // 2}/{rows} rows")
        raise RuntimeError(f"row {rows // 2} is broken")

    worker = run_worker(app)
    handle = import_rows.options(job_id="cli-history").enqueue(rows=10)
    wait_for(_dead_or_done(app, handle.id))
    config = tmp_path / "cli.toml"
    config.write_text(f'broker = "{memory_url}"\n')

    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config), "job", "cli-history"])
    out = capsys.readouterr().out
    assert exit_info.value.code in (0, None)
    assert "progress:    5 5/10 rows (at " in out
    lines = [line.strip() for line in out.splitlines() if line.startswith("  #")]
    assert len(lines) == 2
    assert lines[0].startswith(f"#1  {worker.id}  ") and lines[0].endswith("retried  RuntimeError: row 5 is broken")
    assert lines[1].startswith(f"#2  {worker.id}  ") and lines[1].endswith("dead  RuntimeError: row 5 is broken")
    with pytest.raises(SystemExit):
        main(["--config", str(config), "job", "cli-history", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["progress"]["message"] == "5/10 rows" and len(data["history"]) == 2


# -- the fast payload check agrees with inspect's bind ---------------------------------------------------------------
def _h1(a: int, b: int, c: int = 0) -> None: ...
def _h2(a: int, *, b: int, c: int = 0) -> None: ...
def _h3(a: int, /, b: int = 0, **rest: int) -> None: ...
def _h4(a: int = 0, *args: int, b: int) -> None: ...
def _h5(a: int, /, b: int) -> None: ...


@pytest.mark.parametrize("func", [_h1, _h2, _h3, _h4, _h5])
def test_the_payload_check_agrees_with_inspect_bind(func: Callable[..., None]) -> None:
    import inspect

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from bananas.handlers import HandlerSpec

    spec = HandlerSpec(func.__name__, func, False)

    @settings(max_examples=200, deadline=None)
    @given(st.dictionaries(st.sampled_from(["a", "b", "c", "d", "rest", "args"]), st.integers(), max_size=5))
    def check(payload: dict[str, int]) -> None:
        try:
            inspect.signature(func).bind(**payload)
            fits = True
        except TypeError:
            fits = False
        problem = spec.mismatch(payload)
        assert (problem is None) == fits, (payload, problem)
        if problem is not None:
            assert problem.startswith(f"payload does not match {func.__name__}(")

    check()
