"""The producer's hot path: a job and its envelope from ``app.enqueue`` / ``app.enqueue_many`` arguments.

Split out of :mod:`bananas.app`. :func:`assemble_job` validates every user-supplied value with the job model's own
converters and validators, then assembles the job without running them again (the other fields are values made
here); :func:`build_job` encodes it too. :func:`build_all` does a batch: the clock is read once per call (every job
of one ``enqueue_many`` has the same ``created_at``; a ``delay`` counts from it), the ids come from one
``os.urandom`` call (:func:`bananas.job.new_job_ids`) instead of one per job, and the bodies from one
:meth:`~bananas.serializer.JobCodec.encode_many` call, which lets the serializer write what the jobs share once.
A plain spec (``name`` and ``payload`` only) after the first job of its name takes that job's name-derived fields,
and jobs and envelopes are written through their slots (:func:`_new_job`, :func:`_new_envelope`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bananas.broker import Envelope
from bananas.errors import SerializationError
from bananas.headers import DEFAULTED_RETRIES_HEADER, EXPIRES_HEADER, expiry_time
from bananas.job import Job, Priority, Status, new_job_id, new_job_ids
from bananas.job import _headers as _job_headers
from bananas.job import _payload as _job_payload
from bananas.job import _timeout as _job_timeout
from bananas.result_backend import RESULT_TTL_HEADER, result_ttl_header
from bananas.units import parse_duration
from bananas.values import explain

if TYPE_CHECKING:
    from bananas.app import Bananas

__all__ = ["assemble_job", "build_all", "build_job"]

_alloc = object.__new__
_PENDING, _SCHEDULED, _NORMAL = Status.PENDING, Status.SCHEDULED, Priority.NORMAL
_PLAIN = frozenset(("name", "payload"))
"""The keys of a plain spec (:func:`build_all`): every other field comes from the handler and the configuration."""


def _slot_setters(cls: type, names: tuple[str, ...]) -> tuple[Callable[[Any, Any], None], ...]:
    """The ``__set__`` of each slot of ``cls`` in ``names``: writes a field without attrs' converters and validators
    (only values already checked or made here), and about half as costly per field as ``object.__setattr__``,
    which looks the name up first. ``names`` must be exactly the class's slots (a field added to the model must be
    set here too: a test compares them)."""
    slots = tuple(s for s in cls.__slots__ if s != "__weakref__")  # type: ignore[attr-defined]
    if sorted(slots) != sorted(names):
        raise RuntimeError(f"{cls.__name__} fields {slots} differ from the fields bananas/app_build.py sets {names}: "
                           "set the new field in _new_job / _new_envelope and list it there")
    return tuple(cls.__dict__[name].__set__ for name in names)


JOB_SLOTS = ("name", "payload", "id", "priority", "status", "attempts", "max_retries", "timeout", "queue",
             "last_error", "traceback", "headers", "created_at", "enqueued_at", "scheduled_at", "started_at",
             "finished_at", "extra")
ENVELOPE_SLOTS = ("id", "queue", "body", "eta", "job_type")
(_s_name, _s_payload, _s_id, _s_priority, _s_status, _s_attempts, _s_retries, _s_timeout, _s_queue, _s_error,
 _s_traceback, _s_headers, _s_created, _s_enqueued, _s_scheduled, _s_started, _s_finished, _s_extra) = \
    _slot_setters(Job, JOB_SLOTS)
_e_id, _e_queue, _e_body, _e_eta, _e_type = _slot_setters(Envelope, ENVELOPE_SLOTS)


def _new_job(name: str, payload: dict[str, Any], job_id: str, priority: Priority, status: Status, max_retries: int,
             timeout: float | None, headers: dict[str, str], now: float, scheduled_at: float | None) -> Job:
    """A new job from values already checked or made here, routed by the caller (``queue`` is ``None``)."""
    job = _alloc(Job)
    _s_name(job, name)
    _s_payload(job, payload)
    _s_id(job, job_id)
    _s_priority(job, priority)
    _s_status(job, status)
    _s_attempts(job, 0)
    _s_retries(job, max_retries)
    _s_timeout(job, timeout)
    _s_queue(job, None)
    _s_error(job, None)
    _s_traceback(job, None)
    _s_headers(job, headers)
    _s_created(job, now)
    _s_enqueued(job, now)
    _s_scheduled(job, scheduled_at)
    _s_started(job, None)
    _s_finished(job, None)
    _s_extra(job, {})
    return job


def _new_envelope(job_id: str, queue: str, body: bytes, eta: float | None, job_type: str) -> Envelope:
    """``Envelope(job_id, queue, body, eta, job_type)`` for values made here, without attrs' ``__init__``."""
    env = _alloc(Envelope)
    _e_id(env, job_id)
    _e_queue(env, queue)
    _e_body(env, body)
    _e_eta(env, eta)
    _e_type(env, job_type)
    return env


def build_job(app: Bananas, now: float, make_id: Callable[[], str], name: str, *args: Any,
              **kwargs: Any) -> tuple[Job, Envelope, bool]:
    """:meth:`Bananas.build` at ``now``, plus whether the id was generated here (by ``make_id``: a fresh uuid4 that
    no broker has seen)."""
    job, eta, fresh = assemble_job(app, now, make_id, name, *args, **kwargs)
    return job, _envelope(app, job, _encode(app, job), eta), fresh


