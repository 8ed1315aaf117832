"""The Elasticsearch tier behind the kernel's direct route (``bananas.log_route``, ``SinkConfig.record_sink``): with
the JSON console and the tier configured as a worker configures them, ``job_logger`` and standard-library records
that skip loguru's record building are indexed as the very line the console wrote, and that line is the one the
same call writes through loguru (but for its time)."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest
from bananas_elasticsearch import build_client
from loguru import logger

from bananas import Bananas, job_logger, log_route
from bananas.job import Job
from bananas.job_context import JobContext
from bananas.log_context import CURRENT_JOB, levels
from bananas.logs import configure_logging


def test_route_records_are_indexed_as_the_console_wrote_them_and_as_loguru_would(
    standin, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a worker's logging: JSON console (into a string) and the Elasticsearch tier on the stand-in, at INFO
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    app = Bananas(broker="memory://route-es", env={
        "BANANAS_LOAD_PLUGINS": "bananas-elasticsearch", "LOG_FORMAT": "json", "LOG_LEVEL": "info",
        "LOG_ES_ENABLED": "true", "LOG_ES_ADDRESSES": standin.url, "LOG_ES_INDEX_PREFIX": "route-test"})
    saved = (levels.debug, levels.info, levels.warning)
    close = configure_logging(app.settings, app.plugins)
    token = CURRENT_JOB.set(JobContext(Job(name="send_email", queue="mail", attempts=2), "solo-1", "h-1", "thin"))

    def emit(n: int) -> None:
        job_logger.bind(batch=7).info("sent {n} mails", n=n)
        try:
            raise TimeoutError("smtp")
        except TimeoutError:
            logging.getLogger("acme.smtp").error("stdlib gave up", exc_info=True)

    try:
        # When a handler logs through the route, then the same through loguru (a handler added sets it aside)
        assert log_route.current() is not None
        emit(1)
        aside = logger.add(lambda message: None, level="CRITICAL")
        assert log_route.current() is None
        emit(2)
        logger.remove(aside)
    finally:
        CURRENT_JOB.reset(token)
        close()  # sends what the tier buffered
        levels.debug, levels.info, levels.warning = saved
        app.close()

    # Then the stand-in indexed exactly the console's lines, field for field and in order
    console = [json.loads(line) for line in stream.getvalue().split("\n") if line]
    client = build_client({"addresses": [standin.url]})
    client.indices.refresh(index="route-test-*")
    hits = client.search(index="route-test-*", size=100, query={"match_all": {}})["hits"]["hits"]
    client.close()
    docs = [hit["_source"] for hit in hits]
    key = lambda d: (d["time"], d["msg"])  # noqa: E731
    assert [list(d.items()) for d in sorted(docs, key=key)] == [list(d.items()) for d in sorted(console, key=key)]
    assert len(console) == 4
    # and the route's two lines are loguru's two, but for the time (and the count the handler logged)
    direct, through_loguru = console[:2], console[2:]
    for one, other in zip(direct, through_loguru, strict=True):
        one.pop("time"), other.pop("time")
        if "n" in one:
            assert (one.pop("n"), one.pop("msg"), other.pop("n"), other.pop("msg")) == (1, "sent 1 mails", 2,
                                                                                         "sent 2 mails")
        assert list(one.items()) == list(other.items())
    assert direct[1]["error"] == "TimeoutError: smtp" and "raise TimeoutError" in direct[1]["traceback"]
    assert direct[1]["job_id"] == direct[0]["job_id"] and direct[1]["log_source"] == "bananas_job"
