"""Settings: one typed, validated view of defaults, the config file, the environment and CLI flags.

Loading runs in two phases:

1. :func:`read_sources` finds and reads the config file and captures the environment and the overrides (CLI flags)
   without interpreting them (sources, later wins: defaults < config file < environment variables < overrides);
2. :meth:`RawSources.validate` checks every value against one :class:`Schema`: the kernel's keys
   (:data:`bananas.config_kernel.KERNEL_KEYS`) plus the keys the loaded plugins declare with the
   ``bananas_register_settings`` hook. Unknown keys fail with a "did you mean", or name the package that would own
   them (:data:`bananas.config_kernel.KNOWN_OWNERS`).

:func:`load_settings` runs both, loading the plugins in between. :func:`bananas.config_options.build_options` is the
one builder that turns a table of settings into a plugin's options (broker, result backend, router, log sink …).
``docs/CONFIGURATION.md`` documents the kernel keys; each plugin documents its own.
"""

from __future__ import annotations

import copy
import datetime
import difflib
import os
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn, Protocol

import attrs

from bananas.config_env import unknown_env
from bananas.config_files import find_file, read_file
from bananas.config_kernel import (
    FREE_TABLES,
    KERNEL,
    KERNEL_KEYS,
    KNOWN_OWNERS,
    TIER_ENABLED,
    KnownOwner,
    known_owner,
)
from bananas.config_schema import REDACTED, KeySpec, parse_value, redact_url, setting
from bananas.errors import ConfigError, PluginError
from bananas.job import Priority


class Plugins(Protocol):
    """What settings need of :class:`bananas._manager.Plugins` (the manager depends on settings, not the reverse)."""

    def declared_settings(self) -> list[tuple[KeySpec, tuple[str, ...]]]: ...

__all__ = [
    "FREE_TABLES",
    "KERNEL_KEYS",
    "REDACTED",
    "SETTINGS_KEYS",
    "KeySpec",
    "RawSources",
    "Schema",
    "Settings",
    "load_settings",
    "read_sources",
    "redact_url",
    "set_plugin_loader",
    "setting",
]

SETTINGS_KEYS: list[KeySpec] = list(KERNEL_KEYS)
"""The kernel's schema, in documentation order (kept under its old name). Plugin keys are in :class:`Schema`."""

_SECRET_WORDS = ("password", "secret", "token", "api_key", "apikey")

_parse = parse_value  # the old private name


