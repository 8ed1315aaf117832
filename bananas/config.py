"""Settings: one typed, validated view of defaults, the config file, the environment and CLI flags.

Sources, later wins: defaults < config file < environment variables < explicit overrides (CLI flags). The config
file is ``config_path`` (``--config``) or ``$BANANAS_CONFIG``, else ``bananas.toml`` in the working directory, else
``[tool.bananas]`` of ``pyproject.toml`` there. Every key, its environment variables, type, default and range is
declared once in :data:`SETTINGS_KEYS`; ``docs/CONFIGURATION.md`` documents the same table.
"""

from __future__ import annotations

import copy
import datetime
import difflib
import math
import os
import re
import tomllib
import types
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import attrs

from bananas.errors import ConfigError, UsageError
from bananas.job import Priority
from bananas.units import format_duration, parse_bool, parse_duration

__all__ = ["SETTINGS_KEYS", "KeySpec", "Settings", "load_settings", "redact_url"]

REDACTED = "***"


@attrs.frozen
class KeySpec:
    """One setting: dotted ``key``, ``type`` (str, url, enum, bool, int, float, duration, list, priorities),
    ``default``, accepted environment variable names (highest precedence first), range or choices, help text."""

    key: str
    type: str
    default: Any
    help: str
    env: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    min_exclusive: bool = False
    choices: tuple[str, ...] = ()
    secret: bool = False

    def allowed(self) -> str:
        """What a valid value looks like, e.g. ``an integer from 1 to 1000`` (used in errors and docs)."""
        fmt = _fmt_duration if self.type == "duration" else _fmt_number
        text = _TYPE_TEXT[self.type]
        if self.choices:
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
}


def _fmt_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _fmt_duration(seconds: float) -> str:
    return "0s" if seconds == 0 else format_duration(seconds)


def _k(key: str, type_: str, default: Any, help_: str, env: str | None = None, **kwargs: Any) -> KeySpec:
    """Build a spec. ``env="WORKER_MODE"`` accepts ``BANANAS_WORKER_MODE`` (wins) and ``WORKER_MODE``;
    ``env="BANANAS_X"`` accepts only that name; no ``env`` gives the automatic ``BANANAS_<KEY>`` name."""
    if env is None:
        names: tuple[str, ...] = ("BANANAS_" + key.upper().replace(".", "_"),)
    elif env.startswith("BANANAS_"):
        names = (env,)
    else:
        names = (f"BANANAS_{env}", env)
    return KeySpec(key=key, type=type_, default=default, help=help_, env=names, **kwargs)


_LEVELS = ("debug", "info", "warn", "warning", "error")
_COUNT = {"minimum": 0}
_SLOTS = {"minimum": 1, "maximum": 1000}

