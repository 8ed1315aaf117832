"""``serializer = "msgpack"``: MessagePack job bodies (msgpack-python), smaller and faster than JSON.

Decoding is safe on untrusted bytes: only the kernel's extension types below are read (a body that carries any other
is refused), timestamps are read as float seconds, map keys must be strings, nesting and sizes are bounded by
msgpack's own limits. Like JSON, integers must fit in 64 bits (-2**63 to 2**64 - 1).

Values beyond JSON's own come back as the same Python types (``docs/HANDLERS.md``, "Values you can pass"):
``bytes`` are msgpack's ``bin``; ``datetime`` (aware only), ``date``, ``time``, ``UUID`` and ``Decimal`` are
extension types with the codes of ``bananas.values.MSGPACK_EXT`` (1 to 5), whose data is the value's ISO 8601 or
canonical text in UTF-8 (a ``UUID``: its 16 bytes); tuples and sets are arrays, read back as lists.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import msgpack

from bananas.plugin_api import MSGPACK_EXT, Register, SerializationError, SerializerSpec, from_text, hookimpl, to_text

__all__ = ["MsgpackSerializer"]

__version__ = "0.1.0"

_KINDS = {code: kind for kind, code in MSGPACK_EXT.items()}
_UUID = MSGPACK_EXT["uuid"]


def _default(value: object) -> object:
    """msgpack's ``default``: only called for types msgpack does not know."""
    if isinstance(value, set | frozenset):
        return list(value)
    if isinstance(value, uuid.UUID):
        return msgpack.ExtType(_UUID, value.bytes)
    tagged = to_text(value)  # TypeError for a naive datetime
    if tagged is None:
        raise TypeError(f"{type(value).__name__} is not a value Bananas can carry")
    return msgpack.ExtType(MSGPACK_EXT[tagged[0]], tagged[1].encode("utf-8"))


def _ext(code: int, data: bytes) -> Any:
    kind = _KINDS.get(code)
    if kind is None:
        raise ValueError(f"msgpack extension type {code} is not allowed in a job")
    if code == _UUID:
        return uuid.UUID(bytes=data)
    return from_text(kind, data.decode("utf-8"))


class MsgpackSerializer:
    """MessagePack with the str/bin distinction (``use_bin_type``) and the kernel's extension types only."""

    name = "msgpack"

    def dumps(self, data: Mapping[str, Any]) -> bytes:
        try:
            return msgpack.packb(data, use_bin_type=True, default=_default, strict_types=False)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise SerializationError(f"not msgpack-serializable: {exc}") from exc

    def loads(self, data: bytes) -> dict[str, Any]:
        try:
            value = msgpack.unpackb(data, raw=False, strict_map_key=True, timestamp=1, ext_hook=_ext)
        except Exception as exc:  # ExtraData, FormatError, StackError, ValueError, TypeError, ...: all bad input
            raise SerializationError(f"invalid msgpack: {type(exc).__name__}: {exc}", data) from exc
        if not isinstance(value, dict):
            raise SerializationError(f"expected a msgpack map, got {type(value).__name__}", data)
        return value


@hookimpl
def bananas_register_serializers(register: Register[SerializerSpec]) -> None:
    register(SerializerSpec(name="msgpack", factory=MsgpackSerializer, summary="MessagePack (msgpack-python)"))
