"""``serializer = "json"``: the kernel's essential serializer (UTF-8 JSON, compact)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bananas.errors import SerializationError
from bananas.hookspecs import hookimpl
from bananas.registry import Register
from bananas.serializer import SerializerSpec

__all__ = ["JsonSerializer"]


class JsonSerializer:
    """Compact JSON. Rejects NaN/Infinity and non-string keys so every encoded job is portable."""

    name = "json"

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    def dumps(self, data: Mapping[str, Any]) -> bytes:
        try:
            return self._encoder.encode(data).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"not JSON-serializable: {exc}") from exc

    def loads(self, data: bytes) -> dict[str, Any]:
        try:
            value = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SerializationError(f"invalid JSON: {exc}", data) from exc
        if not isinstance(value, dict):
            raise SerializationError(f"expected a JSON object, got {type(value).__name__}", data)
        return value


@hookimpl
def bananas_register_serializers(register: Register[SerializerSpec]) -> None:
    register(SerializerSpec(name="json", factory=JsonSerializer, summary="compact UTF-8 JSON (built in)"))
