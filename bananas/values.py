"""Values people pass: the Python types a payload or a result may hold beyond JSON, and how each serializer keeps
them.

Besides JSON's own values (``None``, ``bool``, ``int``, ``float``, ``str``, lists and string-keyed dicts), payloads
and results carry these and come back as the same Python type, whichever serializer wrote them:

=====================  =================================================================================
``datetime``           aware only: every serializer refuses a naive one (:func:`naive_error`), so enqueue
                       does, and :func:`explain` names its field; the UTC offset comes back, a
                       ``zoneinfo`` zone name does not (it becomes a fixed offset)
``date``, ``time``     ``time`` keeps its offset when it has one
``uuid.UUID``
``decimal.Decimal``    every digit, as written (``Decimal("1.10")`` stays ``1.10``)
``bytes``              ``bytearray`` and ``memoryview`` come back as ``bytes``
tuples, sets           come back as lists (a set in its iteration order)
=====================  =================================================================================

JSON (``json``, ``orjson``, and ``protobuf``'s payload) writes each of the scalar kinds as a **tagged object**,
``{"__bananas__": "<kind>", "v": "<text>"}`` (kinds ``datetime``, ``date``, ``time``, ``uuid``, ``decimal`` with
ISO 8601 / canonical text, ``bytes`` with standard base64). A user's own dict that happens to hold the key
``"__bananas__"`` is escaped so it can never be read as a tag: it is written as ``{"__bananas__": "dict", "v":
[[key, value], …]}``. A dict that holds the tag key in any other shape, or an unknown kind, is refused on reading
(``SerializationError``: written by a newer Bananas?). Plain JSON values are written exactly as before (0.1
bodies decode unchanged), and a body without the tag key is read without looking for tags.

``msgpack`` uses extension types instead (:data:`MSGPACK_EXT`); ``bytes`` are msgpack's own ``bin``.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from bananas.errors import SerializationError

__all__ = [
    "JSON_TAG",
    "JsonTagger",
    "MSGPACK_EXT",
    "NAIVE_HINT",
    "explain",
    "find_problem",
    "from_json",
    "from_text",
    "json_object_hook",
    "may_hold_tags",
    "naive_error",
    "to_json",
    "to_text",
    "unstorable_reason",
]

JSON_TAG = "__bananas__"
"""The key of a tagged object in JSON bodies."""
_TAG_TEXT = f'"{JSON_TAG}"'
_TAG_BYTES = _TAG_TEXT.encode("ascii")

NAIVE_HINT = "pass an aware one (datetime.now(timezone.utc))"

MSGPACK_EXT: dict[str, int] = {"datetime": 1, "date": 2, "time": 3, "uuid": 4, "decimal": 5}
"""msgpack extension type codes of the kinds (data: the kind's text, UTF-8; ``uuid``: its 16 bytes)."""

_NONE = type(None)
_SCALARS = frozenset({str, int, float, bool, _NONE})
_MAX_DEPTH = 200
"""How deep :func:`find_problem` looks (well within Python's recursion limit): deeper, or cyclic, is a problem."""


def naive_error(value: datetime) -> TypeError:
    """The error every serializer raises for a naive ``datetime``."""
    return TypeError(f"a naive datetime ({value.isoformat()}) cannot be carried; {NAIVE_HINT}")


def to_text(value: object) -> tuple[str, str] | None:
    """``(kind, text)`` of a tagged scalar, ``None`` if ``value`` is not one; ``TypeError`` for a naive datetime."""
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise naive_error(value)
        return "datetime", value.isoformat()
    if isinstance(value, date):
        return "date", value.isoformat()
    if isinstance(value, time):
        return "time", value.isoformat()
    if isinstance(value, uuid.UUID):
        return "uuid", str(value)
    if isinstance(value, Decimal):
        return "decimal", str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "bytes", base64.b64encode(value).decode("ascii")
    return None


def _aware(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.utcoffset() is None:
        raise ValueError(f"datetime {text!r} has no UTC offset")
    return value


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a decimal") from None


_FROM_TEXT: dict[str, Callable[[str], Any]] = {
    "datetime": _aware,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "uuid": uuid.UUID,
    "decimal": _decimal,
    "bytes": lambda text: base64.b64decode(text, validate=True),
}


def from_text(kind: str, text: object) -> Any:
    """The value of a tagged scalar; ``ValueError`` for an unknown kind or text that is not one."""
    parse = _FROM_TEXT.get(kind)
    if parse is None:
        raise ValueError(f"unknown tagged value kind {kind!r} (written by a newer Bananas?)")
    if not isinstance(text, str):
        raise ValueError(f"tagged {kind} value is {type(text).__name__}, not a string")
    try:
        return parse(text)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ValueError(f"invalid tagged {kind} value {text!r}: {exc}") from None


# -- JSON ------------------------------------------------------------------------------------------------------
def to_json(value: Any) -> Any:
    """``value`` as JSON's own types: tagged scalars, escaped user dicts, tuples and sets as lists.

    Unknown types are returned as they are, so the JSON encoder refuses them (or writes ``str``/``int``/``float``
    subclasses, such as enums, as it always did). ``TypeError`` for a naive datetime.
    """
    kind = type(value)
    if kind in _SCALARS:
        return value
    if isinstance(value, dict):
        if JSON_TAG in value:
            return {JSON_TAG: "dict", "v": [[key, to_json(item)] for key, item in value.items()]}
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(item) for item in value]
    tagged = to_text(value)
    if tagged is None:
        return value
    return {JSON_TAG: tagged[0], "v": tagged[1]}


class JsonTagger:
    """``default=`` for a JSON encoder (the standard library's or orjson's): writes each value JSON lacks as its tag
    and counts them, so one pass writes a typed body. The caller compares :attr:`count` with the occurrences of the
    tag key in the output: more means a dict of the user's holds the key (or a string is exactly it), and the body is
    written again from :func:`to_json`, which escapes such dicts."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, value: object) -> Any:
        if isinstance(value, set | frozenset):
            return list(value)
        tagged = to_text(value)  # TypeError for a naive datetime
        if tagged is None:
            raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
        self.count += 1
        return {JSON_TAG: tagged[0], "v": tagged[1]}


def _untag(obj: dict[str, Any], inner: Callable[[Any], Any]) -> Any:
    if len(obj) != 2 or "v" not in obj:
        raise ValueError(f"a dict with the reserved key {JSON_TAG!r} is not a tagged value: keys {sorted(obj)}")
    kind, raw = obj[JSON_TAG], obj["v"]
    if kind == "dict":
        if not isinstance(raw, list) or not all(
            isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in raw
        ):
            raise ValueError("an escaped dict must hold [key, value] pairs")
        return {key: inner(item) for key, item in raw}
    if not isinstance(kind, str):
        raise ValueError(f"tagged value kind {kind!r} is not a string")
    return from_text(kind, raw)


def json_object_hook(obj: dict[str, Any]) -> Any:
    """``object_hook`` for ``json.JSONDecoder``: turns tagged objects back into values (inner ones are already)."""
    if JSON_TAG in obj:
        return _untag(obj, _same)
    return obj


def _same(value: Any) -> Any:
    return value


def from_json(value: Any) -> Any:
    """The values of a decoded JSON tree (for decoders without ``object_hook``, such as orjson)."""
    if type(value) is dict:
        if JSON_TAG in value:
            return _untag(value, from_json)
        return {key: from_json(item) for key, item in value.items()}
    if type(value) is list:
        return [from_json(item) for item in value]
    return value


def may_hold_tags(text: str | bytes) -> bool:
    """Whether encoded JSON contains the tag key anywhere (``False``: plain JSON, read without looking for tags;
    ``True``: the key is in a tag, an escaped dict, or merely inside a string, and the exact path decides)."""
    return (_TAG_BYTES if isinstance(text, bytes | bytearray) else _TAG_TEXT) in text


# -- finding what cannot be carried ---------------------------------------------------------------------------
def _path(parent: str, key: object) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else str(key)


def find_problem(value: Any, what: str, *, naive_only: bool = False) -> str | None:
    """A one-line description of the first value in ``value`` that no serializer carries, naming its path
    (``"payload field 'when' is a naive datetime; pass an aware one (…)"``), or ``None``.

    ``what`` names the root: ``"payload"`` describes the keys of a mapping as fields; ``"result of x"`` describes
    ``value`` itself. Found: naive datetimes, types outside the supported ones, non-string dict keys (with
    ``naive_only``, naive datetimes only).
    """
    found = _walk(value, "", 0, not naive_only)
    if found is None:
        return None
    path, problem = found
    return f"{what} field {path!r} {problem}" if path else f"{what} {problem}"


def _walk(value: Any, path: str, depth: int, strict: bool) -> tuple[str, str] | None:  # noqa: PLR0911
    if depth > _MAX_DEPTH:
        return f"{path[:40]}…", f"is nested more than {_MAX_DEPTH} levels deep (or refers to itself)"
    if type(value) in _SCALARS or isinstance(value, str | int | float):
        return None
    if isinstance(value, datetime):
        return None if value.utcoffset() is not None else (path, f"is a naive datetime; {NAIVE_HINT}")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if strict and not isinstance(key, str):
                return path, f"has a key {key!r} that is not a string"
            found = _walk(item, _path(path, key), depth + 1, strict)
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            found = _walk(item, _path(path, index), depth + 1, strict)
            if found is not None:
                return found
        return None
    if not strict or to_text(value) is not None:
        return None
    return path, (f"is a {type(value).__module__}.{type(value).__qualname__}, which Bananas cannot carry (see "
                  "'Values you can pass' in docs/HANDLERS.md)")


def explain(error: SerializationError, value: Any, what: str, job_id: str | None = None) -> SerializationError:
    """``error`` of an encoder, restated with the path of the value that caused it when one can be found."""
    problem = find_problem(value, what)
    if problem is None:
        return error
    return SerializationError(problem, job_id=job_id)


def unstorable_reason(error: SerializationError, value: Any) -> str:
    """Why a handler's return value cannot be stored: the path and kind of the value at fault when one is found
    (``"field 'when' is a naive datetime; …"``), else the encoder's own reason."""
    found = _walk(value, "", 0, True)
    if found is None:
        return error.reason
    path, problem = found
    return f"field {path!r} {problem}" if path else f"the value {problem}"

