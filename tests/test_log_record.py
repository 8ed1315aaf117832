"""The one event model (bananas.log_record): a loguru record → the seed's flat fields, the same for every tier."""

import json

from loguru import logger

from bananas.log_record import CONTEXT_FIELDS, LINE_KEY, flat_record, json_line


def _capture(emit):
    records = []
    handler = logger.add(lambda message: records.append(message.record), level="DEBUG")
    try:
        emit()
    finally:
        logger.remove(handler)
    return records


def test_fixed_fields_come_first_with_defaults_and_rfc3339_utc_time():
    (record,) = _capture(lambda: logger.info("hello"))
    flat = flat_record(record)
    assert list(flat)[:5] == ["time", "level", "msg", "component", "log_source"]
    assert flat["msg"] == "hello" and flat["level"] == "INFO"
    assert flat["component"] == "worker" and flat["log_source"] == "bananas_internal"
    assert flat["time"].endswith("Z") and len(flat["time"]) == len("2025-10-24T15:30:45.123Z")


def test_context_fields_in_seed_order_then_other_context_under_its_own_name():
    bound = logger.bind(component="scheduler", job_id="j1", queue="q", attempt=2, duration_ms=12.5,
                        worker_id="h-1", moved=3, _private="x")
    (record,) = _capture(lambda: bound.warning("tick"))
    flat = flat_record(record)
    context = [k for k in flat if k in CONTEXT_FIELDS]
    assert context == ["worker_id", "job_id", "queue", "attempt", "duration_ms"]
    assert flat["moved"] == 3 and "_private" not in flat
    assert flat["component"] == "scheduler"


def test_an_attached_exception_fills_error_and_traceback():
    def emit():
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")

    (record,) = _capture(emit)
    flat = flat_record(record)
    assert flat["error"] == "ValueError: boom"
    assert "Traceback" in flat["traceback"] and "boom" in flat["traceback"]


def test_json_line_is_one_flat_object_and_stringifies_what_json_cannot_hold():
    (record,) = _capture(lambda: logger.bind(job_name="send", payload_size=object()).info("x"))
    line = json_line(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["job_name"] == "send" and isinstance(data["payload_size"], str)
    assert all(not isinstance(v, dict) for k, v in data.items() if k != "payload_size")


def test_json_line_is_built_once_per_record_and_shared_by_every_tier():
    seen: list[str] = []

    def tier(message):  # what each tier does with the record loguru hands to every sink
        seen.append(json_line(message.record))

    first, second = logger.add(tier, level="DEBUG"), logger.add(tier, level="DEBUG")
    try:
        logger.bind(job_id="j1").info("once")
    finally:
        logger.remove(first)
        logger.remove(second)
    assert len(seen) == 2 and seen[0] is seen[1]  # the second tier took the first one's line, not a copy
    assert json.loads(seen[0])["job_id"] == "j1"
    (record,) = _capture(lambda: logger.info("kept"))
    line = json_line(record)
    record["extra"]["late"] = "field"  # too late: the record was already written as this line
    assert json_line(record) is line and record[LINE_KEY] is line
