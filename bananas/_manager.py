"""Plugin loading: built-ins, entry points, blocking and tracing, and the registries filled from them."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import entry_points, version
from types import ModuleType
from typing import Any

import attrs
import pluggy
from loguru import logger

from bananas import hookspecs
from bananas.broker import BrokerSpec
from bananas.builtin import BUILTIN_PLUGINS, ESSENTIAL_PLUGINS
from bananas.config import set_plugin_loader
from bananas.config_kernel import KERNEL
from bananas.config_schema import KeySpec
from bananas.errors import PluginError
from bananas.logsink import LogSinkSpec
from bananas.registry import Registry
from bananas.result_backend import ResultBackendSpec
from bananas.router import RouterSpec
from bananas.serializer import SerializerSpec
from bananas.worker_mode import WorkerModeSpec

__all__ = ["ENTRY_POINT_GROUP", "Observers", "PluginManager", "Plugins", "load_plugins"]

ENTRY_POINT_GROUP = "bananas"
HOOK_PREFIX = "bananas_"

OBSERVER_HOOKS = (
    "bananas_job_enqueued",
    "bananas_job_started",
    "bananas_job_succeeded",
    "bananas_job_failed",
    "bananas_job_retried",
    "bananas_job_dead",
    "bananas_worker_started",
    "bananas_worker_stopped",
)


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, reading only ``bananas_``-prefixed attributes (as pytest does with ``pytest_``)."""

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        if not name.startswith(HOOK_PREFIX):
            return None
        return super().parse_hookimpl_opts(plugin, name)


def _kernel_version() -> str:
    try:
        return version(KERNEL)
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        return "0+unknown"


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


@attrs.define(eq=False)
class Observers:
    """Calls lifecycle observers; hooks without implementations cost one dict lookup."""

    pm: PluginManager
    trace: Callable[[str], object] | None = None
    _impls: dict[str, list[pluggy.HookImpl]] = attrs.field(factory=dict)
    _failed: set[tuple[str, str]] = attrs.field(factory=set)

    def __attrs_post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Re-read implementations (call after registering a plugin)."""
        self._impls = {}
        for name in OBSERVER_HOOKS:
            impls = getattr(self.pm.hook, name).get_hookimpls()
            for impl in impls:
                if impl.wrapper or impl.hookwrapper:
                    raise PluginError(f"plugin {impl.plugin_name!r}: {name} cannot be a wrapper (observers are plain)")
            if impls:
                self._impls[name] = impls[::-1]  # pluggy calls LIFO; keep that order

    def has(self, name: str) -> bool:
        return name in self._impls

    def notify(self, name: str, **kwargs: Any) -> None:
        """Call every implementation of ``name``; an exception is logged once per (plugin, hook), never raised."""
        impls = self._impls.get(name)
        if not impls:
            return
        for impl in impls:
            if self.trace is not None:
                self.trace(f"bananas trace: {name} -> {impl.plugin_name}\n")
            try:
                impl.function(*(kwargs[arg] for arg in impl.argnames))
            except Exception:  # noqa: BLE001 - observers must never fail a job
                key = (impl.plugin_name, name)
                if key not in self._failed:
                    self._failed.add(key)
                    logger.opt(exception=True).error(
                        "observer {hook} of plugin {plugin} raised; further errors of it are not logged",
                        hook=name,
                        plugin=impl.plugin_name,
                    )


@attrs.define(eq=False)
class Plugins:
    """One app's plugin manager, its registries and who owns each plugin.

    Attributes:
        pm: The pluggy manager.
        dists: plugin name → (distribution, version).
    """

    pm: PluginManager
    dists: dict[str, tuple[str, str]] = attrs.field(factory=dict)
    trace: Callable[[str], object] | None = None
    brokers: Registry[BrokerSpec] = attrs.field(factory=lambda: Registry("broker", lambda s: s.schemes))
    serializers: Registry[SerializerSpec] = attrs.field(factory=lambda: Registry("serializer", lambda s: (s.name,)))
    result_backends: Registry[ResultBackendSpec] = attrs.field(
        factory=lambda: Registry("result backend", lambda s: s.schemes)
    )
    log_sinks: Registry[LogSinkSpec] = attrs.field(factory=lambda: Registry("log sink", lambda s: (s.name,)))
    routers: Registry[RouterSpec] = attrs.field(factory=lambda: Registry("router", lambda s: (s.name,)))
    worker_modes: Registry[WorkerModeSpec] = attrs.field(
        factory=lambda: Registry("worker mode", lambda s: (s.name,))
    )
    settings: Registry[KeySpec] = attrs.field(factory=lambda: Registry("setting", lambda s: (s.key,), shared=True))
    observers: Observers = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.observers = Observers(self.pm, self.trace)

    def registries(self) -> dict[str, Registry[Any]]:
        return {
            "brokers": self.brokers,
            "serializers": self.serializers,
            "result_backends": self.result_backends,
            "log_sinks": self.log_sinks,
            "routers": self.routers,
            "worker_modes": self.worker_modes,
            "settings": self.settings,
        }

    def declared_settings(self) -> list[tuple[KeySpec, tuple[str, ...]]]:
        """Every setting the plugins declared, with the distributions that declared it, in registration order."""
        return [(entry.spec, self.settings.owners(key)) for key, entry in self.settings.entries.items()]

    def collect(self) -> None:
        """Run every registration hook, one implementation at a time, so each name has an owner."""
        hooks: dict[str, Registry[Any]] = {
            "bananas_register_brokers": self.brokers,
            "bananas_register_serializers": self.serializers,
            "bananas_register_result_backends": self.result_backends,
            "bananas_register_log_sinks": self.log_sinks,
            "bananas_register_routers": self.routers,
            "bananas_register_worker_modes": self.worker_modes,
            "bananas_register_settings": self.settings,
        }
        for hook_name, registry in hooks.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.wrapper or impl.hookwrapper:
                    raise PluginError(f"plugin {impl.plugin_name!r}: {hook_name} cannot be a wrapper")
                dist, ver = self.dists.get(impl.plugin_name, (impl.plugin_name, ""))
                if self.trace is not None:
                    self.trace(f"bananas trace: {hook_name} -> {impl.plugin_name} ({dist} {ver})\n")
                impl.function(register=registry.bound(impl.plugin_name, dist, ver))
        self.observers.refresh()

    def describe(self) -> list[dict[str, Any]]:
        """One row per plugin: name, distribution, version, hooks, the names it registered and each one's summary."""
        rows = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda item: item[0]):
            if plugin is None:
                continue
            dist, ver = self.dists.get(name, (name, ""))
            hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
            registered = {kind: reg.by_plugin(name) for kind, reg in self.registries().items() if reg.by_plugin(name)}
            summaries = {
                kind: {n: str(getattr(self.registries()[kind].get(n), "summary", "") or "") for n in names}
                for kind, names in registered.items()
            }
            rows.append({"name": name, "distribution": dist, "version": ver, "hooks": hooks, "registered": registered,
                         "summaries": summaries})
        return rows


