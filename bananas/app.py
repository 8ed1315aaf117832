"""The ``Bananas`` app: handlers, configuration, plugins and the producer API."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import attrs

from bananas._manager import Plugins, load_plugins
from bananas.app_build import build_all, build_job
from bananas.app_inspect import Inspecting
from bananas.app_worker import worker_context
from bananas.broker import (
    Broker,
    BrokerCapabilities,
    Envelope,
    capabilities,
)
from bananas.config import Schema, Settings, read_sources
from bananas.config_options import plugin_options
from bananas.control import Backoff
from bananas.errors import ConfigError, UsageError
from bananas.handle import JobHandle
from bananas.handlers import HandlerSpec
from bananas.headers import DEFAULTED_RETRIES_HEADER
from bananas.job import Job, Priority, new_job_id
from bananas.periodic import PeriodicTable, Schedule
from bananas.result_backend import ResultBackend, choose_result_backend
from bananas.router import Router
from bananas.serializer import JobCodec
from bananas.task import Task, register
from bananas.worker import Worker, WorkerContext

if TYPE_CHECKING:
    from bananas.worker_mode import WorkerPlan

__all__ = ["DEFAULTED_RETRIES_HEADER", "Bananas", "HandlerSpec", "JobHandle"]

P = ParamSpec("P")
R = TypeVar("R")

_set = object.__setattr__
"""Write a field of a ``Job`` without its attrs converters/validators (only values already checked or made here)."""

def _url_scheme(url: str, key: str, source: str) -> str:
    scheme = urlsplit(url).scheme
    if not scheme:
        raise ConfigError(key, url, source, "a URL such as redis://localhost:6379 or memory://")
    return scheme


class Bananas(Inspecting):
    """A Bananas application.

    ``Bananas()`` reads the configuration (``bananas.toml``, ``[tool.bananas]``, environment); keyword arguments
    override it: ``Bananas(broker="memory://")``. Register handlers with :meth:`job`, enqueue with :meth:`enqueue`.

    :param plugins: Extra plugin objects to register (modules or instances with ``bananas_*`` hooks).
    :param entrypoints: Load plugins of the ``bananas`` entry-point group (``False`` keeps tests hermetic).
    :param overrides: More dotted config keys (``{"worker.concurrency": 4}``).
    """

    def __init__(
        self,
        broker: str | None = None,
        *,
        serializer: str | None = None,
        result_backend: str | None = None,
        router: str | None = None,
        config: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        override_sources: Mapping[str, str] | None = None,
        plugins: Iterable[object] = (),
        entrypoints: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        values: dict[str, Any] = dict(overrides or {})
        for key, value in (
            ("broker", broker),
            ("serializer", serializer),
            ("result_backend", result_backend),
            ("router", router),
        ):
            if value is not None:
                values[key] = value
        self.extra_plugins: tuple[object, ...] = tuple(plugins)
        """The plugin objects passed as ``plugins=`` (the CLI rebuilds the app with them when flags override)."""
        self.init_args: dict[str, Any] = {
            "broker": broker, "serializer": serializer, "result_backend": result_backend, "router": router,
            "config": config, "overrides": dict(overrides or {}), "override_sources": dict(override_sources or {}),
            "entrypoints": entrypoints, "env": env,
        }
        """The other arguments it was built with (the CLI's rebuild keeps them, under its flags)."""
        # Two phases: read the sources, load the plugins (they declare settings), then validate everything together.
        raw = read_sources(config_path=config, overrides=values, override_sources=override_sources, env=env)
        self.plugins: Plugins = load_plugins(plugins=self.extra_plugins, entrypoints=entrypoints, env=env)
        self.settings: Settings = raw.validate(Schema.of(self.plugins))
        self.handlers: dict[str, HandlerSpec] = {}
        self.schedules: PeriodicTable = PeriodicTable.from_settings(self.settings)  # and app.periodic() calls

        s = self.settings
        self.broker_url: str = s["broker"]
        self._broker_spec = self.plugins.brokers.get(_url_scheme(self.broker_url, "broker", s.source("broker")))
        self.broker_options = plugin_options(s, "broker", self._broker_spec)
        self.codec = JobCodec.from_settings(self.plugins.serializers, s)
        router_spec = self.plugins.routers.get(s["router"])
        self.router: Router = router_spec.factory(plugin_options(s, "router", router_spec))
        self.result_backend_url: str | None = choose_result_backend(s["result_backend"], self.broker_url,
                                                                    self.plugins.result_backends)
        self._result_spec = None
        if self.result_backend_url:
            scheme = _url_scheme(self.result_backend_url, "result_backend", s.source("result_backend"))
            self._result_spec = self.plugins.result_backends.get(scheme)
        self._brokers: dict[asyncio.AbstractEventLoop, Broker] = {}
        # Capabilities of every broker built here, resolved once in new_broker (weak: a dropped broker goes).
        self._capabilities: weakref.WeakKeyDictionary[Broker, BrokerCapabilities] = weakref.WeakKeyDictionary()
        self._results: dict[asyncio.AbstractEventLoop, ResultBackend] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        # Read once: ``Settings.__getitem__`` deep-copies, and the producer's hot path needs these per job.
        self._default_retries: int = s["jobs.max_retries"]
        self._max_payload: int = s["max_payload_bytes"]

    # -- handlers ----------------------------------------------------------------------------------------------
    def job(
        self,
        name: str | None = None,
        *,
        priority: str | Priority | None = None,
        max_retries: int | None = None,
        timeout: str | float | None = None,
        retry_for: tuple[type[BaseException], ...] | None = None,
        dont_retry_for: tuple[type[BaseException], ...] = (),
        retry_backoff: Backoff | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]:
        """Register the decorated function (sync or async) as the handler of job ``name`` (default: its name).

        Returns a :class:`~bananas.task.Task`: still callable as the function, plus ``.enqueue(**payload)``,
        ``.enqueue_async``, ``.submit_and_wait`` and ``.options(...)``. Retry options: docs/HANDLERS.md.
        """
        return register(self, name, priority=priority, max_retries=max_retries, timeout=timeout,
                        retry_for=retry_for, dont_retry_for=dont_retry_for, retry_backoff=retry_backoff)

    def periodic(self, name: str, *, cron: str | None = None, every: str | float | None = None,
                 **options: Any) -> Schedule:
        """Declare periodic job ``name`` (``cron="0 * * * *"`` or ``every="30s"``; ``job`` defaults to ``name``);
        other options and the rules: docs/PERIODIC.md. Errors name the schedule and the field."""
        return self.schedules.add({"name": name, "cron": cron, "every": every, **options})

    # -- broker and result backend per event loop ------------------------------------------------------------
    def new_broker(self, **overrides: Any) -> Broker:
        """A new, unconnected broker for the configured URL (``overrides`` replace option fields)."""
        options = attrs.evolve(self.broker_options, **overrides) if overrides else self.broker_options
        broker = self._broker_spec.factory(self.broker_url, options)
        self._remember_capabilities(broker)
        return broker

    def _remember_capabilities(self, broker: Broker) -> BrokerCapabilities:
        caps = capabilities(broker)
        try:
            self._capabilities[broker] = caps
        except TypeError:  # not weak-referenceable (__slots__ without __weakref__): resolved again when asked
            pass
        return caps

    def capabilities(self, broker: Broker) -> BrokerCapabilities:
        """The optional capabilities of ``broker`` (see :mod:`bananas.broker`), resolved once when it was built."""
        try:
            return self._capabilities[broker]
        except (KeyError, TypeError):
            return self._remember_capabilities(broker)

    async def broker(self) -> Broker:
        """The connected broker of the running event loop (created on first use)."""
        loop = asyncio.get_running_loop()
        broker = self._brokers.get(loop)
        if broker is None:
            fresh = self.new_broker()
            await fresh.connect()
            with self._lock:
                broker = self._brokers.setdefault(loop, fresh)
            if broker is not fresh:  # two first calls raced on this loop: keep one connection
                await fresh.close()
        return broker

    async def results(self) -> ResultBackend | None:
        """The connected result backend of the running loop, or ``None`` when none is configured."""
        if self._result_spec is None or self.result_backend_url is None:
            return None
        loop = asyncio.get_running_loop()
        backend = self._results.get(loop)
        if backend is None:
            options = plugin_options(self.settings, "result backend", self._result_spec)
            backend = self._result_spec.factory(self.result_backend_url, options)
            await backend.connect()
            with self._lock:  # two first calls on one loop may race here: keep one backend, close the other
                existing = self._results.setdefault(loop, backend)
            if existing is not backend:
                await backend.close()
                backend = existing
        return backend

    def run_sync(self, factory: Callable[[], Any]) -> Any:
        """Run ``factory()`` (a coroutine factory) on this thread's private event loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise UsageError("this call blocks and an event loop is running here; use the *_async variant instead")
        loop = getattr(self._local, "loop", None)
        if loop is None:
            loop = self._local.loop = asyncio.new_event_loop()
        return loop.run_until_complete(factory())

    async def aclose(self) -> None:
        """Close the broker and result backend of the running loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            broker = self._brokers.pop(loop, None)
            backend = self._results.pop(loop, None)
        if broker is not None:
            await broker.close()
        if backend is not None:
            await backend.close()

    def close(self) -> None:
        """Close this thread's connections and its private loop."""
        loop = getattr(self._local, "loop", None)
        if loop is not None:
            loop.run_until_complete(self.aclose())
            loop.close()
            self._local.loop = None

    # -- producing ---------------------------------------------------------------------------------------------
    def build(
        self,
        name: str,
        payload: Mapping[str, Any] | None = None,
        *,
        priority: str | Priority | None = None,
        delay: str | float | None = None,
        at: datetime | float | None = None,
        max_retries: int | None = None,
        timeout: str | float | None = None,
        job_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        result_ttl: str | float | None = None,
        expires: str | float | datetime | timedelta | None = None,
    ) -> tuple[Job, Envelope]:
        """Make the job and its envelope without sending it (validation happens here).

        ``result_ttl`` (seconds or a duration; ``0`` stores no result) and ``expires`` (see :meth:`enqueue`) travel
        in the job's headers.
        """
        return self._build(name, payload, priority, delay, at, max_retries, timeout, job_id, headers, result_ttl,
                           expires)[:2]

    def _build(self, name: str, payload: Mapping[str, Any] | None = None, *args: Any) -> tuple[Job, Envelope, bool]:
        """:meth:`build`, plus whether the id was generated here (see :func:`bananas.app_build.build_job`)."""
        return build_job(self, time.time(), new_job_id, name, payload, *args)

    def _build_all(self, jobs: Sequence[Mapping[str, Any]]) -> tuple[list[Job], list[Envelope], set[str]]:
        return build_all(self, jobs)

    def _enqueued(self, jobs: list[Job], existing: Mapping[int, Job | None] | None = None) -> list[JobHandle]:
        """Handles of the jobs sent; ``existing`` (by index) are explicit ids that were live already: nothing was
        stored for them, their handle shows the stored job (when it could be read) and says ``duplicate``."""
        if existing:
            handles = [JobHandle(self, existing.get(i) or job, duplicate=True) if i in existing
                       else JobHandle(self, job) for i, job in enumerate(jobs)]
            jobs = [job for i, job in enumerate(jobs) if i not in existing]
        else:
            handles = [JobHandle(self, job) for job in jobs]
        if self.plugins.observers.has("bananas_job_enqueued"):
            for job in jobs:
                self.plugins.observers.notify("bananas_job_enqueued", job=job)
        return handles

    async def _existing(self, broker: Broker, envelopes: list[Envelope], generated: set[str],
                        stored: object) -> dict[int, Job | None]:
        """The explicit ids of this enqueue that were not stored because a live copy exists, with the stored job.

        ``stored`` is what the broker's enqueue returned: one flag per envelope (``False``: a live copy exists), or
        ``None`` from a broker that does not say; then explicit ids are looked up (``admin`` capability) and one
        whose stored body is not the one sent counts as a duplicate."""
        flags = stored if isinstance(stored, list) and len(stored) == len(envelopes) else None
        if flags is None and len(generated) == len(envelopes):
            return {}  # ids made here are fresh: none can exist already
        admin = self.capabilities(broker).admin
        if flags is None and admin is None:
            return {}
        existing: dict[int, Job | None] = {}
        for i, env in enumerate(envelopes):
            if env.id in generated or (flags is not None and flags[i]):
                continue
            record = await admin.lookup(env.id) if admin is not None else None
            if flags is None and (record is None or record.body == env.body):
                continue  # stored as sent (or gone already): not a duplicate
            existing[i] = self._job_from_record(record) if record is not None else None
        return existing

    async def enqueue_many_async(self, jobs: Sequence[Mapping[str, Any]]) -> list[JobHandle]:
        """Enqueue several jobs in one broker call; each mapping holds :meth:`build`'s arguments."""
        built, envelopes, generated = self._build_all(jobs)
        broker = await self.broker()
        hinted = self.capabilities(broker).enqueue_with_hints
        if hinted is not None and generated:
            stored = await hinted(envelopes, generated_ids=generated)
        else:
            stored = await broker.enqueue(envelopes)
        if (stored is None and len(generated) == len(envelopes)) or (stored is not None and all(stored)):
            return self._enqueued(built)
        return self._enqueued(built, await self._existing(broker, envelopes, generated, stored))

    async def enqueue_async(self, name: str, payload: Mapping[str, Any] | None = None, **options: Any) -> JobHandle:
        """Async :meth:`enqueue`."""
        return (await self.enqueue_many_async([{"name": name, "payload": payload, **options}]))[0]

    def _sync_broker(self) -> Broker:
        """This thread's broker (on its private loop, connected on first use) for the blocking producer calls."""
        if asyncio._get_running_loop() is not None:
            raise UsageError("this call blocks and an event loop is running here; use the *_async variant instead")
        loop = getattr(self._local, "loop", None)
        broker = self._brokers.get(loop) if loop is not None else None
        if broker is None:
            broker = self.run_sync(self.broker)
        return broker

    def enqueue(self, name: str, payload: Mapping[str, Any] | None = None, **options: Any) -> JobHandle:
        """Enqueue job ``name`` with ``payload`` (keyword arguments of the handler).

        Options: ``priority``, ``delay`` (``"10s"``), ``at`` (datetime or Unix time), ``max_retries``, ``timeout``,
        ``job_id``, ``headers``, ``result_ttl``, ``expires`` (seconds, ``"10m"``, a ``timedelta`` or an aware
        ``datetime``: a job not started by then is dropped with status ``expired``). Returns a :class:`JobHandle`;
        an explicit ``job_id`` that is still pending, scheduled or running returns the existing job's handle with
        ``duplicate=True`` (nothing is stored).
        """
        return self.enqueue_many([{"name": name, "payload": payload, **options}])[0]

    def enqueue_many(self, jobs: Sequence[Mapping[str, Any]]) -> list[JobHandle]:
        """Enqueue several jobs in one broker round trip (where the broker allows).

        A broker with the optional ``enqueue_sync`` capability (see :mod:`bananas.broker`) is called directly on
        this thread, without an event-loop turn; any other runs on this thread's private loop.
        """
        broker = self._sync_broker()
        send = self.capabilities(broker).enqueue_sync
        if send is None:
            return self.run_sync(lambda: self.enqueue_many_async(jobs))
        built, envelopes, generated = self._build_all(jobs)
        stored = send(envelopes, generated_ids=generated)
        if (stored is None and len(generated) == len(envelopes)) or (stored is not None and all(stored)):
            return self._enqueued(built)
        return self._enqueued(built, self.run_sync(lambda: self._existing(broker, envelopes, generated, stored)))

    # -- running -----------------------------------------------------------------------------------------------
    def plan(self, mode: str | None = None) -> WorkerPlan:
        """The worker plan of ``mode`` (default: ``[worker] mode``)."""
        name = mode or self.settings["worker.mode"]
        return self.plugins.worker_modes.get(name).factory().plan(self.settings, self.router)

    def worker(self, plan: WorkerPlan | None = None) -> Worker:
        """A :class:`bananas.worker.Worker` for ``plan`` (default: the mode's plan); checks periodic jobs' handlers."""
        plan = plan or self.plan()
        self.schedules.check_jobs(self.handlers, when=plan.scheduler)
        self.check_job_types(plan)
        return Worker(self.worker_context(), plan)

    def check_job_types(self, plan: WorkerPlan) -> None:
        """Every job type a pool of ``plan`` is limited to has a handler here (else :class:`ConfigError`, one line
        naming them): such a pool would hold those jobs back, fetched by nobody else that runs them."""
        for pool in plan.pools:
            missing = [t for t in pool.job_types or () if t not in self.handlers]
            if missing:
                known = ", ".join(sorted(self.handlers)) or "none"
                key = "worker.job_types"
                source = self.settings.source(key) if key in self.settings else f"pool {pool.pool_id}"
                raise ConfigError(key, ",".join(pool.job_types or ()), source,
                                  f"no handler for {', '.join(missing)} in this app; registered: {known}")

    def worker_context(self) -> WorkerContext:
        """What a worker needs from this app (the worker never sees the app itself): see :mod:`bananas.app_worker`."""
        return worker_context(self)
