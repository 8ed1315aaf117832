"""Structured job logs (issue 12): the worker's events and their flat fields, handler logging (``job_logger`` and the
standard library inside a job), disabled levels that cost nothing, and the console tier (JSON/text, its writer
thread, a real ``bananas worker`` subprocess)."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from bananas import Bananas, job_logger
from bananas.builtin.stdout_logsink import ConsoleWriter, console_sink
from bananas.log_context import InterceptHandler, levels, set_min_level
from bananas.log_record import flat_record
from bananas.logs import configure_logging
from bananas.worker import events
from bananas.worker.depth_log import depth_duty
from bananas.worker_mode import PoolPlan, WorkerPlan

Events = list[dict[str, Any]]


@pytest.fixture
def records() -> Iterator[Events]:
    """Every record from DEBUG up, as the flat event every tier writes; the level flags say DEBUG is on."""
    captured: Events = []
    saved = (levels.debug, levels.info, levels.warning)
    sink = logger.add(lambda message: captured.append(flat_record(message.record)), level="DEBUG")
    set_min_level("DEBUG")
    yield captured
    try:
        logger.remove(sink)
    except ValueError:  # configure_logging removed it (and the test added its own)
        pass
    levels.debug, levels.info, levels.warning = saved


def one_slot(app: Bananas) -> WorkerPlan:
    queues = app.router.queues(priorities=["high", "normal", "low"])
    return WorkerPlan(mode="test", pools=(PoolPlan("solo", 1, queues, worker_id="solo-1"),), scheduler_interval=0.1)


def of_job(captured: Events, job_id: str) -> Events:
    return [r for r in list(captured) if r.get("job_id") == job_id]


def kernel_events(captured: Events, job_id: str) -> list[str]:
    return [r["event"] for r in of_job(captured, job_id) if r["log_source"] == "bananas_internal" and "event" in r]


JOB_FIELDS = ("job_id", "job_name", "priority", "queue", "attempt", "pool_id", "worker_id", "worker_type")


# -- the job events ------------------------------------------------------------------------------------------------

def test_a_job_that_succeeds_logs_dequeued_started_succeeded_at_debug_with_the_job_fields(
    make_app, run_worker, wait_for, records
) -> None:
    # Given an app with one handler and a one-slot worker
    app = make_app()

    @app.job("add")
    def add(a: int, b: int) -> int:
        return a + b

    handle = app.enqueue("add", {"a": 1, "b": 2}, priority="high")
    worker = run_worker(app, one_slot(app))
    # When the job runs
    assert handle.result(timeout=10) == 3
    wait_for(lambda: "succeeded" in kernel_events(records, handle.id))

    # Then three DEBUG events name it, in order, each with every job field
    mine = [r for r in of_job(records, handle.id) if "event" in r]
    assert [(r["event"], r["level"]) for r in mine] == [("dequeued", "DEBUG"), ("started", "DEBUG"),
                                                       ("succeeded", "DEBUG")]
    for record in mine:
        assert list(record)[:5] == ["time", "level", "msg", "component", "log_source"]
        assert (record["component"], record["log_source"]) == ("worker", "bananas_internal")
        assert {k: record[k] for k in JOB_FIELDS} == {
            "job_id": handle.id, "job_name": "add", "priority": "high", "queue": "high", "attempt": 1,
            "pool_id": "solo-1", "worker_id": worker.id, "worker_type": "test"}
    dequeued, _, succeeded = mine
    assert isinstance(dequeued["wait_ms"], float) and 0 <= dequeued["wait_ms"] < 10_000
    assert isinstance(succeeded["duration_ms"], float) and succeeded["duration_ms"] >= 0
    assert succeeded["msg"] == f"job {handle.id} (add) succeeded in {succeeded['duration_ms']} ms"


def test_a_failing_job_logs_failed_and_retried_as_warnings_then_failed_and_dead_as_errors(
    make_app, run_worker, wait_for, records
) -> None:
    # Given a handler that always fails and allows one retry
    app = make_app()

    @app.job("boom", max_retries=1)
    def boom() -> None:
        raise ValueError("nope")

    handle = app.enqueue("boom")
    run_worker(app, one_slot(app))
    # When it runs twice and dies
    wait_for(lambda: "dead" in kernel_events(records, handle.id))

    # Then the failure events come with their levels and fields
    mine = [r for r in of_job(records, handle.id) if r.get("event") in ("failed", "retried", "dead")]
    assert [(r["event"], r["level"], r["attempt"]) for r in mine] == [
        ("failed", "WARNING", 1), ("retried", "WARNING", 1), ("failed", "ERROR", 2), ("dead", "ERROR", 2)]
    first_failure, retried, last_failure, dead = mine
    assert first_failure["error"] == "ValueError: nope" and first_failure["will_retry"] is True
    assert "Traceback" in first_failure["traceback"] and 'raise ValueError("nope")' in first_failure["traceback"]
    assert last_failure["will_retry"] is False and last_failure["duration_ms"] >= 0
    assert retried["max_retries"] == 1 and 0 < retried["delay_s"] <= 0.2
    assert dead["reason"] == "failed after 2 attempt(s): ValueError: nope"
    assert dead["msg"] == f"job {handle.id} (boom) is dead: failed after 2 attempt(s): ValueError: nope"
    assert all(r["pool_id"] == "solo-1" and r["job_name"] == "boom" for r in mine)


def test_worker_start_and_stop_are_logged_with_the_plan(make_app, records) -> None:
    # Given a worker of a one-slot plan
    app = make_app()
    worker = app.worker(one_slot(app))
    worker.fetch_wait = 0.2
    thread = worker.start_in_thread()
    # When it stops
    worker.request_stop()
    thread.join(10)

    # Then its start names its id, mode and pools, and its stop its count
    by_event = {r["event"]: r for r in records if r.get("worker_id") == worker.id and "event" in r}
    started, stopped = by_event["worker_started"], by_event["worker_stopped"]
    assert (started["level"], started["worker_type"], started["concurrency"]) == ("INFO", "test", 1)
    assert started["pools"] == "solo-1×1 ['high', 'normal', 'low']" and started["scheduler"] is True
    assert (stopped["level"], stopped["processed"], stopped["failed"]) == ("INFO", 0, 0)


def test_move_due_ticks_are_debug_when_idle_and_info_with_the_count_when_jobs_moved(
    make_app, run_worker, wait_for, records
) -> None:
    # Given a delayed job and a worker running the scheduler every 0.1 s
    app = make_app()
    done = threading.Event()

    @app.job("later")
    def later() -> None:
        done.set()

    app.enqueue("later", delay="0.3s")
    worker = run_worker(app, one_slot(app))
    # When it comes due and runs
    assert done.wait(10)

    # Then one tick moved it (INFO, component scheduler) and the idle ones said nothing moved (DEBUG)
    ticks = [r for r in list(records) if r.get("event") == "move_due"]
    moved = [r for r in ticks if r["moved"]]
    assert [(r["level"], r["moved"], r["batches"], r["batch_size"]) for r in moved] == [("INFO", 1, 1, 1000)]
    assert moved[0]["component"] == "scheduler" and moved[0]["duration_ms"] >= 0
    assert (moved[0]["worker_id"], moved[0]["worker_type"]) == (worker.id, "test")
    assert {r["level"] for r in ticks if not r["moved"]} == {"DEBUG"} and len(ticks) > 1


def test_queue_depths_are_logged_per_busy_queue_and_once_more_when_it_empties(make_app, records) -> None:
    # Given two jobs waiting in normal and a worker's depth duty
    app = make_app()
    app.enqueue("x")
    app.enqueue("x")
    worker = app.worker(one_slot(app))
    duty = depth_duty(worker, interval=10.0)
    assert (duty.name, duty.needs_leader, duty.at_start) == ("queue-depths", True, False)

    async def tick() -> None:
        await duty.run(await app.broker())

    def reports() -> list[tuple[str, int]]:
        return [(r["queue"], r["ready"]) for r in records if r.get("event") == "queue_depth"]

    # When it reports, the queue is emptied, and it reports twice more
    app.run_sync(tick)
    assert reports() == [("normal", 2)]
    first = next(r for r in records if r.get("event") == "queue_depth")
    assert (first["level"], first["component"], first["scheduled"], first["running"], first["dead"]) == (
        "INFO", "queue", 0, 0, 0)

    async def empty() -> None:
        broker = await app.broker()
        deliveries = await broker.fetch(["normal"], 10, 0.1)
        await broker.ack(deliveries)

    app.run_sync(empty)
    app.run_sync(tick)
    app.run_sync(tick)
    # Then the empty queue was reported once (down to 0), then not again
    assert reports() == [("normal", 2), ("normal", 0)]


def test_a_malformed_body_is_logged_dead_with_its_queue_and_reason(make_app, run_worker, wait_for, records) -> None:
    from bananas.broker import Envelope

    app = make_app()

    async def put_garbage() -> None:
        await (await app.broker()).enqueue([Envelope("bad-1", "normal", b"\x00not json")])

    app.run_sync(put_garbage)
    run_worker(app, one_slot(app))
    wait_for(lambda: any(r.get("job_id") == "bad-1" for r in list(records)))
    (dead,) = of_job(records, "bad-1")
    assert (dead["event"], dead["level"], dead["queue"], dead["pool_id"]) == ("dead", "ERROR", "normal", "solo-1")
    assert dead["reason"].startswith("malformed job")


# -- handler logging -----------------------------------------------------------------------------------------------

@pytest.fixture
def configured(make_app) -> Iterator[Callable[..., Bananas]]:
    """configure_logging of an app (console to stderr, the stdlib intercept); closed at teardown."""
    closers: list[Callable[[], None]] = []
    saved = (levels.debug, levels.info, levels.warning)

    def configure(**overrides: Any) -> Bananas:
        app = make_app(overrides=overrides)
        closers.append(configure_logging(app.settings, app.plugins))
        return app

    yield configure
    for close in closers:
        close()
    levels.debug, levels.info, levels.warning = saved


def test_job_logger_and_stdlib_logging_carry_the_job_in_sync_and_async_handlers(
    configured, run_worker, wait_for, records
) -> None:
    # Given configured logging (the stdlib intercept) and handlers that log both ways
    app = configured()
    set_min_level("DEBUG")  # the capture sink (added before configure) was removed; add it back below
    sink = logger.add(lambda message: records.append(flat_record(message.record)), level="DEBUG")

    @app.job("sync_job")
    def sync_job() -> None:
        job_logger.info("sync says {}", "hi")
        logging.getLogger("acme.mail").warning("stdlib in a thread")

    @app.job("async_job")
    async def async_job() -> None:
        job_logger.bind(mails=3).info("async says hi")
        logging.getLogger("acme.mail").error("stdlib in a task")

    try:
        first, second = app.enqueue("sync_job"), app.enqueue("async_job")
        worker = run_worker(app, one_slot(app))
        first.result(timeout=10)
        second.result(timeout=10)
        wait_for(lambda: len([r for r in list(records) if r["log_source"] == "bananas_job"]) == 4)
    finally:
        logger.remove(sink)

    # Then each record is bananas_job with the job's fields, the stdlib ones with their logger's name
    job_records = [r for r in records if r["log_source"] == "bananas_job"]
    by_msg = {r["msg"]: r for r in job_records}
    assert set(by_msg) == {"sync says hi", "stdlib in a thread", "async says hi", "stdlib in a task"}
    for msg, handle, name in (("sync says hi", first, "sync_job"), ("stdlib in a thread", first, "sync_job"),
                              ("async says hi", second, "async_job"), ("stdlib in a task", second, "async_job")):
        record = by_msg[msg]
        assert {k: record[k] for k in JOB_FIELDS} == {
            "job_id": handle.id, "job_name": name, "priority": "normal", "queue": "normal", "attempt": 1,
            "pool_id": "solo-1", "worker_id": worker.id, "worker_type": "test"}, msg
    assert by_msg["stdlib in a thread"]["logger"] == "acme.mail" and by_msg["stdlib in a task"]["level"] == "ERROR"
    assert by_msg["async says hi"]["mails"] == 3
    # and the kernel's own records of those jobs stay bananas_internal
    assert {r["log_source"] for r in records if r.get("job_id") == first.id and "event" in r} == {"bananas_internal"}


def test_outside_a_job_job_logger_has_no_job_fields_and_stdlib_records_are_internal(configured, records) -> None:
    # Given configured logging and a capture sink
    configured()
    sink = logger.add(lambda message: records.append(flat_record(message.record)), level="DEBUG")
    try:
        # When code outside any job logs both ways
        job_logger.info("no job here")
        logging.getLogger("somelib").warning("library says")
    finally:
        logger.remove(sink)

    # Then neither record has job fields; the library's is bananas_internal with its logger name
    mine, lib = records
    assert mine["log_source"] == "bananas_job" and not set(JOB_FIELDS) & set(mine)
    assert (lib["log_source"], lib["logger"], lib["level"]) == ("bananas_internal", "somelib", "WARNING")


def test_configure_logging_sets_the_level_flags_and_the_root_logger_level(configured) -> None:
    configured(**{"logging.level": "warn"})
    assert (levels.debug, levels.info, levels.warning) == (False, False, True)
    assert logging.getLogger().level == logging.WARNING
    assert sum(isinstance(h, InterceptHandler) for h in logging.getLogger().handlers) == 1
    configured(**{"logging.level": "debug"})  # configuring again replaces the intercept, never stacks it
    assert (levels.debug, levels.info, levels.warning) == (True, True, True)
    assert sum(isinstance(h, InterceptHandler) for h in logging.getLogger().handlers) == 1


# -- disabled levels cost nothing ------------------------------------------------------------------------------------

class Untouchable:
    """Any attribute read or ``str()`` fails the test: proof that nothing was formatted or bound."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"touched .{name} while the level is off")

    def __str__(self) -> str:
        raise AssertionError("formatted while the level is off")


