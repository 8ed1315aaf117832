"""Serializers turn a job's fields into bytes and back; :class:`JobCodec` wraps them in a versioned frame.

A serializer only sees JSON-compatible mappings (``Job.to_dict()``); the kernel's :class:`JobCodec` adds the job
model, the frame and optional signing on top. Serializers are registered by name through
``bananas_register_serializers`` and chosen with ``serializer = "<name>"``.

Every body the codec writes starts with a frame header that names the serializer, so a worker decodes jobs
written by producers configured with any serializer it has installed (a rolling migration from ``json`` to
``protobuf`` needs no drained queues)::

    offset  size  field
    0       2     magic b"BN"
    2       1     frame version (1)
    3       1     flags: bit 0 = signed; every other bit must be 0
    4       1     n = length of the serializer name (1..64)
    5       n     serializer name, ASCII (letters, digits, "_", "-", ".")
    5+n     32    HMAC-SHA256 tag, only when signed: over bytes [0, 5+n) + body, so the name is covered too
    ...     rest  body: the serializer's bytes

A body without the magic, with a newer version, unknown flags, an unknown serializer name or a bad signature is
rejected with :class:`~bananas.errors.SerializationError` and a reason that says which.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from bananas.errors import SerializationError, UnknownPlugin
from bananas.job import Job

if TYPE_CHECKING:
    from bananas.config import Settings
    from bananas.registry import Registry

__all__ = [
    "FRAME_VERSION",
    "MAGIC",
    "FrameHeader",
    "JobCodec",
    "Serializer",
    "SerializerSpec",
    "SignatureError",
    "pack_frame",
    "read_frame",
]

MAGIC = b"BN"
"""The first two bytes of every encoded job and result."""
FRAME_VERSION = 1
"""The frame version this kernel writes and the newest it reads."""
FLAG_SIGNED = 0x01
_KNOWN_FLAGS = FLAG_SIGNED
_TAG_SIZE = hashlib.sha256().digest_size
_MAX_NAME = 64
_NAME = re.compile(rb"[A-Za-z0-9_.-]{1,64}")


@runtime_checkable
class Serializer(Protocol):
    """Encode and decode JSON-compatible mappings.

    Implementations must never execute code while decoding (no pickle), and must raise
    :class:`bananas.errors.SerializationError` for any bytes they cannot decode. They see only the body: the
    frame header is the codec's business. A job's mapping may hold keys that this version's job model does not
    know (fields a newer producer wrote, see :attr:`bananas.job.Job.extra`) or lack optional ones (an older
    producer): a serializer must write and read back every key it is given, with its value, and never require one.
    Values beyond JSON's (aware ``datetime``, ``date``, ``time``, ``UUID``, ``Decimal``, ``bytes``; tuples and sets
    as lists: :mod:`bananas.values`) must come back as the same types, and a naive ``datetime`` must be refused
    with ``SerializationError``: the enqueue path relies on it to refuse one (``SerializerConformance`` checks both).
    """

    name: str

    def dumps(self, data: Mapping[str, Any]) -> bytes:
        """Encode ``data``; raise ``SerializationError`` for values the format cannot hold."""
        ...

    def loads(self, data: bytes) -> dict[str, Any]:
        """Decode bytes produced by :meth:`dumps`; raise ``SerializationError`` for anything else."""
        ...


@attrs.frozen
class SerializerSpec:
    """What a plugin registers: a name and a factory that builds the serializer.

    The name is written into every frame, so it must be stable, ASCII (letters, digits, ``_``, ``-``, ``.``)
    and at most 64 characters.
    """

    name: str
    factory: Callable[[], Serializer] = attrs.field(eq=False)
    summary: str = ""


class SignatureError(SerializationError):
    """A job's HMAC signature is missing or does not verify: the worker dead-letters it with reason
    ``bad signature``."""


@attrs.frozen
class FrameHeader:
    """The parsed header of an framed body.

    Attributes:
        version: The frame version (1).
        serializer: The name of the serializer that wrote the body.
        signed: Whether a tag follows the name.
        tag: The HMAC-SHA256 tag, or ``b""``.
        signed_part: The bytes the tag covers before the body (magic … name).
        body_offset: Where the serializer's body starts.
    """

    version: int
    serializer: str
    signed: bool
    tag: bytes
    signed_part: bytes
    body_offset: int


def _check_name(name: str) -> bytes:
    raw = name.encode("ascii", "replace")
    if not _NAME.fullmatch(raw):
        raise SerializationError(
            f"serializer name {name!r} cannot go into a frame: use 1 to {_MAX_NAME} ASCII letters, digits, "
            "'_', '-' or '.'"
        )
    return raw


def pack_frame(serializer: str, body: bytes, *, key: bytes | None = None) -> bytes:
    """Prefix ``body`` with the frame header naming ``serializer``; sign it with ``key`` when given."""
    raw = _check_name(serializer)
    flags = FLAG_SIGNED if key is not None else 0
    head = MAGIC + bytes((FRAME_VERSION, flags, len(raw))) + raw
    if key is None:
        return head + body
    return head + _tag(key, head, body) + body


def read_frame(data: bytes) -> FrameHeader:
    """Parse and check the header of ``data``; raise ``SerializationError`` naming what is wrong."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SerializationError(f"a job body must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if data[:2] != MAGIC:
        raise SerializationError(
            "not a Bananas job frame: the body does not start with b'BN' (written by something other than a "
            "Bananas producer?)",
            data,
        )
    if len(data) < 5:
        raise SerializationError("truncated frame header", data)
    version, flags, size = data[2], data[3], data[4]
    if version > FRAME_VERSION:
        raise SerializationError(
            f"frame version {version} is newer than this Bananas reads (up to {FRAME_VERSION}); upgrade "
            "bananas here",
            data,
        )
    if version < 1:
        raise SerializationError(f"unknown frame version {version}", data)
    if flags & ~_KNOWN_FLAGS:
        raise SerializationError(
            f"unknown frame flags 0x{flags:02x} (written by a newer Bananas?); this version knows 0x01 (signed)",
            data,
        )
    end = 5 + size
    raw = data[5:end]
    if size == 0 or len(raw) < size:
        raise SerializationError("truncated frame header: the serializer name is cut off", data)
    if not _NAME.fullmatch(raw):
        raise SerializationError(f"invalid serializer name in the frame: {raw!r}", data)
    signed = bool(flags & FLAG_SIGNED)
    tag = data[end : end + _TAG_SIZE] if signed else b""
    if signed and len(tag) < _TAG_SIZE:
        raise SerializationError("truncated frame header: the signature is cut off", data)
    return FrameHeader(
        version=version,
        serializer=raw.decode("ascii"),
        signed=signed,
        tag=tag,
        signed_part=data[:end],
        body_offset=end + len(tag),
    )