def assemble_job(  # noqa: PLR0912, PLR0913 - the producer's hot path, kept in one frame
    app: Bananas,
    now: float,
    make_id: Callable[[], str],
    name: str,
    payload: Mapping[str, Any] | None = None,
    priority: str | Priority | None = None,
    delay: str | float | None = None,
    at: datetime | float | None = None,
    max_retries: int | None = None,
    timeout: str | float | None = None,
    job_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    result_ttl: str | float | None = None,
    expires: str | float | datetime | timedelta | None = None,
) -> tuple[Job, float | None, bool]:
    """The job of :meth:`Bananas.build`'s arguments at ``now``, validated and routed but not encoded; its eta (when
    scheduled) and whether the id was generated here."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")
    handler = app.handlers.get(name)
    eta: float | None = None
    if delay is not None and at is not None:
        raise ValueError("delay/at: give one of them, not both")
    if delay is not None:
        try:
            eta = now + parse_duration(delay)
        except ValueError as exc:
            raise ValueError(f"delay: {exc}") from None
    elif at is not None:
        eta = at.timestamp() if isinstance(at, datetime) else float(at)
    hdrs = _job_headers(headers if isinstance(headers, Mapping) else dict(headers or {})) if headers else {}
    if result_ttl is not None:
        hdrs[RESULT_TTL_HEADER] = result_ttl_header(result_ttl)
    if expires is not None:
        hdrs[EXPIRES_HEADER] = repr(expiry_time(expires, now, eta))
    if max_retries is None:
        if handler is not None and handler.max_retries is not None:
            max_retries = handler.max_retries
        else:
            max_retries = app._default_retries
            if handler is None:  # a producer without the handler: the worker's handler default wins
                hdrs[DEFAULTED_RETRIES_HEADER] = "1"
    elif isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries: expected a non-negative integer, got {max_retries!r}")
    if priority:
        prio = Priority.parse(priority)
    else:
        prio = handler.priority if handler is not None and handler.priority else _NORMAL
    if timeout is not None:
        seconds = _job_timeout(timeout)
    else:
        seconds = handler.timeout if handler is not None else None
    fresh = job_id is None
    if fresh:
        job_id = make_id()
    elif not isinstance(job_id, str) or not job_id:
        raise ValueError(f"id: expected a non-empty string, got {job_id!r}")
    scheduled = eta is not None and eta > now
    job = _new_job(name, _job_payload(payload) if payload is not None else {}, job_id, prio,  # type: ignore[arg-type]
                   _SCHEDULED if scheduled else _PENDING, max_retries, seconds, hdrs, now, eta if scheduled else None)
    _s_queue(job, app.router.route(job))
    return job, eta if scheduled else None, fresh


def _encode(app: Bananas, job: Job) -> bytes:
    try:
        return app.codec.encode(job)
    except SerializationError as exc:  # restated with the path of the payload value at fault, when found
        raise explain(exc, job.payload, "payload") from exc


def _envelope(app: Bananas, job: Job, body: bytes, eta: float | None) -> Envelope:
    if len(body) > app._max_payload:
        raise SerializationError(
            f"job {job.name!r} is {len(body)} bytes encoded, more than max_payload_bytes = {app._max_payload}",
            job_id=job.id,
        )
    return _new_envelope(job.id, job.queue, body, eta, job.name)  # type: ignore[arg-type]


def build_all(app: Bananas, jobs: Sequence[Mapping[str, Any]]) -> tuple[list[Job], list[Envelope], set[str]]:
    """:func:`build_job` for each mapping of ``jobs`` (keyword arguments of :meth:`Bananas.build`), at one time,
    with ids drawn in one go and the bodies encoded in one call (:meth:`~bananas.serializer.JobCodec.encode_many`);
    returns the jobs, their envelopes and the ids generated here. The first job at fault raises, as if each job had
    been built whole in turn.

    A plain spec (a dict of ``name`` and ``payload`` only, the usual batch) of a name already built whole in this
    call takes that job's handler- and configuration-derived fields (priority, retries, timeout, headers: they
    depend on the name alone) and only gets its payload checked, an id and a route of its own."""
    now = time.time()
    if len(jobs) == 1:
        job, env, fresh = build_job(app, now, new_job_id, **jobs[0])
        return [job], [env], {job.id} if fresh else set()
    make_id = new_job_ids(len(jobs)).__next__
    route = app.router.route
    built: list[Job] = []
    etas: list[float | None] = []
    generated: set[str] = set()
    first: dict[str, Job] = {}  # name -> the first plain job of that name, built whole
    try:
        for spec in jobs:
            name = spec.get("name") if type(spec) is dict and spec.keys() <= _PLAIN else None
            model = first.get(name) if type(name) is str else None
            if model is not None:
                payload = spec.get("payload")
                job = _new_job(name, _job_payload(payload) if payload is not None else {},  # type: ignore[arg-type]
                               make_id(), model.priority, _PENDING, model.max_retries, model.timeout,
                               model.headers.copy(), now, None)
                _s_queue(job, route(job))
                eta, fresh = None, True
            else:
                job, eta, fresh = assemble_job(app, now, make_id, **spec)
                if type(name) is str:
                    first[name] = job
            built.append(job)
            etas.append(eta)
            if fresh:
                generated.add(job.id)
    except Exception:
        for job, eta in zip(built, etas, strict=True):  # an earlier job's encoding error comes first
            _envelope(app, job, _encode(app, job), eta)
        raise
    try:
        bodies = app.codec.encode_many(built)
        limit = app._max_payload
        envelopes = [
            _new_envelope(job.id, job.queue, body, eta, job.name)  # type: ignore[arg-type]
            if len(body) <= limit else _envelope(app, job, body, eta)
            for job, body, eta in zip(built, bodies, etas, strict=True)
        ]
    except SerializationError:  # the first job at fault, with its payload path, in order
        envelopes = [_envelope(app, job, _encode(app, job), eta) for job, eta in zip(built, etas, strict=True)]
    return built, envelopes, generated