class Schema:
    """Every declared key (the kernel's, then each plugin's) and who owns it."""

    def __init__(self, declared: Iterable[tuple[KeySpec, tuple[str, ...]]] = ()) -> None:
        self.specs: dict[str, KeySpec] = {spec.key: spec for spec in KERNEL_KEYS}
        self.owners: dict[str, tuple[str, ...]] = dict.fromkeys(self.specs, (KERNEL,))
        for spec, owners in declared:
            existing = self.specs.get(spec.key)
            if existing is not None and existing != spec:
                raise PluginError(
                    f"setting {spec.key!r} of {', '.join(owners)} conflicts with its declaration by "
                    f"{', '.join(self.owners[spec.key])}"
                )
            if spec.key.split(".")[0] in FREE_TABLES:
                raise PluginError(f"setting {spec.key!r} of {', '.join(owners)}: [{spec.key.split('.')[0]}] is a "
                                  "free table")
            self.specs[spec.key] = spec
            self.owners[spec.key] = tuple(dict.fromkeys((*self.owners.get(spec.key, ()), *owners)))
        self.sections = {spec.section for spec in self.specs.values()} - {""}
        for spec in self.specs.values():  # parents of nested sections ([logging.file] → logging)
            parts = spec.key.split(".")
            self.sections.update(".".join(parts[:i]) for i in range(1, len(parts) - 1))
        self.dists = {dist for owners in self.owners.values() for dist in owners}

    @classmethod
    def of(cls, plugins: Plugins | None) -> Schema:
        return cls(plugins.declared_settings() if plugins is not None else ())

    def owner(self, key: str) -> str:
        owners = self.owners.get(key)
        return ", ".join(owners) if owners else "pass-through"

    def tiers(self) -> list[str]:
        """Log tiers some plugin declares keys for (``logging.<tier>.<name>``), in declaration order."""
        return list(dict.fromkeys(key.split(".")[1] for key in self.specs if key.startswith("logging.")
                                  and key.count(".") == 2))

    def is_secret(self, key: str) -> bool:
        spec = self.specs.get(key)
        if spec is not None:
            return spec.secret
        if key.startswith("routes."):
            return False
        name = key.rpartition(".")[2].lower()
        return any(word in name for word in _SECRET_WORDS)

    def is_table_key(self, key: str) -> bool:
        """A section, a free table or a ``logging.<tier>`` table (not a leaf key)."""
        if key in self.specs:
            return False
        return key in self.sections or key in FREE_TABLES or (key.startswith("logging.") and key.count(".") == 1)

    def split(self, key: str) -> tuple[str, ...]:
        """Dotted key → path; names in free tables and extra tier keys may themselves contain dots."""
        head, _, rest = key.partition(".")
        if head in FREE_TABLES and rest:
            return (head, rest)
        if head == "logging" and key not in self.specs and rest.count(".") >= 1:
            tier, _, name = rest.partition(".")
            return ("logging", tier, name)
        return tuple(key.split("."))

    def children(self, table: str) -> list[str]:
        """Names allowed directly inside ``table`` ("" is the top level)."""
        prefix = f"{table}." if table else ""
        names = {key[len(prefix):].split(".")[0] for key in self.specs if key.startswith(prefix)}
        if not table:
            names.update(FREE_TABLES)
        if table == "logging":
            names.add("<tier>")
        return sorted(names)

    def _missing_owner(self, key: str) -> str | None:
        """The install hint when ``key`` belongs to a known package that is not loaded."""
        owner = known_owner(key)
        if owner is None or self._present(owner):
            return None
        return owner.hint()

    def _present(self, owner: KnownOwner) -> bool:
        """Whether the package (or any plugin standing in for it) declares keys under the owner's prefix."""
        return bool(self.dists.intersection(owner.dists)) or any(key.startswith(owner.prefix) for key in self.specs)

    def unknown(self, key: str, value: object, source: str) -> NoReturn:
        shown = REDACTED if self.is_secret(key) else value
        hint = self._missing_owner(key)
        if hint is not None:
            raise ConfigError(key, shown, source, f"unknown key; {hint}")
        parts = key.split(".")
        depth = next(i for i in range(len(parts) - 1, -1, -1) if i == 0 or ".".join(parts[:i]) in self.sections)
        table, name = ".".join(parts[:depth]), parts[depth]
        allowed = self.children(table)
        close = difflib.get_close_matches(name, allowed, n=1)
        where = f"in [{table}]" if table else "at the top level"
        suggestion = f"did you mean {'.'.join([*parts[:depth], close[0]])!r}? " if close else ""
        raise ConfigError(key, shown, source, f"unknown key; {suggestion}allowed keys {where}: {', '.join(allowed)}")

    def flatten(self, data: Mapping[str, Any], source: str, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """Nested tables → ``(dotted key, value)``; free tables and extra tier keys stay one level deep."""
        for name, value in data.items():
            key = f"{prefix}{name}"
            if self.is_table_key(key) and (key in self.sections or key in FREE_TABLES or isinstance(value, Mapping)):
                if not isinstance(value, Mapping):
                    raise ConfigError(key, value, source, f"must be a table ([{key}])")
                yield from self.flatten(value, source, key + ".")
            else:
                yield key, value

    def accept(self, key: str, value: Any, source: str) -> Any:
        """Validate one entry; return the typed value (free-table and extra tier values stay untouched)."""
        spec = self.specs.get(key)
        if spec is not None:
            return parse_value(spec, value, source)
        head, _, rest = key.partition(".")
        if head in FREE_TABLES and rest:
            if head == "routes" and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(key, value, source, "must be a queue name (a non-empty string)")
            return value.strip() if head == "routes" else value
        tier, _, name = rest.partition(".")
        if head == "logging" and tier and name and f"logging.{tier}" not in self.specs:
            if self._missing_owner(key) is not None:  # a known tier whose plugin is not installed
                self.unknown(key, value, source)
            if name == "enabled" and key not in self.specs:  # the one key every tier shares
                return parse_value(attrs.evolve(TIER_ENABLED, key=key), value, source)
            return value  # extra keys of [logging.<tier>] belong to the sink plugin
        self.unknown(key, value, source)

    def orphan_env(self, env: Mapping[str, str]) -> Iterator[tuple[str, str]]:
        """``(key, env name)`` of set variables that a known but absent plugin would read (``LOG_FILE_ENABLED``)."""
        claimed = {name for spec in self.specs.values() for name in spec.env}
        for owner in KNOWN_OWNERS:
            if self._present(owner):
                continue
            for name in sorted(env):
                if name in claimed or not env.get(name, "").strip():
                    continue
                for prefix in owner.env:
                    if name.startswith(prefix):
                        yield owner.prefix + name[len(prefix):].lower(), name
                        break


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


@attrs.frozen
class Settings:
    """Effective settings: typed values by dotted key, each with the source it came from and its owner."""

    _values: Mapping[str, Any] = attrs.field(converter=types.MappingProxyType)
    _sources: Mapping[str, str] = attrs.field(converter=types.MappingProxyType)
    config_file: str | None = None
    schema: Schema = attrs.field(factory=Schema, eq=False, repr=False)
    warnings: tuple[str, ...] = ()
    """Environment variables that look like settings but match none (see :mod:`bananas.config_env`)."""

    def __getitem__(self, key: str) -> Any:
        if key in self._values:
            return copy.deepcopy(self._values[key])
        if self.schema.is_table_key(key):
            return self.table(key)
        raise KeyError(f"unknown setting {key!r}")

    def __contains__(self, key: object) -> bool:
        return key in self._values

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

    def owner(self, key: str) -> str:
        """Who declares ``key``: ``bananas`` (the kernel), a plugin's distribution, or ``pass-through``."""
        if key not in self._values:
            raise KeyError(f"unknown setting {key!r}")
        return self.schema.owner(key)

    def table(self, prefix: str) -> dict[str, Any]:
        """The typed sub-tree under ``prefix`` (``logging.file``, ``routes``, ``broker_options`` …), copied."""
        if prefix and not self.schema.is_table_key(prefix):
            raise KeyError(f"unknown table {prefix!r}")
        node: Any = self._tree(redact=False, jsonable=False)
        for part in self.schema.split(prefix) if prefix else ():
            node = node.get(part, {})
        return node if isinstance(node, dict) else {}

    def logging_tiers(self) -> list[str]:
        """Names of the ``[logging.<tier>]`` tables: those plugins declare, then any other that was configured."""
        declared = self.schema.tiers()
        extra = {
            self.schema.split(key)[1]
            for key in self._values
            if key.startswith("logging.") and len(self.schema.split(key)) == 3
        }
        return [*declared, *sorted(extra - set(declared))]

    def as_dict(self, redact: bool = True) -> dict[str, Any]:
        """Every effective value as a nested JSON-compatible dict (durations in seconds)."""
        return self._tree(redact=redact, jsonable=True)

    def explain(self, redact: bool = True, owners: bool = False) -> list[dict[str, Any]]:
        """Rows ``{"key", "value", "source"}`` sorted by key; with ``owners=True`` also ``"owner"``, the environment
        variables that set the key (``"env"``, highest precedence first) and its one-line ``"help"``."""
        rows = []
        for key in sorted(self._values):
            row = {
                "key": key,
                "value": _jsonable(self._redact(key, self._values[key]) if redact else self._values[key]),
                "source": self._sources[key],
            }
            if owners:
                row["owner"] = self.schema.owner(key)
                spec = self.schema.specs.get(key)
                row["env"] = list(spec.env) if spec is not None else []
                row["help"] = spec.help if spec is not None else ""
            rows.append(row)
        return rows

    def _redact(self, key: str, value: Any) -> Any:
        if self.schema.is_secret(key) and value is not None:
            return REDACTED
        if isinstance(value, str):
            return redact_url(value)
        if isinstance(value, list | tuple):
            return type(value)(self._redact(key, item) for item in value)
        if isinstance(value, Mapping):
            return {name: self._redact(f"{key}.{name}", item) for name, item in value.items()}
        return value

    def _tree(self, *, redact: bool, jsonable: bool) -> dict[str, Any]:
        root: dict[str, Any] = {name: {} for name in FREE_TABLES}
        for key, value in self._values.items():
            if redact:
                value = self._redact(key, value)
            value = _jsonable(value) if jsonable else copy.deepcopy(value)
            *parents, name = self.schema.split(key)
            node = root
            for part in parents:
                node = node.setdefault(part, {})
            node[name] = value
        return root


@attrs.frozen
class RawSources:
    """Phase one: the sources as read, not yet interpreted (no schema is needed to read them)."""

    config_file: str | None
    data: Mapping[str, Any] | None
    env: Mapping[str, str]
    overrides: Mapping[str, object]
    labels: Mapping[str, str]

    def validate(self, schema: Schema) -> Settings:
        """Phase two: merge defaults < file < env < overrides and check every value against ``schema``."""
        values: dict[str, Any] = {spec.key: spec.default for spec in schema.specs.values()}
        sources: dict[str, str] = dict.fromkeys(values, "default")

        def put(entries: Iterable[tuple[str, Any]], source: str) -> None:
            for key, raw in entries:
                values[key] = schema.accept(key, raw, source)
                sources[key] = source

        if self.config_file is not None and self.data is not None:
            source = f"file {self.config_file}"
            put(schema.flatten(self.data, source), source)

        for key, name in schema.orphan_env(self.env):
            schema.unknown(key, self.env[name], f"env {name}")
        for spec in schema.specs.values():  # empty variables count as unset, like the Go original (os.Getenv == "")
            name = next((name for name in spec.env if self.env.get(name, "").strip()), None)
            if name is not None:
                put([(spec.key, self.env[name])], f"env {name}")

        for key, raw in self.overrides.items():
            if raw is None:
                continue
            label = self.labels.get(key, "argument")
            if schema.is_table_key(key):
                if not isinstance(raw, Mapping):
                    raise ConfigError(key, raw, label, f"must be a table (a mapping of {key}.<name> to values)")
                put(schema.flatten(raw, label, key + "."), label)
            else:
                put([(key, raw)], label)

        if values["broker"] is None or _rank(sources["redis_url"]) > _rank(sources["broker"]):  # see _rank
            values["broker"], sources["broker"] = values["redis_url"], sources["redis_url"]
        claimed = {name for spec in schema.specs.values() for name in spec.env}
        return Settings(values=values, sources=sources, config_file=self.config_file, schema=schema,
                        warnings=tuple(unknown_env(self.env, claimed)))


def _rank(source: str) -> int:
    """How strong a source is, for the one rule between ``broker`` and ``redis_url`` (``REDIS_URL``): the broker is
    whichever of the two was set by the stronger source — flag or argument > environment > file > default — and
    ``broker`` when both come from the same kind of source (``BANANAS_BROKER`` beats ``REDIS_URL``)."""
    for rank, prefix in enumerate(("default", "file ", "env ")):
        if source.startswith(prefix):
            return rank
    return 3


def read_sources(
    *,
    config_path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, object] | None = None,
    override_sources: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> RawSources:
    """Phase one of :func:`load_settings`: find and parse the config file; capture env and overrides."""
    env = os.environ if env is None else env
    base = Path.cwd() if cwd is None else Path(cwd)
    found = find_file(config_path, env, base)
    data = read_file(found) if found is not None else None
    return RawSources(
        config_file=found.shown if found is not None and data is not None else None,
        data=data,
        env=dict(env),
        overrides=dict(overrides or {}),
        labels=dict(override_sources or {}),
    )


def load_settings(
    *,
    config_path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, object] | None = None,
    override_sources: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    plugins: Plugins | None = None,
) -> Settings:
    """Read every source, load the plugins (unless ``plugins`` is given), and validate everything together.

    ``overrides`` maps dotted keys (``"worker.concurrency"``) or whole tables (``"routes": {...}``) to values;
    ``None`` values are skipped (a flag that was not given). ``override_sources`` labels them (``flag --concurrency``;
    default ``argument``). ``plugins`` (from :func:`bananas._manager.load_plugins`) supplies the plugin-declared keys;
    by default the built-ins and the installed entry points are loaded with ``env`` (see :func:`set_plugin_loader`).
    Raises :class:`ConfigError` for a bad value or unknown key, :class:`UsageError` for a missing or unparsable file.
    """
    raw = read_sources(config_path=config_path, overrides=overrides, override_sources=override_sources, env=env,
                       cwd=cwd)
    if plugins is None and _PLUGIN_LOADER:
        plugins = _PLUGIN_LOADER[0](env=raw.env)
    return raw.validate(Schema.of(plugins))


_PLUGIN_LOADER: list[Callable[..., Plugins]] = []


def set_plugin_loader(loader: Callable[..., Plugins]) -> None:
    """Install the function :func:`load_settings` uses to load plugins when none are given.

    :mod:`bananas._manager` installs its ``load_plugins`` when imported (this module does not import it: the plugin
    manager depends on the settings, not the other way round). Without a loader only the kernel's keys are known.
    """
    _PLUGIN_LOADER[:] = [loader]