def _tag(key: bytes, head: bytes, body: bytes | memoryview) -> bytes:
    mac = hmac.new(key, head, hashlib.sha256)
    mac.update(body)
    return mac.digest()


def _key(value: str | bytes) -> bytes:
    key = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if not key:
        raise ValueError("signing keys must not be empty")
    return key


def _keys(values: Iterable[str | bytes]) -> tuple[bytes, ...]:
    return tuple(_key(v) for v in values)


@attrs.define(eq=False)
class JobCodec:
    """Job ↔ framed bytes; every failure becomes ``SerializationError``.

    ``serializer`` writes every body. Reading dispatches on the frame's serializer name: the codec's own
    serializer, else one built from ``registry`` (every serializer installed in the app), so jobs written by
    producers configured with another installed serializer decode too.

    With a ``signing_key`` every body is signed (HMAC-SHA256) and :meth:`decode` rejects unsigned or tampered jobs
    with :class:`SignatureError` (reason ``bad signature``); ``old_signing_keys`` still verify during a key
    rotation but never sign. Without a key, signed bodies are read without checking their tag, so producers can
    start signing before the workers require it.

    Attributes:
        serializer: The configured serializer (``serializer = "<name>"``).
        registry: The app's serializer registry, for reading bodies that other serializers wrote.
        signing_key: Signs and verifies (``str`` keys are UTF-8 encoded).
        old_signing_keys: Verify only.
    """

    serializer: Serializer
    registry: Registry[SerializerSpec] | None = None
    signing_key: bytes | None = attrs.field(
        default=None, converter=lambda v: None if v is None else _key(v), repr=False
    )
    old_signing_keys: tuple[bytes, ...] = attrs.field(default=(), converter=_keys, repr=False)
    _readers: dict[str, Serializer] = attrs.field(init=False, factory=dict, repr=False)
    _heads: dict[tuple[str, bool], bytes] = attrs.field(init=False, factory=dict, repr=False)

    def __attrs_post_init__(self) -> None:
        raw = _check_name(self.serializer.name)
        self._readers[self.serializer.name] = self.serializer
        self._heads[(self.serializer.name, False)] = MAGIC + bytes((FRAME_VERSION, 0, len(raw))) + raw

    @classmethod
    def from_settings(cls, registry: Registry[SerializerSpec], settings: Settings) -> JobCodec:
        """The codec of an app: ``serializer``, ``signing_key`` and ``signing_keys_old`` from ``settings``."""
        serializer = registry.get(settings["serializer"]).factory()
        return cls(
            serializer,
            registry,
            signing_key=settings["signing_key"],
            old_signing_keys=settings["signing_keys_old"],
        )

    @property
    def name(self) -> str:
        """The configured serializer's name: with :meth:`dumps` and :meth:`loads`, a codec is itself a
        :class:`Serializer` whose bodies are framed (and signed), e.g. for stored results."""
        return self.serializer.name

    @property
    def signing(self) -> bool:
        """Whether this codec signs what it writes and requires signatures on what it reads."""
        return self.signing_key is not None

    # -- mappings (job fields, results) ----------------------------------------------------------------------
    def dumps(self, data: Mapping[str, Any], *, job_id: str | None = None) -> bytes:
        """Encode any JSON-compatible mapping (a result, say) with the configured serializer, in a frame."""
        try:
            body = self.serializer.dumps(data)
        except SerializationError as exc:
            if job_id is not None and exc.job_id is None:
                raise SerializationError(exc.reason, exc.data, job_id) from exc
            raise
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise SerializationError(f"cannot encode with {self.serializer.name}: {exc}", job_id=job_id) from exc
        if not isinstance(body, bytes):
            raise SerializationError(
                f"serializer {self.serializer.name!r} returned {type(body).__name__}, not bytes", job_id=job_id
            )
        return self._framed(body)

    def _framed(self, body: bytes) -> bytes:
        key = self.signing_key
        name = self.serializer.name
        head = self._heads.get((name, key is not None))
        if head is None:  # the header only depends on the name and the flags: checked and built once
            raw = _check_name(name)
            head = MAGIC + bytes((FRAME_VERSION, FLAG_SIGNED if key is not None else 0, len(raw))) + raw
            self._heads[(name, key is not None)] = head
        if key is None:
            return head + body
        return head + _tag(key, head, body) + body

    def loads(self, data: bytes, *, require_signature: bool = False) -> dict[str, Any]:
        """Decode an framed mapping written by any installed serializer.

        Signed bodies are verified whenever this codec has keys; unsigned ones are accepted unless
        ``require_signature`` (results written by a worker that has no key yet still read). :meth:`decode`
        requires signatures on jobs whenever this codec has a key.
        """
        plain = self._heads.get((self.serializer.name, False))
        if plain is not None and not require_signature and type(data) is bytes and data.startswith(plain):
            # Fast path: the exact unsigned header this codec writes (magic, version, no flags, its serializer's
            # name): nothing in it needs checking or verifying, so go straight to the body.
            reader, body, name = self.serializer, data[len(plain) :], self.serializer.name
        else:
            head = read_frame(data)
            view = memoryview(data)[head.body_offset :]
            self._verify(head, view, data, self.signing if require_signature is None else require_signature)
            reader, body, name = self._reader(head.serializer, data), bytes(view), head.serializer
        try:
            fields = reader.loads(body)
        except SerializationError as exc:
            if exc.data is None:
                raise SerializationError(exc.reason, data, exc.job_id) from exc
            raise
        except Exception as exc:  # a third-party serializer broke its contract: still only a decoding failure
            raise SerializationError(f"invalid {name} body: {type(exc).__name__}: {exc}", data) from exc
        if not isinstance(fields, dict):
            raise SerializationError(f"decoded {name} body is not a mapping", data)
        return fields

    # -- jobs ------------------------------------------------------------------------------------------------
    def encode(self, job: Job) -> bytes:
        """The job's fields, framed (and signed when a key is set): :meth:`Job.to_dict`, so the fields this
        version does not know (:attr:`Job.extra`) are written back as they were read."""
        return self.dumps(job.to_dict(), job_id=job.id)

    def encode_many(self, jobs: Sequence[Job]) -> list[bytes]:
        """:meth:`encode` of each job, byte for byte, raising what :meth:`encode` raises for the first that fails.
        A serializer with an optional ``dumps_many(mappings) -> list[bytes]`` (the built-in ``json``: it writes what
        the jobs of one ``enqueue_many`` share once) encodes the batch in one call; any failure there is retried job
        by job, so the errors are exactly :meth:`encode`'s."""
        many = getattr(self.serializer, "dumps_many", None)
        if many is not None and len(jobs) > 1:
            try:
                bodies = many([job.to_dict() for job in jobs])
            except Exception:  # noqa: BLE001 - retried job by job below, which raises the exact error
                pass
            else:
                if len(bodies) == len(jobs) and all(type(body) is bytes for body in bodies):
                    return [self._framed(body) for body in bodies]
        return [self.encode(job) for job in jobs]

    def decode(self, data: bytes) -> Job:
        """A job from bytes that :meth:`encode` (of any app with the same serializers installed) wrote.

        :meth:`Job.from_dict` reads the fields: fields this version does not know are kept in :attr:`Job.extra`,
        missing optional ones take their defaults; a missing required field (``name``, ``id``) or a bad value is a
        ``SerializationError`` whose reason starts with ``malformed job:``.
        """
        fields = self.loads(data, require_signature=self.signing)
        job_id = fields.get("id") if isinstance(fields.get("id"), str) else None
        try:
            return Job.from_dict(fields)
        except Exception as exc:  # any field the job model refuses (converters may raise more than ValueError)
            raise SerializationError(f"malformed job: {exc}", data, job_id) from exc

    # -- internals -------------------------------------------------------------------------------------------
    def _verify(self, head: FrameHeader, body: memoryview, data: bytes, required: bool) -> None:
        keys = (self.signing_key, *self.old_signing_keys) if self.signing_key is not None else self.old_signing_keys
        if not head.signed:
            if required:
                raise SignatureError("bad signature: the job is not signed", data)
            return
        if not keys:
            return
        for key in keys:
            if hmac.compare_digest(_tag(key, head.signed_part, body), head.tag):
                return
        raise SignatureError("bad signature", data)

    def _reader(self, name: str, data: bytes) -> Serializer:
        reader = self._readers.get(name)
        if reader is not None:
            return reader
        if self.registry is None:
            raise SerializationError(
                f"the body was written with serializer {name!r}; this codec reads only {self.serializer.name!r}",
                data,
            )
        try:
            spec = self.registry.get(name)
        except UnknownPlugin as exc:
            raise SerializationError(
                f"the body was written with serializer {name!r}, which is not installed here: {exc}", data
            ) from exc
        reader = self._readers[name] = spec.factory()
        return reader
