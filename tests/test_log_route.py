"""The kernel's direct route to the tiers (``bananas.log_route``): ``job_logger`` and standard-library records that
skip loguru's record building write the same JSON line, field for field and in the same order, as the same call
through loguru; a disabled level builds nothing; the route stands aside whenever loguru's set-up changed and comes
back when it is the tiers' again. The file and Elasticsearch tiers' own checks are in their plugins' tests."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loguru import logger

from bananas import Bananas, job_logger, log_route
from bananas.job import Job
from bananas.job_context import JobContext
from bananas.log_context import CURRENT_JOB, InterceptHandler, JobLogger, flush_logs, levels
from bananas.log_record import LINE_KEY, json_line
from bananas.logs import configure_logging


class Console:
    """The JSON console of ``configure_logging`` writing into a string; :meth:`lines` returns what is new."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream
        self.seen = 0

    def lines(self) -> list[dict[str, Any]]:
        flush_logs()
        text = self.stream.getvalue()
        new, self.seen = text[self.seen:], len(text)
        return [json.loads(line) for line in new.split("\n") if line]  # lines end at \n only (not at U+0085)


@pytest.fixture
def console(make_app: Callable[..., Bananas], monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Console]]:
    """``configure(**settings)``: logging configured like a worker's, the console's stderr a string."""
    closers: list[Callable[[], None]] = []
    saved = (levels.debug, levels.info, levels.warning)

    def configure(**overrides: Any) -> Console:
        stream = io.StringIO()
        monkeypatch.setattr(sys, "stderr", stream)
        app = make_app(overrides={"logging.format": "json", "logging.level": "debug", **overrides})
        closers.append(configure_logging(app.settings, app.plugins))
        return Console(stream)

    yield configure
    for close in reversed(closers):
        close()
    levels.debug, levels.info, levels.warning = saved


@pytest.fixture
def json_console(console: Callable[..., Console]) -> Console:
    """The JSON console at DEBUG, configured once for every example of a property."""
    return console()