def test_per_job_debug_events_read_nothing_when_debug_is_off(configured) -> None:
    # Given logging configured at INFO
    configured(**{"logging.level": "info"})
    assert not levels.debug
    # When the per-job DEBUG events are emitted with a job and state that fail on any use
    events.dequeued(Untouchable(), Untouchable(), "p")  # type: ignore[arg-type]
    events.started(Untouchable(), Untouchable(), "p")  # type: ignore[arg-type]
    events.succeeded(Untouchable(), Untouchable(), "p", 0.1)  # type: ignore[arg-type]
    # and a handler logs DEBUG lines with a value that cannot be formatted
    job_logger.debug("value {}", Untouchable())
    job_logger.bind(value=Untouchable()).debug("bound value")
    logging.getLogger("lib").debug("value %s", Untouchable())
    # Then nothing raised: nothing was read, bound or formatted


def test_retry_warnings_read_nothing_at_error_level(configured) -> None:
    # Given logging configured at ERROR
    configured(**{"logging.level": "error"})
    # When a failure that will be retried and its retry are emitted with a job that fails on any use
    events.failed(Untouchable(), Untouchable(), "p", True, 0.1)  # type: ignore[arg-type]
    events.retried(Untouchable(), Untouchable(), "p", 1.0)  # type: ignore[arg-type]
    # Then nothing raised; a last failure (ERROR) is still built
    with pytest.raises(AssertionError, match="touched"):
        events.failed(Untouchable(), Untouchable(), "p", False, 0.1)  # type: ignore[arg-type]


