"""``serializer = "orjson"``: compact UTF-8 JSON through orjson (Rust), a faster twin of the built-in ``json``.

The bytes are plain JSON, but the frame names ``orjson``, so every worker that reads them needs this package
installed (``docs/SERIALIZERS.md`` explains why it does not replace the kernel's ``json``). Differences from the
built-in serializer, all from orjson: integers must fit in 64 bits (signed or unsigned) when writing; on reading,
larger integers become floats; NaN and ±Infinity are written as ``null`` instead of being refused; ``datetime``,
``UUID``, dataclass and enum values are written (as strings or objects) instead of being refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from bananas.plugin_api import Register, SerializationError, SerializerSpec, hookimpl

__all__ = ["OrjsonSerializer"]

__version__ = "0.1.0"


class OrjsonSerializer:
    """Compact JSON via orjson; refuses non-string keys like the built-in ``json``."""

    name = "orjson"

    def dumps(self, data: Mapping[str, Any]) -> bytes:
        try:
            return orjson.dumps(data)
        except (TypeError, ValueError, RecursionError) as exc:  # orjson.JSONEncodeError is a TypeError
            raise SerializationError(f"not JSON-serializable: {exc}") from exc

    def loads(self, data: bytes) -> dict[str, Any]:
        try:
            value = orjson.loads(data)
        except (ValueError, TypeError, RecursionError) as exc:  # orjson.JSONDecodeError is a ValueError
            raise SerializationError(f"invalid JSON: {exc}", data) from exc
        if not isinstance(value, dict):
            raise SerializationError(f"expected a JSON object, got {type(value).__name__}", data)
        return value


@hookimpl
def bananas_register_serializers(register: Register[SerializerSpec]) -> None:
    register(SerializerSpec(name="orjson", factory=OrjsonSerializer, summary="compact UTF-8 JSON via orjson"))
