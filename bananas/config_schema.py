"""Setting declarations: :class:`KeySpec`, the :func:`setting` builder, value parsing and redaction.

The kernel declares its own keys in :mod:`bananas.config_kernel`; plugins declare theirs through the
``bananas_register_settings`` hook (see :mod:`bananas.hookspecs`) with the same :func:`setting` builder, and
:mod:`bananas.config` validates every source against all of them together.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping
from typing import Any, NoReturn

import attrs

from bananas.errors import ConfigError
from bananas.job import Priority
from bananas.units import format_duration, parse_bool, parse_duration

__all__ = ["REDACTED", "TYPES", "KeySpec", "parse_value", "redact_url", "setting"]

REDACTED = "***"

TYPES = ("str", "url", "enum", "bool", "int", "float", "duration", "list", "priorities", "tables")
"""Setting types. ``tables`` is a TOML array of tables (``[[periodic]]``) or a JSON array of objects in env vars."""


@attrs.frozen
class KeySpec:
    """One setting: dotted ``key``, ``type`` (see :data:`TYPES`), ``default``, accepted environment variable names
    (highest precedence first), range or choices, help text, and whether it is secret."""

    key: str
    type: str = attrs.field(validator=attrs.validators.in_(TYPES))
    default: Any
    help: str
    env: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    min_exclusive: bool = False
    choices: tuple[str, ...] = ()
    secret: bool = False

    @property
    def section(self) -> str:
        """The table the key lives in (``worker`` for ``worker.concurrency``; ``""`` at the top level)."""
        return self.key.rpartition(".")[0]

    def allowed(self) -> str:
        """What a valid value looks like, e.g. ``an integer from 1 to 1000`` (used in errors and docs)."""
        fmt = _fmt_duration if self.type == "duration" else _fmt_number
        text = _TYPE_TEXT[self.type]
        if self.choices and self.type == "url":
            text += " or " + ", ".join(repr(choice) for choice in self.choices)
        elif self.choices:
            text += ": " + ", ".join(self.choices)
        if self.minimum is not None and self.maximum is not None:
            text += f" from {fmt(self.minimum)} to {fmt(self.maximum)}"
        elif self.minimum is not None:
            text += f" greater than {fmt(self.minimum)}" if self.min_exclusive else f" of at least {fmt(self.minimum)}"
        elif self.maximum is not None:
            text += f" of at most {fmt(self.maximum)}"
        return text


_TYPE_TEXT = {
    "str": "a non-empty string",
    "url": "a URL with a scheme, such as redis://localhost:6379 or memory://",
    "enum": "one of",
    "bool": "a boolean (true/false, 1/0, yes/no, on/off)",
    "int": "an integer",
    "float": "a number",
    "duration": "a duration",
    "list": "a list of strings (a TOML array or a comma-separated string)",
    "priorities": "a non-empty list (TOML array or comma-separated) of",
    "tables": "a list of tables, each with a string name (TOML [[...]] tables or a JSON array of objects)",
}


def _fmt_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _fmt_duration(seconds: float) -> str:
    return "0s" if seconds == 0 else format_duration(seconds)


def setting(key: str, type_: str, default: Any, help_: str, env: str | None = None, **kwargs: Any) -> KeySpec:
    """Declare a setting. ``env="WORKER_MODE"`` accepts ``BANANAS_WORKER_MODE`` (wins) and ``WORKER_MODE``;
    ``env="BANANAS_X"`` accepts only that name; no ``env`` gives the automatic ``BANANAS_<KEY>`` name.
    ``kwargs``: ``minimum``, ``maximum``, ``min_exclusive``, ``choices``, ``secret``."""
    if env is None:
        names: tuple[str, ...] = ("BANANAS_" + key.upper().replace(".", "_"),)
    elif env.startswith("BANANAS_"):
        names = (env,)
    else:
        names = (f"BANANAS_{env}", env)
    return KeySpec(key=key, type=type_, default=default, help=help_, env=names, **kwargs)


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_URL_PASSWORD = (
    # password=, pass=, pwd=, token=, secret=, auth=, api_key=… query parameters (any case, any prefix such as
    # sentinel_password=): the value up to the next "&" or whitespace. First, so that an "@" in such a value is gone
    # before the userinfo rule looks for the last "@".
    re.compile(r"(?P<head>[?&;][^=&\s?;]*(?:pass|pwd|token|secret|auth|api_?key)[^=&\s?;]*=)[^&\s]*", re.IGNORECASE),
    # userinfo: the user name (kept) up to the first ":", the password up to the LAST "@" of the URL (greedy, so an
    # unencoded "@", "/", "?" or ":" in a password never leaks its tail); a URL ends at whitespace.
    re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:\s/]*:)\S*(?P<tail>@)"),
)


def redact_url(text: str) -> str:
    """Replace passwords in URLs anywhere in ``text`` (any scheme, several URLs, comma-separated hosts):
    ``redis://user:pw@host`` → ``redis://user:***@host`` (the user name stays), ``redis://:p@ss@host`` →
    ``redis://:***@host``, ``unix:///s.sock?password=pw`` → ``unix:///s.sock?password=***``."""
    for pattern in _URL_PASSWORD:
        text = pattern.sub(lambda m: f"{m.group('head')}{REDACTED}{m.groupdict().get('tail') or ''}", text)
    return text


