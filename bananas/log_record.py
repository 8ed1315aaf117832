"""One event model for every log tier: a loguru record → a flat JSON-ready dict with the seed's field names.

Every tier (console JSON, file, Elasticsearch, third-party sinks) writes :func:`flat_record` of the loguru record, so
a query written for one tier works on the others. The fields, in order:

``time`` (RFC 3339, UTC, milliseconds, ``Z``), ``level`` (``DEBUG`` … ``CRITICAL``), ``msg``, ``component``
(``worker``, ``scheduler``, ``queue``, ``redis``, ``api``, ``cli``), ``log_source`` (``bananas_internal`` for the
system, ``bananas_job`` for what handlers log), then, when known: ``worker_id`` (the process id, ``host-pid``),
``pool_id``, ``worker_type`` (the mode), ``job_id``, ``job_name``, ``priority``, ``queue``, ``attempt``,
``duration_ms``, ``wait_ms``, ``error``, ``traceback``. Any other context bound with ``logger.bind(...)`` follows
under its own (readable) name. Values that JSON cannot hold become their ``str()``.
"""

from __future__ import annotations

import json
import traceback as _traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["CONTEXT_FIELDS", "FIXED_FIELDS", "LINE_KEY", "field", "flat_record", "fragment", "json_line"]
__all__ += ["json_string", "spliced_line"]

FIXED_FIELDS = ("time", "level", "msg", "component", "log_source")
"""Fields every record carries."""

CONTEXT_FIELDS = (
    "worker_id",
    "pool_id",
    "worker_type",
    "job_id",
    "job_name",
    "priority",
    "queue",
    "attempt",
    "duration_ms",
    "wait_ms",
    "error",
    "traceback",
)
"""Fields a record carries when they are known, in this order."""

_INTERNAL = frozenset(FIXED_FIELDS) | frozenset(CONTEXT_FIELDS)


_second: tuple[int, str] = (-1, "")
"""The last whole second formatted and its text (records come in bursts); swapped as one tuple, so threads that
race see a consistent pair."""


def _iso(moment: datetime) -> str:
    global _second
    whole = int(moment.timestamp())
    cached, text = _second
    if cached != whole:
        text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _second = (whole, text)
    return f"{text}{moment.microsecond // 1000:03d}Z"


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plain(value: Any) -> Any:
    if type(value) in _SCALARS or value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "value") and isinstance(value.value, str):  # enums such as Priority
        return value.value
    return str(value)


def flat_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The flat event of a loguru record (``message.record``): the seed's fields first, then other bound context.

    ``component`` defaults to ``worker`` and ``log_source`` to ``bananas_internal``. An exception attached with
    ``logger.exception`` / ``opt(exception=…)`` fills ``error`` (``Type: message``) and ``traceback`` unless the
    record already carries them.
    """
    extra: Mapping[str, Any] = record.get("extra", {})
    get = extra.get
    out: dict[str, Any] = {
        "time": _iso(record["time"]),
        "level": record["level"].name,
        "msg": record["message"],
        "component": get("component") or "worker",
        "log_source": get("log_source") or "bananas_internal",
    }
    for name in CONTEXT_FIELDS:
        value = get(name)
        if value is not None:
            out[name] = value if type(value) in _SCALARS else _plain(value)
    exc = record.get("exception")
    if exc is not None and exc.type is not None:
        out.setdefault("error", f"{exc.type.__name__}: {exc.value}")
        out.setdefault("traceback", "".join(_traceback.format_exception(exc.type, exc.value, exc.traceback)))
    if extra.keys() - _INTERNAL:  # other bound context (most records have none: skip the loop)
        for name, value in extra.items():
            if name not in _INTERNAL and name[:1] != "_":
                out[name] = value if type(value) in _SCALARS else _plain(value)
    return out


LINE_KEY = "_bananas_json_line"
"""Where :func:`json_line` keeps the line it built in the loguru record (a dict that loguru hands to every sink)."""

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
"""One encoder for every line (``json.dumps`` with these arguments builds a new one per call)."""

try:  # the C encoder behind _ENCODER, called directly: ~1.5 µs less per line than JSONEncoder.encode's wrappers
    from json.encoder import c_make_encoder as _c_make_encoder
    from json.encoder import encode_basestring as _encode_basestring

    _C_ENCODE = _c_make_encoder(None, str, _encode_basestring, None, ":", ",", False, False, True)
except (ImportError, TypeError):  # pragma: no cover - a Python without the C accelerator
    from json.encoder import encode_basestring as _encode_basestring

    _C_ENCODE = None


def _encode(flat: dict[str, Any]) -> str:
    """``_ENCODER.encode(flat)``: the same text (no circular check: :func:`_plain` already copied every value)."""
    if _C_ENCODE is None:  # pragma: no cover
        return _ENCODER.encode(flat)
    return "".join(_C_ENCODE(flat, 0))


def json_line(record: Mapping[str, Any]) -> str:
    """:func:`flat_record` as one JSON line (no trailing newline).

    Built once per record: the line is kept in the record under :data:`LINE_KEY`, so when several tiers write the
    same record (the JSON console at the call site, then the file and Elasticsearch tiers in their threads) the
    others take it from there instead of formatting it again.
    """
    line = record.get(LINE_KEY)
    if line is None:
        line = _encode(flat_record(record))
        if isinstance(record, dict):
            record[LINE_KEY] = line
    return line  # type: ignore[no-any-return]


json_string = _string = _encode_basestring
"""A JSON string of a ``str``: what the encoder writes for every string (``ensure_ascii=False``)."""


def fragment(fields: Mapping[str, Any]) -> str:
    """The model's context fields of ``fields`` (in :data:`CONTEXT_FIELDS` order, ``None`` skipped) as JSON text to
    splice into a line after its fixed fields: ``,"worker_id":"…","job_id":"…"`` (empty without any)."""
    flat: dict[str, Any] = {}
    get = fields.get
    for name in CONTEXT_FIELDS:
        value = get(name)
        if value is not None:
            flat[name] = value if type(value) in _SCALARS else _plain(value)
    return "," + _encode(flat)[1:-1] if flat else ""


def field(name: str, value: str) -> str:
    """``,"name":"value"``: one string field to splice into a line."""
    return f",{_string(name)}:{_string(value)}"


def spliced_line(moment: datetime, level: str, message: str, rest: str) -> str:
    """The :func:`json_line` of a record whose flat form is ``time``, ``level``, ``msg`` and then ``rest``, its other
    fields already as JSON text (``component`` and ``log_source`` first, see :func:`field` and :func:`fragment`):
    the same text, without building the flat dict (the kernel's route writes most handler records this way)."""
    return f'{{"time":"{_iso(moment)}","level":"{level}","msg":{_string(message)}{rest}}}'