SETTINGS_KEYS: list[KeySpec] = [
    _k("broker", "url", None, "Broker URL; its scheme picks the broker plugin (redis://, memory://, ...).",
       "BANANAS_BROKER"),
    _k("redis_url", "url", "redis://localhost:6379", "Redis URL (seed name); the broker default.", "REDIS_URL"),
    _k("serializer", "str", "json", "Serializer name (json built in; plugins add more).", "BANANAS_SERIALIZER"),
    _k("result_backend", "url", None, "Result backend URL; unset disables result storage.", "BANANAS_RESULT_BACKEND"),
    _k("router", "str", "priority", "Routing strategy name; [routes] is its table.", "BANANAS_ROUTER"),
    _k("signing_key", "str", None, "Key that signs job bodies; unset disables signing.", "BANANAS_SIGNING_KEY",
       secret=True),
    _k("signing_keys_old", "list", (), "Old signing keys that still verify (not sign) during a key rotation.",
       "BANANAS_SIGNING_KEYS_OLD", secret=True),
    _k("max_payload_bytes", "int", 1048576, "Largest encoded job body accepted.", "MAX_PAYLOAD_BYTES", minimum=1),
    _k("worker.mode", "str", "default", "Worker mode name (validated against installed mode plugins).", "WORKER_MODE"),
    _k("worker.concurrency", "int", 10, "Concurrent job slots of this worker.", "WORKER_CONCURRENCY", **_SLOTS),
    _k("worker.priorities", "priorities", tuple(Priority), "Priorities to process, in order.",
       "WORKER_PRIORITIES", choices=tuple(p.value for p in Priority)),
    _k("worker.job_types", "list", (), "Job names this worker runs (job-specialized mode); empty: all.",
       "WORKER_JOB_TYPES"),
    _k("worker.queues", "list", (), "Queues to read; empty: the router's default queues.", "WORKER_QUEUES"),
    _k("worker.enable_scheduler", "bool", True, "Run the scheduler loop in this worker.", "ENABLE_SCHEDULER"),
    _k("worker.scheduler_interval", "duration", 1.0, "How often scheduled and retrying jobs are checked.",
       "SCHEDULER_INTERVAL", minimum=0.1, maximum=60.0),
    _k("worker.processes", "int", 1, "Worker processes to start.", "WORKER_PROCESSES", minimum=1, maximum=64),
    _k("worker.shutdown_timeout", "duration", 30.0, "Grace period for running jobs on shutdown.", "SHUTDOWN_TIMEOUT",
       minimum=0),
    _k("worker.broker_wait", "duration", 0.0, "How long a starting worker waits for an unreachable broker, retrying "
       "with backoff (0: no limit).", "WORKER_BROKER_WAIT", minimum=0),
    _k("worker.priority_concurrency", "int", 10, "Slots of the priority pool (thin_plus).",
       "WORKER_PRIORITY_CONCURRENCY", **_SLOTS),
    _k("worker.priority_queues", "list", ("high", "normal", "low"), "Queues of the priority pool (thin_plus).",
       "WORKER_PRIORITY_QUEUES"),
    _k("worker.scheduled_concurrency", "int", 5, "Slots per scheduled pool (modes with a scheduled pool).",
       "WORKER_SCHEDULED_CONCURRENCY", **_SLOTS),
    _k("worker.scheduled_queues", "list", ("scheduled",), "Queues of the scheduled pool (thin_plus).",
       "WORKER_SCHEDULED_QUEUES"),
    _k("worker.high_concurrency", "int", 10, "Slots per high pool (per-priority pool modes).",
       "WORKER_HIGH_CONCURRENCY", **_SLOTS),
    _k("worker.normal_concurrency", "int", 10, "Slots per normal pool (per-priority pool modes).",
       "WORKER_NORMAL_CONCURRENCY", **_SLOTS),
    _k("worker.low_concurrency", "int", 5, "Slots per low pool (per-priority pool modes).",
       "WORKER_LOW_CONCURRENCY", **_SLOTS),
    _k("worker.high_count", "int", 3, "Number of high pools (scaled).", "WORKER_HIGH_COUNT", **_COUNT),
    _k("worker.normal_count", "int", 2, "Number of normal pools (scaled).", "WORKER_NORMAL_COUNT", **_COUNT),
    _k("worker.low_count", "int", 1, "Number of low pools (scaled).", "WORKER_LOW_COUNT", **_COUNT),
    _k("worker.scheduled_count", "int", 1, "Number of scheduled pools (scaled).", "WORKER_SCHEDULED_COUNT", **_COUNT),
    _k("jobs.timeout", "duration", 300.0, "Default maximum run time of a job.", "JOB_TIMEOUT", minimum=0,
       min_exclusive=True),
    _k("jobs.max_retries", "int", 3, "Default retry attempts after a failure.", "MAX_RETRIES", minimum=0, maximum=100),
    _k("jobs.retry_backoff_base", "duration", 1.0, "Delay before the first retry.", minimum=0),
    _k("jobs.retry_backoff_factor", "float", 2.0, "Multiplier of the delay for each further retry.", minimum=1),
    _k("jobs.retry_backoff_max", "duration", 3600.0, "Longest delay between retries.", minimum=0, min_exclusive=True),
    _k("logging.level", "enum", "info", "Console log level (warn means warning).", "LOG_LEVEL", choices=_LEVELS),
    _k("logging.format", "enum", "text", "Console log format.", "LOG_FORMAT", choices=("json", "text")),
    _k("logging.color", "bool", True, "Colored console output (text format).", "LOG_COLOR"),
    _k("logging.file.enabled", "bool", False, "Write logs to a rotating file.", "LOG_FILE_ENABLED"),
    _k("logging.file.path", "str", "/var/log/bananas/bananas.log", "Log file path.", "LOG_FILE_PATH"),
    _k("logging.file.max_size_mb", "int", 100, "Size in MB before rotation.", "LOG_FILE_MAX_SIZE_MB", minimum=1),
    _k("logging.file.max_backups", "int", 10, "Rotated files to keep (0: no limit).", "LOG_FILE_MAX_BACKUPS", **_COUNT),
    _k("logging.file.max_age_days", "int", 30, "Days to keep rotated files (0: no limit).", "LOG_FILE_MAX_AGE_DAYS",
       **_COUNT),
    _k("logging.file.compress", "bool", True, "Gzip rotated files.", "LOG_FILE_COMPRESS"),
    _k("logging.file.level", "enum", "info", "File log level.", "LOG_FILE_LEVEL", choices=_LEVELS),
    _k("logging.elasticsearch.enabled", "bool", False, "Ship logs to Elasticsearch.", "LOG_ES_ENABLED"),
    _k("logging.elasticsearch.addresses", "list", ("http://localhost:9200",), "Elasticsearch node URLs.",
       "LOG_ES_ADDRESSES"),
    _k("logging.elasticsearch.username", "str", None, "Basic-auth user name.", "LOG_ES_USERNAME"),
    _k("logging.elasticsearch.password", "str", None, "Basic-auth password.", "LOG_ES_PASSWORD", secret=True),
    _k("logging.elasticsearch.index_prefix", "str", "bananas-logs", "Index name prefix (daily indices).",
       "LOG_ES_INDEX_PREFIX"),
    _k("logging.elasticsearch.level", "enum", "info", "Elasticsearch log level.", "LOG_ES_LEVEL", choices=_LEVELS),
    _k("logging.elasticsearch.cloud_id", "str", None, "Elastic Cloud id (instead of addresses).", "LOG_ES_CLOUD_ID"),
    _k("logging.elasticsearch.api_key", "str", None, "Elastic Cloud API key.", "LOG_ES_API_KEY", secret=True),
    _k("logging.elasticsearch.flush_bytes", "int", 5242880, "Bulk buffer size in bytes.", "LOG_ES_FLUSH_BYTES",
       minimum=1),
    _k("logging.elasticsearch.flush_interval", "duration", 10.0, "Flush the bulk buffer at least this often.",
       "LOG_ES_FLUSH_INTERVAL", minimum=0, min_exclusive=True),
    _k("logging.elasticsearch.num_workers", "int", 2, "Concurrent bulk indexing workers.", "LOG_ES_NUM_WORKERS",
       minimum=1, maximum=64),
]
"""The schema, in documentation order. Free tables ([routes], [broker_options], [result_backend_options]) and
extra keys of ``[logging.<tier>]`` tables are not listed: they are passed through (see ``FREE_TABLES``)."""

