"""``serializer = "msgpack"``: MessagePack job bodies (msgpack-python), smaller and faster than JSON.

Decoding is safe on untrusted bytes: no extension types (a body that carries one is refused), timestamps are read
as float seconds, map keys must be strings, nesting and sizes are bounded by msgpack's own limits. Like JSON,
integers must fit in 64 bits (-2**63 to 2**64 - 1); unlike JSON, ``bytes`` values are accepted and come back as
``bytes``, which the other serializers cannot carry: keep payloads JSON-compatible if jobs may be re-encoded by a
worker configured with another serializer (a retry re-encodes with the worker's serializer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import msgpack

from bananas.plugin_api import Register, SerializationError, SerializerSpec, hookimpl

__all__ = ["MsgpackSerializer"]

__version__ = "0.1.0"


def _refuse_type(value: object) -> NoReturn:
    raise TypeError(f"{type(value).__name__} is not JSON-compatible")


def _refuse_ext(code: int, data: bytes) -> NoReturn:
    raise ValueError(f"msgpack extension type {code} is not allowed in a job")


class MsgpackSerializer:
    """MessagePack with the str/bin distinction (``use_bin_type``) and no extension types."""

    name = "msgpack"

    def dumps(self, data: Mapping[str, Any]) -> bytes:
        try:
            return msgpack.packb(data, use_bin_type=True, default=_refuse_type, strict_types=False)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise SerializationError(f"not msgpack-serializable: {exc}") from exc

    def loads(self, data: bytes) -> dict[str, Any]:
        try:
            value = msgpack.unpackb(data, raw=False, strict_map_key=True, timestamp=1, ext_hook=_refuse_ext)
        except Exception as exc:  # ExtraData, FormatError, StackError, ValueError, TypeError, ...: all bad input
            raise SerializationError(f"invalid msgpack: {type(exc).__name__}: {exc}", data) from exc
        if not isinstance(value, dict):
            raise SerializationError(f"expected a msgpack map, got {type(value).__name__}", data)
        return value


@hookimpl
def bananas_register_serializers(register: Register[SerializerSpec]) -> None:
    register(SerializerSpec(name="msgpack", factory=MsgpackSerializer, summary="MessagePack (msgpack-python)"))