def test_a_worker_at_info_writes_no_debug_record_and_still_logs_failures(make_app, run_worker, wait_for) -> None:
    # Given logging at INFO (flags and sink)
    app = make_app()
    seen: Events = []
    saved = (levels.debug, levels.info, levels.warning)
    set_min_level("INFO")
    sink = logger.add(lambda message: seen.append(flat_record(message.record)), level="INFO")

    @app.job("ok")
    def ok() -> None:
        pass

    @app.job("bad", max_retries=0)
    def bad() -> None:
        raise RuntimeError("x")

    try:
        good, failing = app.enqueue("ok"), app.enqueue("bad")
        run_worker(app, one_slot(app))
        good.result(timeout=10)
        wait_for(lambda: "dead" in kernel_events(seen, failing.id))
    finally:
        logger.remove(sink)
        levels.debug, levels.info, levels.warning = saved
    # Then the success left no line and the failure its ERROR lines
    assert of_job(seen, good.id) == []
    assert kernel_events(seen, failing.id) == ["failed", "dead"]


# -- the console tier ------------------------------------------------------------------------------------------------

def _message(**extra: Any) -> Any:
    captured: list[Any] = []
    sink = logger.add(lambda message: captured.append(message), level="DEBUG", format="{message}")
    try:
        logger.bind(**extra).info("hello {}", "there")
    finally:
        logger.remove(sink)
    return captured[0]