def _register(pm: PluginManager, plugin: object, name: str) -> None:
    try:
        pm.register(plugin, name=name)
    except ValueError as exc:  # pluggy: already registered / blocked
        raise PluginError(f"plugin {name!r} could not be registered: {exc}") from exc
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {name!r} is invalid: {exc}") from exc


def load_plugins(
    *,
    plugins: Iterable[object] = (),
    entrypoints: bool = True,
    env: Mapping[str, str] | None = None,
) -> Plugins:
    """Build a fresh plugin manager: built-ins, then entry points of group ``bananas``, then ``plugins``.

    Environment: ``BANANAS_DISABLE_PLUGINS=a,b`` blocks plugins (built-ins by module or short name, e.g.
    ``memory_broker``); ``BANANAS_LOAD_PLUGINS=dist1,dist2`` loads only those distributions' entry points (``''``
    loads none); ``BANANAS_TRACE_PLUGINS=1`` traces every hook call to stderr.
    """
    env = os.environ if env is None else env
    pm = PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    loaded = Plugins(pm)
    kernel_version = _kernel_version()

    blocked = set(_split(env.get("BANANAS_DISABLE_PLUGINS")))
    for name in blocked:
        full = name if name.startswith("bananas.builtin.") else f"bananas.builtin.{name}"
        if full in ESSENTIAL_PLUGINS:
            raise PluginError(f"plugin {name} cannot be disabled (it is essential)")
        pm.set_blocked(full if full in BUILTIN_PLUGINS else name)

    for module_name in BUILTIN_PLUGINS:
        if pm.is_blocked(module_name):
            continue
        _register(pm, importlib.import_module(module_name), module_name)
        loaded.dists[module_name] = (KERNEL, kernel_version)

    if entrypoints:
        only = env.get("BANANAS_LOAD_PLUGINS")
        wanted = None if only is None else set(_split(only))
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist
            dist_name = dist.metadata["Name"] if dist is not None else "?"
            if wanted is not None and dist_name not in wanted:
                continue
            if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - re-raised with the plugin's name
                raise PluginError(
                    f'Error importing plugin "{ep.name}" (from {dist_name}): {type(exc).__name__}: {exc}'
                ) from exc
            _register(pm, plugin, ep.name)
            loaded.dists[ep.name] = (dist_name, dist.version if dist is not None else "")

    for plugin in plugins:
        name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{id(plugin):x}"
        _register(pm, plugin, name)
        module: ModuleType | None = sys.modules.get(getattr(plugin, "__module__", "") or "")
        loaded.dists[name] = (getattr(module, "__name__", name) if module else name, "")

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(str(exc)) from exc
    if env.get("BANANAS_TRACE_PLUGINS", "") not in ("", "0"):
        writer: Callable[[str], object] = sys.stderr.write
        pm.trace.root.setwriter(writer)
        pm.enable_tracing()  # hooks called through pm.hook (bananas_add_commands)
        loaded.trace = loaded.observers.trace = writer  # hooks the kernel calls one implementation at a time
    loaded.collect()
    return loaded


set_plugin_loader(load_plugins)  # load_settings() without plugins= loads them like an app does
