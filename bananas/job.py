"""The job model: what a producer asks for and what a worker runs, and its wire format.

:data:`JOB_FIELDS` is the one table of the fields a job carries between processes: which are required, how a
value read from a body is validated and converted, how it is written. :meth:`Job.to_dict`, :meth:`Job.from_dict`
and :meth:`Job._trusted` are generated from it. Fields a body carries that the table does not know (written by a
newer Bananas) are kept in :attr:`Job.extra` and written back unchanged; ``docs/SERIALIZERS.md`` ("Evolving the job
format") has the rules.
"""

from __future__ import annotations

import enum
import linecache
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

from bananas.units import parse_duration

__all__ = ["JOB_FIELDS", "REQUIRED_FIELDS", "Job", "JobField", "Priority", "Status", "new_job_id", "new_job_ids"]


class Priority(enum.StrEnum):
    """Job priority. Workers that handle several priorities always take the highest ready one first."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for high, 1 for normal, 2 for low: sort key, lowest first."""
        return _RANK[self]

    @classmethod
    def parse(cls, value: str | Priority, *, field: str = "priority") -> Priority:
        """Accept a member or its name (any case); raise ``ValueError`` naming ``field`` otherwise."""
        if isinstance(value, Priority):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            allowed = ", ".join(p.value for p in cls)
            raise ValueError(f"{field}: {value!r} is not one of {allowed}") from None


_RANK = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}


class Status(enum.StrEnum):
    """Where a job is in its life."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRYING = "retrying"
    DEAD = "dead"
    CANCELLED = "cancelled"
    """``client.cancel(job_id)`` stopped it: it never ran, or its run was stopped (docs/HANDLERS.md)."""
    EXPIRED = "expired"
    """Not started before its ``expires`` time: dropped by the worker that took it, never run."""

    @property
    def finished(self) -> bool:
        """Completed, dead, cancelled or expired: the job will not run again (unless enqueued anew)."""
        return self in _FINISHED


_FINISHED = frozenset({Status.COMPLETED, Status.DEAD, Status.CANCELLED, Status.EXPIRED})


def new_job_id() -> str:
    """A random 32-hex-digit job id (``uuid.uuid4().hex``, built without the ``UUID`` object)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


_V4 = bytes((b & 0x0F) | 0x40 for b in range(256))  # byte 6 of a uuid4: version 4
_RFC4122 = bytes((b & 0x3F) | 0x80 for b in range(256))  # byte 8: the RFC 4122 variant


def new_job_ids(count: int) -> Iterator[str]:
    """:func:`new_job_id` ``count`` times from one ``os.urandom`` call (a batch's ids), then one call per id."""
    if count > 0:
        raw = bytearray(os.urandom(16 * count))
        raw[6::16] = raw[6::16].translate(_V4)
        raw[8::16] = raw[8::16].translate(_RFC4122)
        text = raw.hex()
        for i in range(0, 32 * count, 32):
            yield text[i : i + 32]
    while True:
        yield new_job_id()


_set = object.__setattr__


def _payload(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"payload: expected a mapping of keyword arguments, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise ValueError(f"payload: keys must be strings (they become keyword arguments), got {key!r}")
    return dict(value)


_PRIORITIES = {p.value: p for p in Priority}
_STATUSES = {s.value: s for s in Status}
_PRIORITY_VALUES = {p: p.value for p in Priority}
_STATUS_VALUES = {s: s.value for s in Status}


def _priority(value: str | Priority) -> Priority:
    try:
        return _PRIORITIES[value]  # an exact value or a member (members hash and compare as their values)
    except (KeyError, TypeError):
        return Priority.parse(value)


def _status(value: str | Status) -> Status:
    try:
        return _STATUSES[value]
    except (KeyError, TypeError):
        pass
    try:
        return Status(value)
    except ValueError:
        allowed = ", ".join(s.value for s in Status)
        raise ValueError(f"status: {value!r} is not one of {allowed}") from None


def _timeout(value: str | float | None) -> float | None:
    if value is None or (type(value) is float and value > 0):
        return value
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"timeout: {exc}") from None
    if seconds <= 0:
        raise ValueError(f"timeout: must be positive, got {value!r}")
    return seconds