FREE_TABLES = ("routes", "broker_options", "result_backend_options")
_SPECS = {spec.key: spec for spec in SETTINGS_KEYS}
_SECTIONS = {spec.key.rpartition(".")[0] for spec in SETTINGS_KEYS} - {""}
_KNOWN_TIERS = ("file", "elasticsearch")
_TIER_ENABLED = _k("logging.<tier>.enabled", "bool", False, "Enable this log tier (sink plugins).")
_SECRET_WORDS = ("password", "secret", "token", "api_key", "apikey")
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


def _is_secret(key: str) -> bool:
    spec = _SPECS.get(key)
    if spec is not None:
        return spec.secret
    if key.startswith("routes."):
        return False
    name = key.rpartition(".")[2].lower()
    return any(word in name for word in _SECRET_WORDS)


def _redact(key: str, value: Any) -> Any:
    if _is_secret(key) and value is not None:
        return REDACTED
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, list | tuple):
        return type(value)(_redact(key, item) for item in value)
    if isinstance(value, Mapping):
        return {name: _redact(f"{key}.{name}", item) for name, item in value.items()}
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, Priority):
        return value.value
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, Mapping):
        return {str(name): _jsonable(item) for name, item in value.items()}
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return value


def _is_table_key(key: str) -> bool:
    """A section, a free table or a ``logging.<tier>`` table (not a leaf key)."""
    if key in _SPECS:
        return False
    return key in _SECTIONS or key in FREE_TABLES or (key.startswith("logging.") and key.count(".") == 1)


def _split(key: str) -> tuple[str, ...]:
    """Dotted key → path; names in free tables and extra tier keys may themselves contain dots."""
    head, _, rest = key.partition(".")
    if head in FREE_TABLES and rest:
        return (head, rest)
    if head == "logging" and key not in _SPECS and rest.count(".") >= 1:
        tier, _, name = rest.partition(".")
        return ("logging", tier, name)
    return tuple(key.split("."))


