"""The result backend protocol: where handler return values are kept for clients to fetch.

A result backend stores opaque bodies by job id, like a broker stores job bodies: the kernel encodes the result
through the configured serializer (:func:`encode_success` / :func:`encode_failure`) and decodes it on the way out
(:func:`decode_result`). Backends are registered by URL scheme through ``bananas_register_result_backends`` and
chosen with ``result_backend = "<scheme>://…"``; ``[result_backend_options]`` is passed to the factory as a dict.
Unset, it is the broker's URL when a backend is registered for the broker's scheme (:func:`choose_result_backend`);
``result_backend = "none"`` stores no results.

Semantics every backend must have (``plugins/bananas-redis/tests/test_redis_results.py`` checks them for
``memory://`` and ``redis://``):

* **TTL.** ``store(id, body, ttl)`` keeps ``body`` for ``ttl`` seconds; ``ttl=None`` means the backend default
  (``[result_backend_options] ttl``, else :data:`DEFAULT_RESULT_TTL`); ``ttl=0`` stores nothing. A later ``store``
  for the same id replaces the body.
* **Waiting without polling.** ``get(id, wait=s)`` returns the stored body at once if there is one; otherwise it
  blocks until ``store`` wakes it or ``s`` seconds pass (then it returns ``None``). Every concurrent waiter of one id
  is woken by one ``store``; a body stored before the waiter starts is found by the first check.
* **One instance per event loop**, like brokers: the kernel builds one per loop it uses.
* **Optional** ``stage(job_id, body, ttl, broker) -> bool``: instead of a round trip of its own, have ``broker``
  (the worker's, same loop) write the store in the round trip of its next ``ack``/``ack_and_fetch``, *before* the
  ack. The worker calls it for a succeeded job's result and acks that job right after; ``False`` (e.g. another
  server) means "not staged", and the worker calls ``store``. The Redis plugin stages onto a Redis broker on the
  same URL: results cost no round trip of their own (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import attrs

from bananas.errors import JobFailed, SerializationError, UnstorableResult
from bananas.serializer import Serializer
from bananas.units import parse_duration

__all__ = [
    "DEFAULT_RESULT_TTL",
    "RESULT_TTL_HEADER",
    "ResultBackend",
    "ResultBackendSpec",
    "decode_result",
    "encode_failure",
    "encode_success",
    "result_worker",
    "encode_unstorable",
    "unstorable_message",
    "choose_result_backend",
    "parse_ttl",
    "result_ttl_header",
    "ttl_from_headers",
]

DEFAULT_RESULT_TTL = 24 * 3600.0
"""Seconds a result is kept when neither the job nor ``[result_backend_options] ttl`` says otherwise."""

RESULT_TTL_HEADER = "result_ttl"
"""Job header carrying the job's own result TTL in seconds (``"0"``: store no result)."""


def choose_result_backend(configured: str | None, broker_url: str, schemes: Iterable[str]) -> str | None:
    """The result backend URL to use: ``configured`` when set, ``None`` for ``"none"`` (store no results), else the
    broker's URL when a result backend is installed for its scheme (results live beside the jobs, as with RQ, arq
    and SAQ), else ``None``."""
    if configured == "none":
        return None
    if configured:
        return configured
    return broker_url if urlsplit(broker_url).scheme in set(schemes) else None


@runtime_checkable
class ResultBackend(Protocol):
    """Stores encoded results by job id. One instance belongs to one event loop."""

    async def connect(self) -> None:
        """Open connections; raise ``BrokerUnavailable`` if the backend cannot be reached."""
        ...

    async def close(self) -> None:
        """Close connections; calling it twice is harmless."""
        ...

    async def store(self, job_id: str, body: bytes, ttl: float | None) -> None:
        """Keep ``body`` for ``ttl`` seconds (``None``: the backend default; ``0``: do not store) and wake waiters."""
        ...

    async def get(self, job_id: str, wait: float | None = None) -> bytes | None:
        """Return the stored body; with ``wait`` block up to that many seconds for it (no polling loop)."""
        ...