def _check_count(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{field}: expected a non-negative integer, got {value!r}")


def _check_text(field: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field}: expected a non-empty string, got {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    _check_count(attribute.name, value)


def _name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    _check_text(attribute.name, value)


def _headers(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValueError(f"headers: expected a mapping of strings, got {type(value).__name__}")
    return {str(k): str(v) for k, v in value.items()}


def _extra(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"extra: expected a mapping of job fields this version does not know, got {value!r}")
    for key in value:
        if not isinstance(key, str):
            raise ValueError(f"extra: job field names must be strings, got {key!r}")
        if key in _WIRE_NAMES:
            raise ValueError(f"extra: {key!r} is a field this version knows, not an unknown one: set Job.{key}")
    return dict(value)


@attrs.define(kw_only=True)
class Job:
    """One unit of work.

    Attributes:
        id: Unique id (32 hex digits unless the producer chose one).
        name: The registered handler name.
        payload: JSON-compatible mapping, passed to the handler as keyword arguments.
        priority: ``high``, ``normal`` or ``low``.
        status: See :class:`Status`.
        attempts: How many times the handler has been started for this job.
        max_retries: Retries allowed after the first attempt fails.
        timeout: Seconds the handler may run, or ``None`` for the worker default.
        queue: The queue the router chose (set at enqueue).
        last_error: ``"Type: message"`` of the last failure.
        traceback: Text of the last failure's traceback.
        headers: Free-form string headers (trace ids and the like).
        created_at / enqueued_at / scheduled_at / started_at / finished_at: Unix timestamps or ``None``.
        extra: Fields the job's body carried that this version does not know (a newer producer wrote them), by
            name: not validated, not used, written back unchanged by :meth:`to_dict` (so a retry or a dead letter
            keeps them). Names must be strings and must not be fields of this model. Usually empty.
    """

    name: str = attrs.field(validator=_name)
    payload: dict[str, Any] = attrs.field(factory=dict, converter=_payload)
    id: str = attrs.field(factory=new_job_id, validator=_name)
    priority: Priority = attrs.field(default=Priority.NORMAL, converter=_priority)
    status: Status = attrs.field(default=Status.PENDING, converter=_status)
    attempts: int = attrs.field(default=0, validator=_non_negative)
    max_retries: int = attrs.field(default=3, validator=_non_negative)
    timeout: float | None = attrs.field(default=None, converter=_timeout)
    queue: str | None = None
    last_error: str | None = None
    traceback: str | None = None
    headers: dict[str, str] = attrs.field(factory=dict, converter=_headers)
    created_at: float = attrs.field(factory=time.time)
    enqueued_at: float | None = None
    scheduled_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    extra: dict[str, Any] = attrs.field(factory=dict, converter=_extra)

    def __new__(cls, *args: Any, **kwargs: Any) -> Job:  # noqa: ARG004 - __init__ takes them
        # A job assembled field by field from ``Job.__new__(Job)`` (the producer's hot path does that) still has
        # ``extra``: to_dict, __eq__ and __repr__ read it.
        self = object.__new__(cls)
        _set(self, "extra", {})
        return self

    # The three methods below are replaced by code generated from JOB_FIELDS (see _install at the end of the module).
    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible mapping of every field of :data:`JOB_FIELDS` (enums as their string values), followed
        by the :attr:`extra` fields, unchanged (a field of the table always wins over an ``extra`` of its name)."""
        raise NotImplementedError  # pragma: no cover

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        """Rebuild a job from :meth:`to_dict` output, written by this version or any other.

        Every field of :data:`JOB_FIELDS` is validated and converted as ``Job(...)`` does (``ValueError`` naming the
        field). A missing required field (:data:`REQUIRED_FIELDS`: ``name``, ``id``) raises ``ValueError``; a
        missing optional field takes its default. Keys the table does not know are kept in :attr:`extra`; one that
        is not a string raises ``ValueError``.
        """
        raise NotImplementedError  # pragma: no cover

    @classmethod
    def _trusted(cls, *, name: str, **fields: Any) -> Job:
        """``Job(...)`` without converters or validators, for values that already have the model's types (the
        kernel's own hot paths): same keywords and defaults, nothing is checked or copied."""
        raise NotImplementedError  # pragma: no cover


@attrs.frozen
class JobField:
    """One field of the job format, as it travels between processes.

    Attributes:
        name: The key in :meth:`Job.to_dict` and the attribute of :class:`Job`.
        required: Whether a body without it is malformed. An optional field missing from a body takes
            :attr:`default`, so a field added in a later version must be optional.
        default: The attrs default of the attribute (a value, an ``attrs.Factory``, or ``attrs.NOTHING`` for
            ``name``), filled in from :class:`Job` when the table is built.
        decode: Wire value → model value, validating it (``ValueError`` naming the field); ``None``: taken as is.
        encode: Model value → wire value; ``None``: written as is.
    """

    name: str
    required: bool = False
    default: Any = attrs.field(default=None, kw_only=True)
    decode: Callable[[Any], Any] | None = attrs.field(default=None, eq=False)
    encode: Callable[[Any], Any] | None = attrs.field(default=None, eq=False)


def _text(field: str) -> Callable[[Any], str]:
    def decode(value: Any) -> str:
        if type(value) is not str or not value:
            _check_text(field, value)
        return value

    return decode


def _count(field: str) -> Callable[[Any], int]:
    def decode(value: Any) -> int:
        if type(value) is not int or value < 0:
            _check_count(field, value)
        return value

    return decode


def _wire_headers(value: Any) -> dict[str, str]:
    if type(value) is dict:
        for key, text in value.items():
            if type(key) is not str or type(text) is not str:
                return _headers(value)
        return value.copy()
    return _headers(value)


def _table(*fields: JobField) -> tuple[JobField, ...]:
    defaults = attrs.fields_dict(Job)
    return tuple(attrs.evolve(f, default=defaults[f.name].default) for f in fields)


JOB_FIELDS: tuple[JobField, ...] = _table(
    JobField("name", required=True, decode=_text("name")),
    JobField("payload", decode=_payload),
    JobField("id", required=True, decode=_text("id")),
    JobField("priority", decode=_priority, encode=_PRIORITY_VALUES.__getitem__),
    JobField("status", decode=_status, encode=_STATUS_VALUES.__getitem__),
    JobField("attempts", decode=_count("attempts")),
    JobField("max_retries", decode=_count("max_retries")),
    JobField("timeout", decode=_timeout),
    JobField("queue"),
    JobField("last_error"),
    JobField("traceback"),
    JobField("headers", decode=_wire_headers),
    JobField("created_at"),
    JobField("enqueued_at"),
    JobField("scheduled_at"),
    JobField("started_at"),
    JobField("finished_at"),
)
"""The job format, in :meth:`Job.to_dict` order: every attribute of :class:`Job` but :attr:`Job.extra`. Add a field
here and to :class:`Job` together; a field added after 0.1 must be optional (``docs/SERIALIZERS.md``)."""
REQUIRED_FIELDS: tuple[str, ...] = tuple(f.name for f in JOB_FIELDS if f.required)
"""``("name", "id")``: a body without one of them is malformed."""
_WIRE_NAMES = frozenset(f.name for f in JOB_FIELDS)
if [f.name for f in JOB_FIELDS] != [a.name for a in attrs.fields(Job) if a.name != "extra"]:  # pragma: no cover
    raise AssertionError("JOB_FIELDS must list every attribute of Job but extra, in order")


def _unknown(data: Mapping[Any, Any]) -> dict[str, Any]:
    """The keys of ``data`` that are not in :data:`JOB_FIELDS`, with their values."""
    extra: dict[str, Any] = {}
    for key, value in data.items():
        if key in _WIRE_NAMES:
            continue
        if not isinstance(key, str):
            raise ValueError(f"unknown job field {key!r}: job field names must be strings")
        extra[key] = value
    return extra


def _complete(cls: type[Job], data: Mapping[str, Any]) -> Job:
    """``from_dict`` of a body that lacks some fields: required ones are an error, optional ones take defaults."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a job is a mapping of its fields, got {type(data).__name__}")
    missing = [f.name for f in JOB_FIELDS if f.required and f.name not in data]
    if missing:
        raise ValueError(
            f"missing required job field(s): {', '.join(missing)} (every job carries {', '.join(REQUIRED_FIELDS)})"
        )
    full = dict(data)
    for f in JOB_FIELDS:
        if f.name not in full:
            full[f.name] = f.default.factory() if isinstance(f.default, attrs.Factory) else f.default  # type: ignore[attr-defined]
    return cls.from_dict(full)


_MISSING: Any = type("_Missing", (), {"__repr__": lambda self: "<missing>"})()


def _install(cls: type[Job], fields: tuple[JobField, ...]) -> None:
    """Generate ``to_dict``, ``from_dict`` and ``_trusted`` from ``fields``: straight-line code, one line per
    field, as fast as writing them out by hand (they run on every enqueue, fetch, retry and dead letter)."""
    ns: dict[str, Any] = {"_new": object.__new__, "_set": _set, "_MISSING": _MISSING}
    ns |= {"_unknown": _unknown, "_complete": _complete}
    dump, read, store, params, build = [], [], [], [], []
    for i, f in enumerate(fields):
        n = f.name
        if f.encode is None:
            dump.append(f"        {n!r}: self.{n},")
        else:
            ns[f"_encode_{n}"] = f.encode
            dump.append(f"        {n!r}: _encode_{n}(self.{n}),")
        read.append(f"        v{i} = data[{n!r}]")
        if f.decode is None:
            store.append(f"    _set(self, {n!r}, v{i})")
        else:
            ns[f"_decode_{n}"] = f.decode
            store.append(f"    _set(self, {n!r}, _decode_{n}(v{i}))")
        if f.default is attrs.NOTHING:
            params.append(n)
            build.append(f"    _set(self, {n!r}, {n})")
        elif isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
            ns[f"_default_{n}"] = f.default.factory
            params.append(f"{n}=_MISSING")
            build.append(f"    _set(self, {n!r}, _default_{n}() if {n} is _MISSING else {n})")
        else:
            ns[f"_default_{n}"] = f.default
            params.append(f"{n}=_default_{n}")
            build.append(f"    _set(self, {n!r}, {n})")
    nl = "\n"
    source = f"""\
def to_dict(self):
    data = {{
{nl.join(dump)}
    }}
    extra = self.extra
    if extra:
        for key, value in extra.items():
            data.setdefault(key, value)
    return data


def from_dict(cls, data):
    try:
{nl.join(read)}
    except KeyError:
        return _complete(cls, data)
    self = _new(cls)
{nl.join(store)}
    _set(self, "extra", {{}} if len(data) == {len(fields)} else _unknown(data))
    return self


def _trusted(cls, *, {", ".join(params)}, extra=_MISSING):
    self = _new(cls)
{nl.join(build)}
    _set(self, "extra", {{}} if extra is _MISSING else extra)
    return self
"""
    filename = f"<generated {__name__}.{cls.__name__} methods>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    exec(compile(source, filename, "exec"), ns)  # noqa: S102 - our own source, built from the table above
    for name, wrap in (("to_dict", None), ("from_dict", classmethod), ("_trusted", classmethod)):
        function = ns[name]
        placeholder = cls.__dict__[name]
        function.__doc__ = getattr(placeholder, "__func__", placeholder).__doc__
        function.__qualname__ = f"{cls.__qualname__}.{name}"
        function.__module__ = cls.__module__
        setattr(cls, name, function if wrap is None else wrap(function))


_install(Job, JOB_FIELDS)
