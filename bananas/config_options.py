"""Plugin options from settings: the one options builder every plugin kind goes through, and the check that each
plugin named by the settings is installed (see :mod:`bananas.config` for loading the settings themselves)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import attrs

from bananas.config import Settings
from bananas.errors import ConfigError
from bananas.units import parse_duration

__all__ = ["build_options", "check_plugin_names", "plugin_options"]


def build_options(target: Any, table: Mapping[str, Any], key: str, source: str) -> Any:
    """The one options builder: a config table → the options a plugin declared.

    ``target`` is an attrs class (its fields are the allowed keys; string durations become float seconds for float
    fields; errors name ``key.field``) or ``None`` (the table is passed through as a plain dict).
    """
    if target is None:
        return copy.deepcopy(dict(table))
    fields = {f.name: f for f in attrs.fields(target)}
    kwargs: dict[str, Any] = {}
    for name, value in table.items():
        field = fields.get(name)
        if field is None or name == "clock":
            allowed = ", ".join(n for n in fields if n != "clock")
            raise ConfigError(f"{key}.{name}", value, source, f"unknown option; allowed: {allowed}")
        if isinstance(value, str) and field.type in (float, "float"):
            try:
                value = parse_duration(value)
            except ValueError as exc:
                raise ConfigError(f"{key}.{name}", value, source, str(exc)) from None
        kwargs[name] = value
    try:
        return target(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(key, dict(table), source, str(exc)) from None


def plugin_options(settings: Settings, kind: str, spec: object) -> Any:
    """The options of one plugin, built from its table with :func:`build_options` for every kind.

    ``kind``: ``broker`` (``[broker_options]``), ``result backend`` (``[result_backend_options]``), ``router``
    (``[routes]``), ``log sink:<tier>`` (``[logging.<tier>]``), ``serializer`` and ``worker mode`` (their declared
    keys are read from ``settings``; they get an empty table). The target is the spec's ``options`` attrs class when
    it has one, else the table as a dict.
    """
    target = getattr(spec, "options", None)
    target = target if isinstance(target, type) and attrs.has(target) else None
    if kind == "broker":
        return build_options(target, settings.table("broker_options"), "broker_options", settings.source("broker"))
    if kind == "result backend":
        return build_options(target, settings.table("result_backend_options"), "result_backend_options",
                             settings.source("result_backend"))
    if kind == "router":
        return build_options(target, settings.table("routes"), "routes", settings.source("router"))
    if kind.startswith("log sink:"):
        tier = kind.partition(":")[2]
        return build_options(target, settings.table(f"logging.{tier}"), f"logging.{tier}", "config")
    return build_options(target, {}, kind, "config")


def check_plugin_names(settings: Settings, plugins: Any) -> None:
    """Fail with :class:`bananas.errors.UnknownPlugin` (one line, listing what is installed) when the serializer,
    broker scheme, result-backend scheme, router, worker mode or an enabled log tier names no installed plugin."""
    from urllib.parse import urlsplit

    plugins.serializers.get(settings["serializer"])
    plugins.brokers.get(urlsplit(settings["broker"]).scheme)
    if settings["result_backend"]:
        plugins.result_backends.get(urlsplit(settings["result_backend"]).scheme)
    plugins.routers.get(settings["router"])
    plugins.worker_modes.get(settings["worker.mode"])
    for tier in settings.logging_tiers():
        if settings.table(f"logging.{tier}").get("enabled"):
            plugins.log_sinks.get(tier)
