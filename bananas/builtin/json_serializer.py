"""``serializer = "json"``: the kernel's essential serializer (UTF-8 JSON, compact, standard library only).

It stays in the kernel so that an app works with no plugin installed. ``bananas-json`` adds ``orjson``, a faster
writer and reader of the same JSON (see ``docs/SERIALIZERS.md``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, NoReturn

from bananas.errors import SerializationError
from bananas.hookspecs import hookimpl
from bananas.registry import Register
from bananas.serializer import SerializerSpec

__all__ = ["JsonSerializer"]


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON-compatible")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


class JsonSerializer:
    """Compact JSON. Rejects NaN/Infinity and non-string keys so every encoded job is portable."""

    name = "json"

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        self._decoder = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)

    def dumps(self, data: Mapping[str, Any]) -> bytes:
        try:
            return self._encoder.encode(data).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(f"not JSON-serializable: {exc}") from exc

    def loads(self, data: bytes) -> dict[str, Any]:
        try:
            value = self._decoder.decode(data.decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise SerializationError(f"invalid JSON: {exc}", data) from exc
        if not isinstance(value, dict):
            raise SerializationError(f"expected a JSON object, got {type(value).__name__}", data)
        return value


@hookimpl
def bananas_register_serializers(register: Register[SerializerSpec]) -> None:
    register(SerializerSpec(name="json", factory=JsonSerializer, summary="compact UTF-8 JSON (built in)"))