@attrs.frozen
class ResultBackendSpec:
    """What a result-backend plugin registers: URL schemes and ``factory(url, options_dict)``."""

    schemes: tuple[str, ...] = attrs.field(converter=tuple)
    factory: Callable[[str, dict[str, object]], ResultBackend] = attrs.field(eq=False)
    summary: str = ""

    @property
    def name(self) -> str:
        return self.schemes[0]


def parse_ttl(value: object, what: str = "result_ttl") -> float:
    """Seconds from ``60``, ``"10m"``, ``"24h"``…; ``0`` is allowed (store nothing). ``ValueError`` names ``what``."""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError(f"{what}: expected a duration such as 60, '10m' or '24h', got {value!r}")
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    if not math.isfinite(seconds):
        raise ValueError(f"{what}: expected a finite duration, got {value!r}")
    return seconds


def result_ttl_header(value: object) -> str:
    """The :data:`RESULT_TTL_HEADER` value for a ``result_ttl=`` job option (validated)."""
    return repr(parse_ttl(value))


def ttl_from_headers(headers: Mapping[str, str]) -> float | None:
    """The job's own result TTL from its headers, or ``None`` (use the backend default) if absent or invalid."""
    raw = headers.get(RESULT_TTL_HEADER)
    if raw is None:
        return None
    try:
        return parse_ttl(raw)
    except ValueError:
        return None


def encode_success(serializer: Serializer, value: Any, worker: str | None = None) -> bytes:
    """``{"ok": true, "value": value}`` through ``serializer``; ``SerializationError`` if the value cannot be held.
    ``worker`` (the id of the worker that ran the job) is kept beside it for the job's attempt history."""
    try:
        return serializer.dumps({"ok": True, "value": value} if worker is None else
                                {"ok": True, "value": value, "worker": worker})
    except SerializationError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise SerializationError(f"cannot encode result: {exc}") from exc


def encode_failure(serializer: Serializer, error_type: str, message: str, traceback: str | None) -> bytes:
    """The stored form of a dead job: ``{"ok": false, "error_type", "message", "traceback"}``."""
    return serializer.dumps({"ok": False, "error_type": error_type, "message": message, "traceback": traceback})


def encode_unstorable(serializer: Serializer, message: str) -> bytes:
    """The stored form of a completed job whose value could not be encoded: a failure record with ``error_type``
    ``UnstorableResult`` and ``message`` saying why (a client of any version reads it as a failure)."""
    return encode_failure(serializer, UnstorableResult.ERROR_TYPE, message, None)


def decode_result(serializer: Serializer, job_id: str, body: bytes) -> Any:
    """The handler's value from a stored body; raises :class:`JobFailed` for a stored failure
    (:class:`UnstorableResult` for a value that could not be stored)."""
    data = serializer.loads(body)
    if data.get("ok"):
        return data.get("value")
    traceback = data.get("traceback")
    if data.get("error_type") == UnstorableResult.ERROR_TYPE:
        raise UnstorableResult(job_id, str(data.get("message") or ""))
    raise JobFailed(
        job_id,
        str(data.get("error_type") or "Error"),
        str(data.get("message") or ""),
        str(traceback) if traceback is not None else None,
    )


def result_worker(serializer: Serializer, body: bytes) -> str | None:
    """The id of the worker that stored a success ``body`` (``None``: a failure, or stored without one)."""
    try:
        data = serializer.loads(body)
    except Exception:  # noqa: BLE001 - only a detail of the history: an unreadable body just lacks it
        return None
    worker = data.get("worker") if isinstance(data, dict) else None
    return worker if isinstance(worker, str) else None


async def unstorable_message(backend: ResultBackend | None, serializer: Serializer, job_id: str) -> str | None:
    """Why the stored result of ``job_id`` is an :class:`UnstorableResult` (its message), or ``None`` when it is
    anything else or nothing (``bananas job`` shows it)."""
    body = await backend.get(job_id) if backend is not None else None
    if body is None:
        return None
    try:
        decode_result(serializer, job_id, body)
    except UnstorableResult as exc:
        return exc.message
    except Exception:  # noqa: BLE001 - any other stored failure or unreadable body: not this note's business
        return None
    return None
