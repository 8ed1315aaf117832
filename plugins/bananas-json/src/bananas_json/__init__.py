"""``serializer = "orjson"``: compact UTF-8 JSON through orjson (Rust), a faster twin of the built-in ``json``.

The bytes are plain JSON, but the frame names ``orjson``, so every worker that reads them needs this package
installed (``docs/SERIALIZERS.md`` explains why it does not replace the kernel's ``json``). Differences from the
built-in serializer, all from orjson: integers must fit in 64 bits (signed or unsigned) when writing; on reading,
larger integers become floats; NaN and ±Infinity are written as ``null`` instead of being refused; dataclass and
enum values are written (as objects or their values) instead of being refused.

``datetime``, ``date``, ``time``, ``UUID``, ``Decimal``, ``bytes`` and sets are written as the kernel's tagged
objects (``bananas.values``), exactly like the built-in ``json``, and come back as the same types. orjson runs first
as it is; a body it refuses (a value it lacks) is written in one more pass with the kernel's ``JsonTagger`` as
``default``. orjson writes ``UUID`` objects itself and has no option to hand them over, so a body with a
UUID-shaped string, or with the tag key more often than the tags written (a dict of the user's holds it), is written
again from the kernel's exact tagged form (:func:`to_json`). Reading looks for tags only in a body that holds the
tag key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from bananas.plugin_api import (
    JSON_TAG,
    JsonTagger,
    Register,
    SerializationError,
    SerializerSpec,
    from_json,
    hookimpl,
    may_hold_tags,
    to_json,
)

__all__ = ["OrjsonSerializer"]

__version__ = "0.1.0"

_TAG = f'"{JSON_TAG}"'.encode("ascii")
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME  # datetime, date, time reach the kernel's tags, never orjson's strings
_UUID_TAIL = re.compile(rb"-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\"")
"""The end of how orjson writes a ``UUID`` (8-4-4-4-12 lowercase hex): a body with such a string may hold one, so it
takes the exact path. Starting at a dash, not a quote, lets the regular expression skip ahead to each dash; bodies
with fewer than four dashes are not searched at all."""


class OrjsonSerializer:
    """Compact JSON via orjson; refuses non-string keys like the built-in ``json``."""

    name = "orjson"

    def dumps(self, data: Mapping[str, Any]) -> bytes:
        try:
            try:
                body = orjson.dumps(data, None, _OPTIONS)  # positional: measurably cheaper than option=
                tags = 0
            except TypeError:  # a value JSON lacks (or one nobody carries): tag it in one more pass
                tagger = JsonTagger()
                body = orjson.dumps(data, tagger, _OPTIONS)
                tags = tagger.count
            if body.count(_TAG) != tags or (body.count(b"-") >= 4 and _UUID_TAIL.search(body)):
                body = orjson.dumps(to_json(data), None, _OPTIONS)  # the exact path: escapes, and tags UUIDs
            return body
        except (TypeError, ValueError, RecursionError) as exc:  # orjson.JSONEncodeError is a TypeError
            # orjson reports an error of ``default`` (a naive datetime, say) as its cause
            raise SerializationError(f"not JSON-serializable: {exc.__cause__ or exc}") from exc

    def loads(self, data: bytes) -> dict[str, Any]:
        try:
            value = orjson.loads(data)
            if may_hold_tags(data):
                value = from_json(value)
        except (ValueError, TypeError, RecursionError) as exc:  # orjson.JSONDecodeError is a ValueError
            raise SerializationError(f"invalid JSON: {exc}", data) from exc
        if not isinstance(value, dict):
            raise SerializationError(f"expected a JSON object, got {type(value).__name__}", data)
        return value


@hookimpl
def bananas_register_serializers(register: Register[SerializerSpec]) -> None:
    register(SerializerSpec(name="orjson", factory=OrjsonSerializer, summary="compact UTF-8 JSON via orjson"))