def test_console_json_is_the_flat_json_line_of_each_record() -> None:
    stream = io.StringIO()
    config = console_sink({"format": "json", "level": "DEBUG"}, stream=stream)
    sink = logger.add(config.sink, level=config.level, **dict(config.options))
    try:
        logger.bind(job_id="j1", job_name="send", n_mails=2).warning("sent {}", 2)
    finally:
        logger.remove(sink)
        assert config.close is not None
        config.close()
    (line,) = stream.getvalue().splitlines()
    data = json.loads(line)
    assert list(data) == ["time", "level", "msg", "component", "log_source", "job_id", "job_name", "n_mails"]
    assert (data["msg"], data["level"], data["n_mails"]) == ("sent 2", "WARNING", 2)


def test_console_text_names_the_job_of_handler_records() -> None:
    stream = io.StringIO()
    config = console_sink({"format": "text", "level": "DEBUG", "color": True}, stream=stream)  # not a tty: no color
    sink = logger.add(config.sink, level=config.level, **dict(config.options))
    try:
        job_logger.bind(job_id="j1", job_name="send").info("sending")
        logger.bind(component="scheduler").info("tick")
    finally:
        logger.remove(sink)
        assert config.close is not None
        config.close()
    handler_line, kernel_line = stream.getvalue().splitlines()
    assert handler_line.endswith("| INFO    | worker | send j1 | sending")
    assert kernel_line.endswith("| INFO    | scheduler | tick") and "\x1b[" not in handler_line


