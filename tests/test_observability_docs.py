"""The handler-logging example of docs/OBSERVABILITY.md ("## Logs"), extracted from the markdown and run: its jobs
log through ``job_logger`` and the standard library with the job's fields, as the page says."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from bananas.log_context import InterceptHandler, levels, set_min_level
from bananas.log_record import flat_record
from bananas.logs import configure_logging

DOC = Path(__file__).resolve().parents[1] / "docs" / "OBSERVABILITY.md"
MARK = re.compile(r"<!-- logs-example -->\n```python\n(.*?)\n```", re.S)


def logs_section() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("\n## Logs\n")
    following = text.find("\n## ", start + 1)
    return text[start:] if following < 0 else text[start:following]


def test_the_logs_section_documents_every_context_field_and_event() -> None:
    from bananas.log_record import CONTEXT_FIELDS, FIXED_FIELDS

    section = logs_section()
    for field in (*FIXED_FIELDS, *CONTEXT_FIELDS):
        assert f"`{field}`" in section, field
    for event in ("worker_started", "dequeued", "started", "succeeded", "failed", "retried", "dead", "move_due",
                  "queue_depth", "broker_connection_lost", "broker_connection_back"):
        assert f"`{event}`" in section, event
    assert "log_source:bananas_job AND level:ERROR" in section


def test_the_handler_logging_example_runs_and_its_records_carry_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_worker: Any
) -> None:
    # Given the example's code, run as a module, with logging configured at DEBUG
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith(("BANANAS_", "LOG_", "WORKER_"))]:
        monkeypatch.delenv(name)
    (block,) = MARK.findall(logs_section())
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - the documentation's own example
    app = namespace["app"]
    saved = (levels.debug, levels.info, levels.warning)
    close = configure_logging(app.settings, app.plugins)
    records: list[dict[str, Any]] = []
    sink = logger.add(lambda message: records.append(flat_record(message.record)), level="DEBUG")
    set_min_level("DEBUG")
    try:
        # When both jobs run
        welcome = app.enqueue("send_welcome", {"user_id": 42})
        resize = app.enqueue("resize", {"image": "cat.png"})
        run_worker(app)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len([r for r in records if r["log_source"] == "bananas_job"]) < 4:
            time.sleep(0.01)
    finally:
        logger.remove(sink)
        close()
        levels.debug, levels.info, levels.warning = saved
        app.close()

    # Then each handler record is bananas_job with its job's id and name, the stdlib one with its logger
    mine = [(r["msg"], r["job_id"], r["job_name"], r.get("logger"), r.get("template"))
            for r in records if r["log_source"] == "bananas_job"]
    assert sorted(mine, key=str) == sorted([
        ("sending the welcome mail to user 42", welcome.id, "send_welcome", None, None),
        ("rendered", welcome.id, "send_welcome", None, "welcome-v2"),
        ("SMTP accepted the mail for 42", welcome.id, "send_welcome", "myapp.mail", None),
        ("cat.png is larger than 10 MB; resizing anyway", resize.id, "resize", None, None),
    ], key=str)
    # and closing the logging took the stdlib intercept off the root logger again
    assert not any(isinstance(h, InterceptHandler) for h in logging.getLogger().handlers)


def test_the_log_sink_example_of_the_plugin_guide_writes_the_flat_json_lines(tmp_path: Path) -> None:
    # Given the jsonl sink of docs/PLUGINS.md ("### Log sink"), loaded as a module
    text = (DOC.parent / "PLUGINS.md").read_text(encoding="utf-8")
    (block,) = re.findall(r'```python\n("""``\[logging\.jsonl\] enabled = true``.*?)\n```', text, re.S)
    namespace: dict[str, Any] = {"__name__": "jsonl_example"}
    exec(compile(block, "PLUGINS.md", "exec"), namespace)  # noqa: S102 - the documentation's own example
    path = tmp_path / "bananas.jsonl"
    config = namespace["jsonl_sink"]({"path": str(path), "level": "INFO"})
    # When a job record is logged through it
    sink = logger.add(config.sink, level=config.level, **dict(config.options))
    try:
        logger.bind(job_id="j1", job_name="send", log_source="bananas_job").info("sent {}", 3)
        logger.complete()
    finally:
        logger.remove(sink)
    # Then the file holds the record's flat JSON line, as every tier writes it
    (line,) = path.read_text(encoding="utf-8").splitlines()
    record = json.loads(line)
    assert {k: record[k] for k in ("msg", "level", "log_source", "job_id", "job_name")} == {
        "msg": "sent 3", "level": "INFO", "log_source": "bananas_job", "job_id": "j1", "job_name": "send"}
    assert "_line" not in record