def _fail(spec: KeySpec, value: object, source: str, hint: str = "") -> NoReturn:
    shown = REDACTED if spec.secret else redact_url(value) if isinstance(value, str) else value
    raise ConfigError(spec.key, shown, source, f"must be {spec.allowed()}{hint}")


def _to_list(value: object) -> tuple[str, ...] | None:
    if isinstance(value, str):
        items: list[object] = value.split(",")
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        return None
    if not all(isinstance(item, str) for item in items):
        return None
    return tuple(text for item in items if (text := str(item).strip()))


def _in_range(spec: KeySpec, number: float) -> bool:
    if spec.minimum is not None and (number <= spec.minimum if spec.min_exclusive else number < spec.minimum):
        return False
    return spec.maximum is None or number <= spec.maximum


def _tables(spec: KeySpec, raw: object, source: str) -> tuple[dict[str, Any], ...]:
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError:
            _fail(spec, raw, source)
    if not isinstance(value, list | tuple):
        _fail(spec, raw, source)
    for index, item in enumerate(value):
        if not isinstance(item, Mapping):
            _fail(spec, raw, source, f" (item {index} is not a table)")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            _fail(spec, raw, source, f" (item {index} has no string name)")
    return tuple(dict(item) for item in value)


def parse_value(spec: KeySpec, raw: object, source: str) -> Any:
    """Convert ``raw`` (a TOML value, an env string or an override) to the type of ``spec``; raise ConfigError."""
    kind = spec.type
    if kind in ("str", "url", "enum"):
        text = raw.strip() if isinstance(raw, str) else ""
        if kind == "enum" or (kind == "url" and text.lower() in spec.choices):
            text = text.lower()  # enum values and a URL setting's words (result_backend = "None") ignore case
        if kind == "url" and text in spec.choices:
            return text
        if not text or (kind == "url" and not _URL.match(text)) or (kind != "url" and spec.choices
                                                                     and text not in spec.choices):
            close = difflib.get_close_matches(text, spec.choices, n=1) if kind == "enum" and text else []
            _fail(spec, raw, source, f"; did you mean {close[0]!r}?" if close else "")
        return "warning" if kind == "enum" and text == "warn" else text
    if kind == "bool":
        try:
            return parse_bool(raw)  # type: ignore[arg-type]
        except ValueError:
            _fail(spec, raw, source)
    if kind in ("int", "float"):
        number: int | float | None = None
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            number = raw
        elif isinstance(raw, str):
            try:
                number = int(raw.strip()) if kind == "int" else float(raw.strip())
            except ValueError:
                number = None
        if (kind == "int" and isinstance(number, float)) or (number is not None and not math.isfinite(number)):
            number = None
        if number is None or not _in_range(spec, number):
            _fail(spec, raw if number is None else number, source)
        return float(number) if kind == "float" else number
    if kind == "duration":
        try:
            seconds = parse_duration(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            _fail(spec, raw, source, " (such as 100ms, 1s, 5m, 2h or a number of seconds)")
        if not _in_range(spec, seconds):
            _fail(spec, raw, source)
        return seconds
    if kind == "tables":
        return _tables(spec, raw, source)
    items = _to_list(raw)
    if items is None:
        _fail(spec, raw, source)
    if kind == "priorities":
        try:
            items = tuple(Priority.parse(item) for item in items)
        except ValueError:
            _fail(spec, raw, source)
        if not items:
            _fail(spec, raw, source)
    return items
