"""The file tier behind the kernel's direct route (``bananas.log_route``, ``SinkConfig.record_sink``): with the JSON
console and the file tier configured as a worker configures them, ``job_logger`` and standard-library records that
skip loguru's record building reach the file as the very line the console wrote, and that line is the one the same
call writes through loguru (but for its time)."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import pytest
from loguru import logger

from bananas import Bananas, job_logger, log_route
from bananas.job import Job
from bananas.job_context import JobContext
from bananas.log_context import CURRENT_JOB, levels
from bananas.logs import configure_logging


def test_route_lines_reach_the_file_as_the_console_wrote_them_and_as_loguru_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a worker's logging: JSON console (into a string) and the file tier, both at INFO
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    app = Bananas(broker="memory://route-file", env={
        "BANANAS_LOAD_PLUGINS": "bananas-logfile", "LOG_FORMAT": "json", "LOG_LEVEL": "info",
        "LOG_FILE_ENABLED": "true", "LOG_FILE_PATH": str(tmp_path / "bananas.log")})
    saved = (levels.debug, levels.info, levels.warning)
    close = configure_logging(app.settings, app.plugins)
    token = CURRENT_JOB.set(JobContext(Job(name="send_email", queue="mail", attempts=2), "solo-1", "h-1", "thin"))

    def emit() -> None:
        job_logger.bind(batch=7).info("sent {n} mails", n=3)
        logging.getLogger("acme.smtp").warning("stdlib says %s", "hi")
        job_logger.debug("not written: below both tiers")

    try:
        # When a handler logs through the route, then the same through loguru (a handler added sets it aside)
        assert log_route.current() is not None
        emit()
        aside = logger.add(lambda message: None, level="CRITICAL")
        assert log_route.current() is None
        emit()
        logger.remove(aside)
    finally:
        CURRENT_JOB.reset(token)
        close()
        levels.debug, levels.info, levels.warning = saved
        app.close()

    # Then the file holds exactly the console's lines, byte for byte
    (path,) = tmp_path.glob("bananas-*.log")
    in_file = path.read_text(encoding="utf-8").split("\n")
    assert in_file == stream.getvalue().split("\n") and len(in_file) == 5  # four lines and the last newline
    # and the route's two lines are loguru's two, field for field and in order, but for the time
    direct, through_loguru = ([json.loads(line) for line in in_file[i:i + 2]] for i in (0, 2))
    for one, other in zip(direct, through_loguru, strict=True):
        assert one.pop("time")[:4] == other.pop("time")[:4]
        assert list(one.items()) == list(other.items())
    handler, stdlib = direct
    assert (handler["msg"], handler["n"], handler["batch"], handler["job_name"], handler["attempt"]) == (
        "sent 3 mails", 3, 7, "send_email", 2)
    assert (stdlib["logger"], stdlib["level"], stdlib["log_source"]) == ("acme.smtp", "WARNING", "bananas_job")