@attrs.frozen
class Settings:
    """Effective settings: typed values by dotted key, each with the source it came from."""

    _values: Mapping[str, Any] = attrs.field(converter=types.MappingProxyType)
    _sources: Mapping[str, str] = attrs.field(converter=types.MappingProxyType)
    config_file: str | None = None

    def __getitem__(self, key: str) -> Any:
        if key in self._values:
            return copy.deepcopy(self._values[key])
        if _is_table_key(key):
            return self.table(key)
        raise KeyError(f"unknown setting {key!r}")

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def source(self, key: str) -> str:
        """Where the value of ``key`` came from: ``default``, ``file bananas.toml``, ``env X``, ``flag --x``."""
        try:
            return self._sources[key]
        except KeyError:
            raise KeyError(f"unknown setting {key!r}") from None

    def table(self, prefix: str) -> dict[str, Any]:
        """The typed sub-tree under ``prefix`` (``logging.file``, ``routes``, ``broker_options`` …), copied."""
        if prefix and not _is_table_key(prefix):
            raise KeyError(f"unknown table {prefix!r}")
        node: Any = self._tree(redact=False, jsonable=False)
        for part in _split(prefix) if prefix else ():
            node = node.get(part, {})
        return node if isinstance(node, dict) else {}

    def logging_tiers(self) -> list[str]:
        """Names of the ``[logging.<tier>]`` tables: the known ones, then any other that was configured."""
        extra = {_split(key)[1] for key in self._values if key.startswith("logging.") and len(_split(key)) == 3}
        return [*_KNOWN_TIERS, *sorted(extra - set(_KNOWN_TIERS))]

    def as_dict(self, redact: bool = True) -> dict[str, Any]:
        """Every effective value as a nested JSON-compatible dict (durations in seconds)."""
        return self._tree(redact=redact, jsonable=True)

    def explain(self, redact: bool = True) -> list[dict[str, Any]]:
        """Rows ``{"key", "value", "source"}`` sorted by key, for ``bananas config``."""
        return [
            {
                "key": key,
                "value": _jsonable(_redact(key, self._values[key]) if redact else self._values[key]),
                "source": self._sources[key],
            }
            for key in sorted(self._values)
        ]

    def _tree(self, *, redact: bool, jsonable: bool) -> dict[str, Any]:
        root: dict[str, Any] = {name: {} for name in FREE_TABLES}
        for key, value in self._values.items():
            if redact:
                value = _redact(key, value)
            value = _jsonable(value) if jsonable else copy.deepcopy(value)
            *parents, name = _split(key)
            node = root
            for part in parents:
                node = node.setdefault(part, {})
            node[name] = value
        return root


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


def _parse(spec: KeySpec, raw: object, source: str) -> Any:
    """Convert ``raw`` (a TOML value, an env string or an override) to the type of ``spec``; raise ConfigError."""
    kind = spec.type
    if kind in ("str", "url", "enum"):
        text = raw.strip() if isinstance(raw, str) else ""
        if kind == "enum":
            text = text.lower()
        if not text or (kind == "url" and not _URL.match(text)) or (spec.choices and text not in spec.choices):
            _fail(spec, raw, source)
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


def _children(table: str) -> list[str]:
    """Names allowed directly inside ``table`` ("" is the top level)."""
    prefix = f"{table}." if table else ""
    names = {key[len(prefix):].split(".")[0] for key in _SPECS if key.startswith(prefix)}
    if not table:
        names.update(FREE_TABLES)
    if table == "logging":
        names.add("<tier>")
    return sorted(names)


def _unknown(key: str, value: object, source: str) -> NoReturn:
    parts = key.split(".")
    depth = next(i for i in range(len(parts) - 1, -1, -1) if i == 0 or ".".join(parts[:i]) in _SECTIONS)
    table, name = ".".join(parts[:depth]), parts[depth]
    allowed = _children(table)
    close = difflib.get_close_matches(name, allowed, n=1)
    where = f"in [{table}]" if table else "at the top level"
    hint = f"did you mean {'.'.join([*parts[:depth], close[0]])!r}? " if close else ""
    shown = REDACTED if _is_secret(key) else value
    raise ConfigError(key, shown, source, f"unknown key; {hint}allowed keys {where}: {', '.join(allowed)}")