class SlowStream(io.StringIO):
    """A terminal that takes ``delay`` seconds per write."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.writes = 0

    def write(self, text: str) -> int:
        time.sleep(self.delay)
        self.writes += 1
        return super().write(text)


def test_a_slow_console_never_blocks_the_caller_and_close_flushes_everything() -> None:
    # Given a console whose every write takes 0.2 s
    stream = SlowStream(0.2)
    writer = ConsoleWriter(stream)
    # When 1000 lines are put
    started = time.perf_counter()
    for i in range(1000):
        writer.put(f"line {i}\n")
    elapsed = time.perf_counter() - started
    # Then putting took far less than one write, and close wrote every line, in order, in few writes
    assert elapsed < 0.2
    writer.close()
    assert stream.getvalue().splitlines() == [f"line {i}" for i in range(1000)]
    assert stream.writes <= 3


def test_a_full_console_queue_drops_counts_and_says_so() -> None:
    stream = SlowStream(0.5)
    writer = ConsoleWriter(stream, max_queued=10)
    writer.put("first\n")
    time.sleep(0.1)  # the writer thread is now inside its slow write of "first"
    for i in range(25):
        writer.put(f"line {i}\n")
    writer.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "first" and lines[1:11] == [f"line {i}" for i in range(10)]
    assert lines[11] == "bananas: 15 console log line(s) dropped: the console was too slow"
    assert writer.dropped_total == 15


# -- a real `bananas worker` process ---------------------------------------------------------------------------------

APP = textwrap.dedent(
    """
    import logging
    from bananas import Bananas, job_logger

    app = Bananas()

    @app.job("greet")
    def greet(name):
        job_logger.info("hello {}", name)
        logging.getLogger("greeter").warning("stdlib hello")

    app.enqueue("greet", {"name": "ada"})  # memory:// lives in this process: queue the job before the worker runs
    """
)


def test_a_worker_process_writes_flat_json_lines_to_stderr_and_flushes_them_at_shutdown(tmp_path: Path) -> None:
    # Given an app module on memory:// and a worker process with LOG_FORMAT=json, LOG_LEVEL=debug
    (tmp_path / "jsonapp.py").write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANANAS_", "LOG_", "WORKER_"))}
    env.update(BANANAS_BROKER="memory://json-e2e", BANANAS_LOAD_PLUGINS="", LOG_FORMAT="json", LOG_LEVEL="debug",
               PYTHONPATH=str(tmp_path))
    err = tmp_path / "stderr.log"
    with open(err, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bananas.cli", "worker", "--app", "jsonapp"], cwd=tmp_path,
                                env=env, stdout=subprocess.DEVNULL, stderr=out)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and '"event":"succeeded"' not in err.read_text():
            time.sleep(0.05)
        # When it is stopped with SIGTERM
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)

    # Then every stderr line is one flat JSON object, the job's events and handler lines among them, and the
    # shutdown lines were flushed before the process exited
    lines = [json.loads(line) for line in err.read_text().splitlines()]
    assert all(not isinstance(v, dict) for line in lines for v in line.values())
    assert all(list(line)[:5] == ["time", "level", "msg", "component", "log_source"] for line in lines)
    kernel = [line["event"] for line in lines if "event" in line and line.get("job_name") == "greet"]
    assert kernel == ["dequeued", "started", "succeeded"]
    handler = [line for line in lines if line["log_source"] == "bananas_job"]
    assert [(h["msg"], h["job_name"], h.get("logger")) for h in handler] == [("hello ada", "greet", None),
                                                                           ("stdlib hello", "greet", "greeter")]
    assert lines[-1]["event"] == "worker_stopped" and lines[-1]["worker_id"].endswith(f"-{proc.pid}")
    # extra context under readable names: never loguru's nested record nor one- or two-letter keys
    assert not any(key in line for line in lines for key in ("record", "text"))
    assert sorted({key for line in lines for key in line if len(key) < 3}) == []


def test_console_text_is_colored_on_a_terminal_when_color_is_on_and_plain_when_off() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    outputs = []
    for color in (True, False):
        stream = Terminal()
        config = console_sink({"format": "text", "level": "INFO", "color": color}, stream=stream)
        sink = logger.add(config.sink, level=config.level, **dict(config.options))
        try:
            logger.info("hi")
        finally:
            logger.remove(sink)
            assert config.close is not None
            config.close()
        outputs.append(stream.getvalue())
    colored, plain = outputs
    assert "\x1b[" in colored and colored.rstrip().endswith("hi\x1b[0m")
    assert "\x1b[" not in plain and plain.endswith("| INFO    | worker | hi\n")


def test_closing_a_console_stuck_in_a_write_gives_up_after_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    from bananas.builtin import stdout_logsink

    # Given a terminal whose writes hang until released
    release = threading.Event()

    class Stuck(io.StringIO):
        def write(self, text: str) -> int:
            release.wait(10)
            return super().write(text)

    monkeypatch.setattr(stdout_logsink, "CLOSE_WAIT", 0.3)
    writer = ConsoleWriter(Stuck())
    writer.put("first\n")
    time.sleep(0.15)  # the writer thread is stuck writing it
    writer.put("second\n")
    # When the console is closed
    started = time.perf_counter()
    writer.close()
    # Then close returned after its bound instead of hanging with the terminal
    assert time.perf_counter() - started < 2.0
    release.set()


def test_a_fetch_outage_is_logged_lost_then_back_with_component_queue(
    make_app, run_worker, wait_for, records, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bananas.builtin.memory_broker import MemoryBroker
    from bananas.errors import BrokerUnavailable

    # Given a broker whose next fetch fails as an outage would
    real = MemoryBroker.fetch
    failures = [1]

    async def fetch(self: MemoryBroker, *args: Any, **kwargs: Any) -> Any:
        if failures[0]:
            failures[0] -= 1
            raise BrokerUnavailable("memory broker unavailable during fetch: outage")
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(MemoryBroker, "fetch", fetch)
    app = make_app()
    # When a worker runs through it
    worker = run_worker(app, one_slot(app))
    wait_for(lambda: any(r.get("event") == "broker_connection_back" for r in list(records)))

    # Then the loss (ERROR) and the recovery (INFO) are the queue component's events of that pool
    outage = [r for r in records if r.get("event", "").startswith("broker_connection")]
    assert [(r["event"], r["level"], r["component"], r["pool_id"], r["worker_id"]) for r in outage] == [
        ("broker_connection_lost", "ERROR", "queue", "solo-1", worker.id),
        ("broker_connection_back", "INFO", "queue", "solo-1", worker.id)]
    assert outage[0]["error"] == "BrokerUnavailable: memory broker unavailable during fetch: outage"
