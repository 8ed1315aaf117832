"""``serializer = "json"``: the kernel's essential serializer (UTF-8 JSON, compact, standard library only).

It stays in the kernel so that an app works with no plugin installed. ``bananas-json`` adds ``orjson``, a faster
writer and reader of the same JSON (see ``docs/SERIALIZERS.md``).

Values beyond JSON's own (``datetime``, ``date``, ``time``, ``UUID``, ``Decimal``, ``bytes``, sets) are written as
tagged objects (:mod:`bananas.values`). Plain values pay for that with one substring search per body: the C encoder
runs first and refuses any other type. A refused body is written again with :class:`JsonTagger` as ``default``
(one pass); a body where the tag key appears more often than the tags written (a dict of the user's holds it)
takes the exact path, :func:`to_json`, which escapes such dicts.

Speed: the C encoder is built once (``json.JSONEncoder.encode`` builds one per call: about a fifth of a job's
encoding time), and :meth:`JsonSerializer.dumps_many` (``enqueue_many``) writes what a batch's jobs share once
(:mod:`bananas.builtin.json_rows`). Any failure on these fast paths (a value JSON lacks, NaN, a cycle) is retried
on the plain one, so the bytes and the errors are exactly what they were (tests compare the bytes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any, NoReturn

from bananas.builtin.json_rows import RowEncoder
from bananas.errors import SerializationError
from bananas.hookspecs import hookimpl
from bananas.registry import Register
from bananas.serializer import SerializerSpec
from bananas.values import JSON_TAG, JsonTagger, json_object_hook, may_hold_tags, to_json

__all__ = ["JsonSerializer"]

_TAG_TEXT = f'"{JSON_TAG}"'  # what may_hold_tags looks for in a text (dumps_many inlines that test)


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON-compatible")


def _refuse(value: object) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _c_encoder() -> Any:
    """The standard library's C encoder with this serializer's settings (compact, UTF-8, no NaN), built once.
    No circular-reference markers: a failure of any kind is retried on :meth:`JsonSerializer.dumps`'s path, which
    reports it as before. ``None`` where the C accelerator is missing."""
    if c_make_encoder is None:  # pragma: no cover - CPython always has it
        return None
    return c_make_encoder(None, _refuse, encode_basestring, None, ":", ",", False, False, False)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


class JsonSerializer:
    """Compact JSON. Rejects NaN/Infinity so every encoded job is portable; tags the values JSON lacks."""

    name = "json"

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        self._decoder = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)
        self._tagged = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite, object_hook=json_object_hook)
        self._fast = _c_encoder()

    def dumps(self, data: Mapping[str, Any]) -> bytes:
        fast = self._fast
        if fast is not None:
            try:
                text = "".join(fast(data, 0))
            except (TypeError, ValueError, RecursionError):
                pass  # a value JSON lacks, NaN, a cycle: the plain path tags it or says why not
            else:
                if not may_hold_tags(text):
                    return text.encode("utf-8")
        return self._dumps(data)

    def dumps_many(self, datas: Sequence[Mapping[str, Any]]) -> list[bytes]:
        """:meth:`dumps` of each mapping, byte for byte (raising what :meth:`dumps` raises for the first that fails),
        writing the fields a batch's mappings share once (:class:`~bananas.builtin.json_rows.RowEncoder`)."""
        fast = self._fast
        if fast is None:  # pragma: no cover - CPython always has the C encoder
            return [self.dumps(data) for data in datas]
        encode = RowEncoder(fast).encode
        out: list[bytes] = []
        append = out.append
        for data in datas:
            text = encode(data)
            append(self.dumps(data) if text is None or _TAG_TEXT in text else text.encode("utf-8"))
        return out

    def _dumps(self, data: Mapping[str, Any]) -> bytes:
        try:
            try:
                text = self._encoder.encode(data)
            except TypeError:  # a value JSON lacks (or one nobody carries): tag it in one more pass
                text = self._typed(data)
            else:
                if may_hold_tags(text):  # a dict of the user's may hold the tag key: the exact path escapes it
                    text = self._encoder.encode(to_json(data))
            return text.encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(f"not JSON-serializable: {exc}") from exc

    def _typed(self, data: Mapping[str, Any]) -> str:
        tagger = JsonTagger()
        encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=tagger)
        text = encoder.encode(data)
        if text.count(_TAG_TEXT) != tagger.count:  # the key is also the user's: write it again, escaped
            text = self._encoder.encode(to_json(data))
        return text

    def loads(self, data: bytes) -> dict[str, Any]:
        try:
            decoder = self._tagged if may_hold_tags(data) else self._decoder
            value = decoder.decode(data.decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise SerializationError(f"invalid JSON: {exc}", data) from exc
        if not isinstance(value, dict):
            raise SerializationError(f"expected a JSON object, got {type(value).__name__}", data)
        return value


@hookimpl
def bananas_register_serializers(register: Register[SerializerSpec]) -> None:
    register(SerializerSpec(name="json", factory=JsonSerializer, summary="compact UTF-8 JSON (built in)"))