def _flatten(data: Mapping[str, Any], source: str, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested tables → ``(dotted key, value)``; free tables and extra tier keys stay one level deep."""
    for name, value in data.items():
        key = f"{prefix}{name}"
        if _is_table_key(key) and (key in _SECTIONS or key in FREE_TABLES or isinstance(value, Mapping)):
            if not isinstance(value, Mapping):
                raise ConfigError(key, value, source, f"must be a table ([{key}])")
            yield from _flatten(value, source, key + ".")
        else:
            yield key, value


def _accept(key: str, value: Any, source: str) -> Any:
    """Validate one entry; return the typed value (free-table and extra tier values stay untouched)."""
    spec = _SPECS.get(key)
    if spec is not None:
        return _parse(spec, value, source)
    head, _, rest = key.partition(".")
    if head in FREE_TABLES and rest:
        if head == "routes" and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(key, value, source, "must be a queue name (a non-empty string)")
        return value.strip() if head == "routes" else value
    tier, _, name = rest.partition(".")
    if head == "logging" and tier and name and f"logging.{tier}" not in _SPECS:
        if name == "enabled":  # the one key every tier shares (known tiers declare it in the schema)
            return _parse(attrs.evolve(_TIER_ENABLED, key=key), value, source)
        return value  # extra keys of [logging.<tier>] belong to the sink plugin
    _unknown(key, value, source)


def _read_file(path: Path, shown: str, discovered: bool) -> dict[str, Any] | None:
    """The Bananas table of a file; ``None`` for a discovered pyproject.toml without ``[tool.bananas]``."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise UsageError(f"config file {shown} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read config file {shown}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {shown} is not valid TOML: {exc}") from None
    if path.name == "pyproject.toml":
        tool = data.get("tool")
        found = tool.get("bananas") if isinstance(tool, dict) else None
        if found is None and not discovered:
            raise UsageError(f"config file {shown} has no [tool.bananas] table")
        if found is not None and not isinstance(found, dict):
            raise UsageError(f"config file {shown}: tool.bananas must be a table")
        return found
    wrapped = data.get("bananas")
    if isinstance(wrapped, dict):
        if len(data) > 1:
            raise UsageError(f"config file {shown} mixes a [bananas] table with top-level keys; use one or the other")
        return wrapped
    return data


def _find_file(
    config_path: str | os.PathLike[str] | None, env: Mapping[str, str], cwd: Path
) -> tuple[Path, str, bool] | None:
    """``(path, path as shown in sources, discovered?)`` of the config file, or ``None``."""
    given = config_path if config_path is not None else env.get("BANANAS_CONFIG", "").strip() or None
    if given is not None:
        return cwd / Path(given).expanduser(), os.fspath(given), False
    for name in ("bananas.toml", "pyproject.toml"):
        if (cwd / name).is_file():
            return cwd / name, name, True
    return None


def load_settings(
    *,
    config_path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, object] | None = None,
    override_sources: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Settings:
    """Merge defaults < config file < environment < ``overrides`` and validate every value.

    ``overrides`` maps dotted keys (``"worker.concurrency"``) or whole tables (``"routes": {...}``) to values;
    ``None`` values are skipped (a flag that was not given). ``override_sources`` labels them (``flag --concurrency``;
    default ``argument``). Raises :class:`ConfigError` for a bad value or unknown key, :class:`UsageError` for a
    missing or unparsable file.
    """
    env = os.environ if env is None else env
    base = Path.cwd() if cwd is None else Path(cwd)
    values: dict[str, Any] = {spec.key: spec.default for spec in SETTINGS_KEYS}
    sources: dict[str, str] = dict.fromkeys(values, "default")

    def put(entries: Iterable[tuple[str, Any]], source: str) -> None:
        for key, raw in entries:
            values[key] = _accept(key, raw, source)
            sources[key] = source

    config_file = None
    found = _find_file(config_path, env, base)
    data = _read_file(*found) if found is not None else None
    if found is not None and data is not None:
        config_file = found[1]
        put(_flatten(data, f"file {config_file}"), f"file {config_file}")

    for spec in SETTINGS_KEYS:  # empty variables count as unset, like the Go original (os.Getenv == "")
        name = next((name for name in spec.env if env.get(name, "").strip()), None)
        if name is not None:
            put([(spec.key, env[name])], f"env {name}")

    labels = override_sources or {}
    for key, raw in (overrides or {}).items():
        if raw is None:
            continue
        label = labels.get(key, "argument")
        if _is_table_key(key):
            if not isinstance(raw, Mapping):
                raise ConfigError(key, raw, label, f"must be a table (a mapping of {key}.<name> to values)")
            put(_flatten(raw, label, key + "."), label)
        else:
            put([(key, raw)], label)

    if sources["broker"] == "default":  # an explicit broker always wins over redis_url, whatever its source
        values["broker"], sources["broker"] = values["redis_url"], sources["redis_url"]
    return Settings(values=values, sources=sources, config_file=config_file)
