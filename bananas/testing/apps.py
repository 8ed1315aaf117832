"""Apps for tests: a fresh ``memory://`` broker per test, without import-time environment tricks.

An application usually builds its app at import time (``tasks.py``: ``app = Bananas()``), reading ``bananas.toml``
and the environment, so its broker is a real one. Two ways onto memory in a test:

- :func:`use_memory` rebinds *that same object* in place for a while (a context manager; the pytest fixture
  ``bananas_memory_app`` does it for one test): every module that imported ``app`` now talks to a fresh
  ``memory://`` broker and result backend, with the app's handlers, schedules, plugins and every other setting;
  afterwards the app is exactly as before.
- :func:`memory_app` builds a new app like that (a twin), for code that takes the app as an argument, or an empty
  hermetic one (``memory_app()``: no config file, no environment, no entry-point plugins).

The twin is a real ``Bananas(...)``: its settings are the app's effective ones (defaults stay defaults, every other
value keeps the source it came from, so errors still name ``file bananas.toml`` or ``env BANANAS_…``) less the
broker and result backend keys and their option tables, plus the test's overrides; its plugins are the same plugin
objects (no entry point is loaded again, the environment is not read). Its brokers run on a
:class:`FastForwardClock`, so :func:`~bananas.testing.run_until_idle` can skip delays and retry backoff.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any

import attrs

from bananas.builtin import BUILTIN_PLUGINS
from bananas.builtin.memory_broker import MemoryBroker
from bananas.builtin.memory_results import MemoryResultBackend
from bananas.errors import UsageError

if TYPE_CHECKING:
    from bananas.app import Bananas

__all__ = ["FastForwardClock", "Rebinding", "fresh_memory_url", "memory_app", "resolve_app", "use_memory"]

KEPT_ON_REBIND = frozenset({"handlers", "schedules", "extra_plugins"})
"""What a rebound app keeps of its own: what the application registered on it after it was built. Everything else
(settings, broker and result backend, codec, router, plugins, connection caches) comes from its memory twin."""

_DROPPED = ("broker", "redis_url", "result_backend")
_DROPPED_TABLES = ("broker_options.", "result_backend_options.")


class FastForwardClock:
    """The wall clock plus an offset that only grows: ``BrokerOptions(clock=...)`` for tests that skip time.

    Job timestamps (``enqueued_at``, a retry's due time) are wall-clock times, so this clock never runs behind the
    wall clock; :meth:`advance` and :meth:`advance_to` jump it forward, which makes delayed jobs and retries due
    at once for a broker that reads it (the memory broker does).
    """

    def __init__(self) -> None:
        self.offset = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> float:
        """Jump ``seconds`` ahead (negative values are refused: time never runs back); returns the new time."""
        if seconds < 0:
            raise ValueError(f"seconds: a clock cannot go back, got {seconds!r}")
        with self._lock:
            self.offset += seconds
        return self()

    def advance_to(self, when: float) -> float:
        """Jump to Unix time ``when`` if that is ahead (else stay); returns the new time."""
        with self._lock:
            now = time.time() + self.offset
            if when > now:
                self.offset += when - now
        return self()

    def __repr__(self) -> str:
        return f"FastForwardClock(offset={self.offset:g}s)"


def fresh_memory_url(prefix: str = "test") -> str:
    """A ``memory://`` URL no other test uses (drop its state with :func:`reset_memory`)."""
    return f"memory://{prefix}-{uuid.uuid4().hex[:16]}"


def reset_memory(url: str) -> None:
    """Forget every job, result, lease and schedule state kept for the memory URL ``url``."""
    MemoryBroker.reset(url)
    MemoryResultBackend.reset(url)


def resolve_app(target: Bananas | ModuleType) -> Bananas:
    """The app of ``target``: a :class:`~bananas.Bananas`, or a module holding one (its ``app`` attribute, else
    the only ``Bananas`` among its attributes)."""
    from bananas.app import Bananas

    if isinstance(target, Bananas):
        return target
    if isinstance(target, ModuleType):
        app = getattr(target, "app", None)
        if isinstance(app, Bananas):
            return app
        found = [value for value in vars(target).values() if isinstance(value, Bananas)]
        if len(found) == 1:
            return found[0]
        raise UsageError(f"module {target.__name__} has {'no' if not found else len(found)} Bananas app(s) "
                         "(and no Bananas attribute named 'app'); pass the app itself")
    raise UsageError(f"expected a Bananas app or a module holding one, got {type(target).__name__} {target!r}")


def _carried_settings(app: Bananas) -> tuple[dict[str, Any], dict[str, str]]:
    """The app's settings that did not come from defaults, less the broker's and result backend's, with sources."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for row in app.settings.explain(redact=False):
        key, source = row["key"], row["source"]
        if source == "default" or key in _DROPPED or key.startswith(_DROPPED_TABLES):
            continue
        values[key] = app.settings[key]
        sources[key] = source
    return values, sources


def memory_app(
    app: Bananas | ModuleType | None = None,
    *,
    url: str | None = None,
    clock: FastForwardClock | None = None,
    **overrides: Any,
) -> Bananas:
    """A new app on the fresh memory broker and result backend ``url`` (default: a new unique one).

    With ``app`` (or a module holding it): its twin, with the same handlers, schedules, plugins and settings (see
    the module docstring). Without: an empty app that reads no config file, no environment and no entry points.
    ``overrides`` are dotted settings (``**{"jobs.max_retries": 0}``); ``clock`` is the brokers' clock (a new
    :class:`FastForwardClock` by default). The caller drops the state with :func:`reset_memory` when done.
    """
    from bananas.app import Bananas

    url = url or fresh_memory_url()
    source = resolve_app(app) if app is not None else None
    values: dict[str, Any] = {}
    labels: dict[str, str] = {}
    plugins: list[object] = []
    env: dict[str, str] = {}
    if source is not None:
        values, labels = _carried_settings(source)
        pm = source.plugins.pm
        plugins = [plugin for name, plugin in pm.list_name_plugin()
                   if plugin is not None and name not in BUILTIN_PLUGINS]
        blocked = [name for name in BUILTIN_PLUGINS if not pm.has_plugin(name)]
        if blocked:
            env["BANANAS_DISABLE_PLUGINS"] = ",".join(blocked)
    for key in overrides:
        if key in _DROPPED or key.startswith(_DROPPED_TABLES):
            raise UsageError(f"{key}: a test app runs on its own memory:// broker and result backend; "
                             "pass url= to choose the memory URL")
        labels[key] = "test override"
    values.update(overrides)
    twin = Bananas(broker=url, result_backend=url, config=os.devnull, overrides=values, override_sources=labels,
                   plugins=plugins, entrypoints=False, env=env)
    twin.broker_options = attrs.evolve(twin.broker_options, clock=clock or FastForwardClock())
    if source is not None:
        twin.handlers.update(source.handlers)
        twin.schedules.adopt(source.schedules)  # as the CLI does when flags rebuild an app
    return twin


class Rebinding:
    """One app moved onto a memory broker in place; :meth:`undo` puts it back exactly as it was."""

    def __init__(self, app: Bananas, url: str, overrides: dict[str, Any]) -> None:
        self.app = app
        self.url = url
        twin = memory_app(app, url=url, **overrides)
        self._saved = dict(vars(app))
        vars(app).update({name: value for name, value in vars(twin).items() if name not in KEPT_ON_REBIND})
        self._done = False

    def undo(self) -> None:
        """Close this thread's connections of the memory broker, restore the app, drop the memory state."""
        if self._done:
            return
        self._done = True
        try:
            self.app.close()
        finally:
            vars(self.app).clear()
            vars(self.app).update(self._saved)
            reset_memory(self.url)



@contextmanager
def use_memory(app: Bananas | ModuleType, *, url: str | None = None, **overrides: Any) -> Iterator[Bananas]:
    """Rebind ``app`` (the very object other modules imported) to a fresh ``memory://`` broker and result backend
    inside the ``with`` block; yields it. ``overrides`` are dotted settings for the block. On exit the app's own
    broker, settings and connections are back and the memory state is gone."""
    target = resolve_app(app)
    binding = Rebinding(target, url or fresh_memory_url(), overrides)
    try:
        yield target
    finally:
        binding.undo()