def both_ways(console: Console, emit: Callable[[], None]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The lines ``emit`` writes through the route, then through loguru (a handler added for the second call makes
    the route stand aside; removed, the route is back)."""
    assert log_route.current() is not None
    emit()
    direct = console.lines()
    aside = logger.add(lambda message: None, level="CRITICAL", format="{message}")
    try:
        assert log_route.current() is None
        emit()
        through_loguru = console.lines()
    finally:
        logger.remove(aside)
    assert log_route.current() is not None
    return direct, through_loguru


def same_lines(direct: list[dict[str, Any]], through_loguru: list[dict[str, Any]]) -> None:
    """Equal field for field and in the same order, but for ``time`` (read at each call): both RFC 3339 UTC, now."""
    assert len(direct) == len(through_loguru)
    for one, other in zip(direct, through_loguru, strict=True):
        for line in (one, other):
            moment = datetime.strptime(line.pop("time"), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            assert abs((datetime.now(UTC) - moment).total_seconds()) < 60
        assert list(one.items()) == list(other.items())


def a_job(name: str = "send_email", attempts: int = 2) -> JobContext:
    job = Job(name=name, payload={}, priority="high", queue="mail", attempts=attempts)
    return JobContext(job, "solo-1", "host-4242", "thin")


names = st.from_regex(r"[a-z][a-z_]{1,10}", fullmatch=True) | st.sampled_from(
    ["queue", "attempt", "duration_ms", "error", "component", "log_source", "msg", "time", "_private"])
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5)
texts = st.text(max_size=40).filter(lambda t: "{" not in t and "}" not in t)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(level=st.sampled_from(["debug", "info", "success", "warning", "error", "critical"]),
       message=texts | st.integers(), bound=st.dictionaries(names, values, max_size=4),
       captured=st.dictionaries(names.filter(lambda n: n != "message"), values, max_size=3),
       in_job=st.booleans())
def test_job_logger_lines_are_the_same_through_the_route_and_through_loguru(
    json_console: Console, level: str, message: Any, bound: dict[str, Any], captured: dict[str, Any], in_job: bool
) -> None:
    # Given the JSON console at DEBUG, a job logger bound to some fields, maybe inside a job
    log = job_logger.bind(**bound) if bound else job_logger
    token = CURRENT_JOB.set(a_job()) if in_job else None
    template = f"{message} {{}}" + "".join(f" {{{name}}}" for name in captured) if isinstance(message, str) else message
    try:
        # When the same call is made through the route and through loguru
        def emit() -> None:
            if isinstance(template, str):
                getattr(log, level)(template, "arg", **captured)
            else:
                getattr(log, level)(template)

        direct, through_loguru = both_ways(json_console, emit)
    finally:
        if token is not None:
            CURRENT_JOB.reset(token)
    # Then each wrote one line, the same
    assert len(direct) == 1
    same_lines(direct, through_loguru)
    assert ("job_id" in direct[0]) == (in_job or "job_id" in {**bound, **captured})
    if "log_source" not in {**bound, **captured}:
        assert direct[0]["log_source"] == "bananas_job"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=texts, args=st.lists(st.integers() | st.text(max_size=10), max_size=3),
       name=st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,8})?", fullmatch=True),
       level=st.sampled_from([logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]),
       in_job=st.booleans(), failing=st.booleans())
def test_stdlib_lines_are_the_same_through_the_route_and_through_loguru(
    json_console: Console, message: str, args: list[Any], name: str, level: int, in_job: bool, failing: bool
) -> None:
    template = message.replace("%", "%%") + " %s" * len(args)
    token = CURRENT_JOB.set(a_job()) if in_job else None

    def emit() -> None:
        if failing:
            try:
                raise ValueError("boom")
            except ValueError:
                logging.getLogger(name).log(level, template, *args, exc_info=True)
        else:
            logging.getLogger(name).log(level, template, *args)

    try:
        direct, through_loguru = both_ways(json_console, emit)
    finally:
        if token is not None:
            CURRENT_JOB.reset(token)
    assert len(direct) == 1
    same_lines(direct, through_loguru)
    assert direct[0]["logger"] == name and direct[0]["log_source"] == ("bananas_job" if in_job else "bananas_internal")
    assert ("traceback" in direct[0]) == failing


def test_exception_contextualize_and_configured_extra_are_the_same_both_ways(console) -> None:
    out = console()
    logger.configure(extra={"component": "worker", "log_source": "bananas_internal", "deployment": "blue"})
    token = CURRENT_JOB.set(a_job())

    def emit() -> None:
        with logger.contextualize(request_id="r-1", job_name="shadowed"):
            try:
                raise KeyError("missing")
            except KeyError:
                job_logger.exception("lookup failed for {key}", key="k1")
            job_logger.log("WARNING", "by name")
            job_logger.log(25, "by number")  # a number is loguru's own: "Level 25" through loguru either way

    try:
        direct, through_loguru = both_ways(out, emit)
    finally:
        CURRENT_JOB.reset(token)
    same_lines(direct, through_loguru)
    failed, by_name, by_number = direct
    assert failed["error"] == "KeyError: 'missing'" and "raise KeyError" in failed["traceback"]
    assert (failed["deployment"], failed["request_id"], failed["key"]) == ("blue", "r-1", "k1")
    assert failed["job_name"] == "shadowed"  # context bound around the call wins over the job's, as with loguru
    assert (by_name["level"], by_number["level"]) == ("WARNING", "Level 25")


def test_a_disabled_level_builds_nothing_on_the_route(console, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the JSON console at INFO (the route installed) and a route that fails if anything reaches it
    console(**{"logging.level": "info"})
    assert log_route.current() is not None
    monkeypatch.setattr(log_route.Route, "write", lambda *a, **k: pytest.fail("a disabled record was built"))

    class Untouchable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"touched .{name}")

        def __str__(self) -> str:
            raise AssertionError("formatted")

    token = CURRENT_JOB.set(Untouchable())  # type: ignore[arg-type]
    try:
        # When DEBUG records are logged with values that fail on any use
        job_logger.debug("value {}", Untouchable())
        job_logger.trace("value {}", Untouchable())
        job_logger.bind(value=Untouchable()).debug("bound {v}", v=Untouchable())
        logging.getLogger("lib").debug("value %s", Untouchable())
    finally:
        CURRENT_JOB.reset(token)
    # Then nothing was read, formatted or written


def test_the_route_is_installed_only_when_every_tier_takes_records_and_stands_aside_for_loguru_s_features(
    console, monkeypatch: pytest.MonkeyPatch
) -> None:
    console(**{"logging.format": "text"})  # loguru renders the text console: no record sink
    assert log_route.current() is None
    console(**{"logging.format": "json"})
    assert log_route.current() is not None
    core = logger._core  # type: ignore[attr-defined]
    with monkeypatch.context() as patch:  # loguru's configure cannot unset a patcher: set and restore it here
        patch.setattr(core, "patcher", lambda record: None)
        assert log_route.current() is None  # a patcher must see every record: loguru's path
    assert log_route.current() is not None
    logger.disable("some.module")  # only loguru knows the caller's module
    try:
        assert log_route.current() is None
    finally:
        logger.enable("some.module")
    assert log_route.current() is not None  # enabled again: nothing is disabled


def test_a_failing_tier_does_not_fail_the_caller_and_the_others_still_write(capsys) -> None:
    got: list[dict[str, Any]] = []

    def broken(record: dict[str, Any]) -> None:
        raise OSError("disk gone")

    route = log_route.install([(20, broken), (20, got.append), (30, got.append)])
    assert route is not None
    try:
        route.write(log_route.LEVELS["INFO"], "hello", {"component": "worker"})
    finally:
        log_route.clear(route)
    assert [record["message"] for record in got] == ["hello"]  # the WARNING tier did not take an INFO record
    assert "a log tier failed to take a record: OSError: disk gone" in capsys.readouterr().err
    assert log_route.current() is None


def test_job_logger_keeps_loguru_s_api() -> None:
    assert isinstance(job_logger.bind(n=1), JobLogger)
    assert job_logger.opt(lazy=True) is not None and callable(job_logger.contextualize)
    assert job_logger.loguru.bind is not None and "bananas_job" in repr(job_logger)
    assert a_job().logger is job_logger


@pytest.fixture
def capture() -> Iterator[list[dict[str, Any]]]:
    """A route to one tier that keeps the records it is handed (loguru's handlers as they are)."""
    got: list[dict[str, Any]] = []
    saved = log_route._route
    route = log_route.install([(logging.DEBUG, got.append)])
    assert route is not None and log_route.current() is route
    intercept = InterceptHandler()
    logging.getLogger().addHandler(intercept)
    yield got
    logging.getLogger().removeHandler(intercept)
    log_route._route = saved


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=st.text(max_size=40), in_job=st.booleans(), stdlib=st.booleans(),
       name=st.text(min_size=1, max_size=12), job_name=st.text(min_size=1, max_size=12).filter(str.isidentifier),
       attempts=st.integers(min_value=0, max_value=10**6))
def test_a_spliced_line_is_the_line_of_its_flat_record(
    capture: list[dict[str, Any]], message: str, in_job: bool, stdlib: bool, name: str, job_name: str, attempts: int
) -> None:
    # Given a record the route splices (no extra context, no exception), as job_logger or stdlib writes it
    capture.clear()
    token = CURRENT_JOB.set(a_job(job_name, attempts)) if in_job else None
    try:
        if stdlib:
            logging.getLogger(name).warning("%s", message)
        else:
            job_logger.warning(message)
    finally:
        if token is not None:
            CURRENT_JOB.reset(token)
    # Then the line it carries is the one json_line builds from the record's flat dict
    (record,) = capture
    spliced = record.pop(LINE_KEY)
    assert spliced == json_line(record) and json.loads(spliced)["msg"] == message


@settings(max_examples=200, deadline=None)
@given(job_id=st.text(min_size=1, max_size=20).filter(lambda t: t.isprintable() and t.strip() == t),
       name=st.from_regex(r"[a-z][a-z0-9_.]{0,15}", fullmatch=True), queue=st.none() | st.text(max_size=10),
       priority=st.sampled_from(["high", "normal", "low"]), attempts=st.integers(min_value=0, max_value=10**9),
       ids=st.tuples(*(st.none() | st.text(max_size=8) for _ in range(3))))
def test_a_job_s_kept_fragment_is_the_fragment_of_its_fields(
    job_id: str, name: str, queue: str | None, priority: str, attempts: int, ids: tuple[str | None, ...]
) -> None:
    from bananas.log_record import fragment

    job = Job(name=name, payload={}, priority=priority, attempts=attempts)
    job.queue = queue
    try:
        job.id = job_id
    except ValueError:  # an id the job model refuses
        return
    scope = JobContext(job, *ids)
    assert scope.log_fragment() == fragment(scope.fields())
    assert scope.log_fragment() is scope.log_fragment()  # kept for the job's other records


def test_at_info_a_job_that_logs_nothing_makes_no_logging_call(
    console, make_app: Callable[..., Bananas], run_worker, wait_for, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: ``LOG_LEVEL=info`` costs a worker nothing per job when no handler logs: no loguru call (not even one
    that its level turns away), no record on the route, no standard-library record."""
    from loguru._logger import Logger

    from bananas.worker_mode import PoolPlan, WorkerPlan

    # Given a worker's logging at INFO (JSON console) and every way into it counted
    console(**{"logging.level": "info"})
    calls: list[str] = []
    real_log, real_write = Logger._log, log_route.Route.write

    def counted_log(self: Any, level: Any, *args: Any) -> Any:
        calls.append(f"loguru {level}: {args[2]!r}")
        return real_log(self, level, *args)

    def counted_write(self: Any, level: Any, message: str, *args: Any, **kwargs: Any) -> None:
        calls.append(f"route {level.name}: {message!r}")
        real_write(self, level, message, *args, **kwargs)

    monkeypatch.setattr(Logger, "_log", counted_log)
    monkeypatch.setattr(log_route.Route, "write", counted_write)
    app = make_app()
    done: list[int] = []

    @app.job("quiet")
    def quiet(n: int) -> None:
        done.append(n)

    queues = app.router.queues(priorities=["high", "normal", "low"])
    run_worker(app, WorkerPlan(mode="test", pools=(PoolPlan("solo", 1, queues, worker_id="solo-1"),)))
    app.enqueue("quiet", {"n": -1})
    wait_for(lambda: done == [-1])  # the worker is up and has logged its start
    # When 50 jobs run
    before = len(calls)
    for n in range(50):
        app.enqueue("quiet", {"n": n})
    wait_for(lambda: len(done) == 51)
    # Then not one logging call was made for them
    assert calls[before:] == []
