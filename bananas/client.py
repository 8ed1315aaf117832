"""Clients for producer-only processes: submit jobs, wait for results, inspect jobs, with no handler code.

``Client`` blocks (it runs each call on the calling thread's private event loop); ``AsyncClient`` has the same
method names as coroutines. Both wrap a :class:`~bananas.app.Bananas` app with no handlers, so the configuration,
plugins, serializer and router are exactly a worker's::

    from bananas import Client

    client = Client("redis://localhost:6379")       # or Client() to read bananas.toml / the environment
    job = client.submit_job("resize", {"path": "a.png"}, priority="high")
    client.get_job(job.id).status                   # Status.PENDING, RUNNING, COMPLETED, DEAD…
    client.get_result(job.id, wait=10)              # the handler's return value
    client.submit_and_wait("add", {"a": 1, "b": 2}, timeout=30)   # RPC style → 3

The result backend is the ``result_backend=`` argument, else the URL itself when its scheme has a result backend
installed (``redis://``, ``memory://``), else the configured ``result_backend`` — which, unset, is the broker's URL
too, as for workers: a worker and a client on the same Redis find each other's results with no setting at all.
``result_backend = "none"`` turns storage off; then ``submit_and_wait`` fails before it sends anything.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bananas.broker import Progress
from bananas.errors import ResultTimeout, UsageError
from bananas.job import Job, Priority
from bananas.result_backend import RESULT_TTL_HEADER, result_ttl_header
from bananas.units import parse_duration

if TYPE_CHECKING:
    from bananas.app import Bananas, JobHandle

__all__ = ["AsyncClient", "Client"]


def _build_app(
    url: str | None,
    *,
    result_backend: str | None,
    config: str | None,
    serializer: str | None,
    overrides: Mapping[str, Any] | None,
    plugins: Iterable[object],
    entrypoints: bool,
    env: Mapping[str, str] | None,
) -> Bananas:
    from bananas.app import Bananas

    plugins = tuple(plugins)

    def make(backend: str | None) -> Bananas:
        return Bananas(
            url,
            serializer=serializer,
            result_backend=backend,
            config=config,
            overrides=overrides,
            plugins=plugins,
            entrypoints=entrypoints,
            env=env,
        )

    app = make(result_backend)
    if result_backend is None and app.settings["result_backend"] != "none":
        # An explicit URL brings its own result backend when its scheme has one; Client() from config keeps the
        # configured result_backend and only falls back to the broker's URL when none is set.
        candidate = url if url is not None else (app.broker_url if app.result_backend_url is None else None)
        if (
            candidate is not None
            and candidate != app.result_backend_url
            and urlsplit(candidate).scheme in app.plugins.result_backends
        ):
            app = make(candidate)
    return app


def _seconds(value: str | float | None, what: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


class AsyncClient:
    """Submit, wait for, fetch and inspect jobs from asyncio code (no handlers needed).

    :param url: Broker URL (``"redis://localhost:6379"``); ``None`` reads ``broker`` from the configuration.
    :param result_backend: Result backend URL; default: ``url`` when its scheme has a result backend installed,
        else the configured ``result_backend``.
    :param config: Config file to read (default: ``bananas.toml`` / ``[tool.bananas]`` discovery).
    :param serializer: Serializer name (default: configured, else ``json``); workers read any installed one.
    :param overrides: More dotted config keys (``{"broker_options.prefix": "myapp"}``).
    :param plugins: Extra plugin objects; ``entrypoints``/``env`` as for :class:`~bananas.app.Bananas`.
    :param app: Wrap this existing app instead of building one (every other argument is ignored).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        result_backend: str | None = None,
        config: str | None = None,
        serializer: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        plugins: Iterable[object] = (),
        entrypoints: bool = True,
        env: Mapping[str, str] | None = None,
        app: Bananas | None = None,
    ) -> None:
        self.app: Bananas = app or _build_app(
            url,
            result_backend=result_backend,
            config=config,
            serializer=serializer,
            overrides=overrides,
            plugins=plugins,
            entrypoints=entrypoints,
            env=env,
        )
        self._ready: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        from bananas.config import redact_url

        backend = redact_url(self.app.result_backend_url) if self.app.result_backend_url else None
        return f"<{type(self).__name__} broker={redact_url(self.app.broker_url)} result_backend={backend}>"

    @property
    def broker_url(self) -> str:
        return self.app.broker_url

    @property
    def result_backend_url(self) -> str | None:
        return self.app.result_backend_url

    async def connect(self) -> None:
        """Connect the broker and result backend of the running loop (each call does it on first use anyway).

        Concurrent first calls on one loop share one connection set instead of each opening their own.
        """
        loop = asyncio.get_running_loop()
        if loop in self._ready:
            return
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        async with lock:
            if loop not in self._ready:
                await self.app.broker()
                await self.app.results()
                self._ready.add(loop)

    async def aclose(self) -> None:
        """Close the connections of the running loop."""
        self._ready.discard(asyncio.get_running_loop())
        await self.app.aclose()

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- submitting --------------------------------------------------------------------------------------------
    async def submit_job(
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
    ) -> JobHandle:
        """Enqueue job ``name`` with ``payload`` (the handler's keyword arguments); returns a handle with ``.id``.

        ``result_ttl`` keeps this job's result that long (``0``: store none) instead of the backend's ``ttl``.
        ``expires`` (seconds, ``"10m"``, a ``timedelta`` or an aware ``datetime``): a job not started by then is
        dropped with status ``expired``. An explicit ``job_id`` that is still live returns that job's handle with
        ``duplicate=True`` (nothing is stored).
        Inside a loop, follow the handle with ``await handle.status_async()`` / ``await handle.result_async(10)``.
        """
        await self.connect()
        if result_ttl is not None:
            headers = {**(headers or {}), RESULT_TTL_HEADER: result_ttl_header(result_ttl)}
        return await self.app.enqueue_async(
            name,
            payload,
            priority=priority,
            delay=delay,
            at=at,
            max_retries=max_retries,
            timeout=timeout,
            job_id=job_id,
            headers=headers,
            expires=expires,
        )

    async def submit_and_wait(
        self, name: str, payload: Mapping[str, Any] | None = None, *, timeout: str | float = 30.0, **options: Any
    ) -> Any:
        """Submit job ``name`` and wait up to ``timeout`` seconds for its result (RPC style).

        Takes :meth:`submit_job`'s options. Raises :class:`~bananas.errors.ResultTimeout` if no result comes in
        time (the job keeps running: fetch it later with :meth:`get_result`) and :class:`~bananas.errors.JobFailed`
        when the job failed for good. Retries happen inside the wait: only the final outcome comes back.
        """
        seconds = _seconds(timeout, "timeout")
        if seconds is None or seconds <= 0:
            raise ValueError(f"timeout: expected a positive duration, got {timeout!r}")
        ttl = options.get("result_ttl")
        if ttl is not None and _seconds(ttl, "result_ttl") == 0:
            raise UsageError("submit_and_wait with result_ttl=0 would wait for a result that is never stored")
        await self.connect()
        backend = await self.app.results()
        if backend is None:
            raise UsageError(
                "submit_and_wait needs a result backend, and result_backend is 'none' here; pass result_backend= "
                "or set result_backend (the workers must store results there too)"
            )
        handle = await self.submit_job(name, payload, **options)
        try:  # blocks on the completion signal; ends at once when the job ends without a stored result
            return await self.app.get_result_async(handle.id, wait=seconds)
        except ResultTimeout:
            raise ResultTimeout(
                f"no result for job {name} {handle.id} within {seconds:g}s; the job keeps running", job_id=handle.id
            ) from None

    # -- inspecting --------------------------------------------------------------------------------------------
    async def get_result(self, job_id: str, wait: str | float | None = None) -> Any:
        """The result of ``job_id``, waiting up to ``wait`` seconds for it (``None``: look once, do not wait).

        Raises :class:`~bananas.errors.JobFailed` (the job is dead; remote error type, message and traceback),
        :class:`~bananas.errors.ResultTimeout` (no result yet / within ``wait``; the job keeps running) or
        :class:`~bananas.errors.JobNotFound` (unknown id, or the result was not kept).
        """
        await self.connect()
        return await self.app.get_result_async(job_id, wait=wait)

    async def get_job(self, job_id: str) -> Job:
        """The job as the broker knows it: ``status``, ``attempts``, ``queue``, timestamps, ``last_error``,
        ``traceback``. Raises :class:`~bananas.errors.JobNotFound` for an unknown or expired id."""
        await self.connect()
        return await self.app.get_job_async(job_id)

    async def get_progress(self, job_id: str) -> Progress | None:
        """The last progress the job's handler reported (``value``, ``message``, ``updated_at``), ``None`` if none;
        ``handle.progress()`` / ``await handle.progress_async()`` do the same from a handle."""
        await self.connect()
        return await self.app.get_progress_async(job_id)

    async def cancel(self, job_id: str) -> bool:
        """Cancel ``job_id``: a pending or scheduled job never runs, a running one is asked to stop; it ends with
        status ``cancelled`` and ``get_result`` raises :class:`~bananas.errors.JobCancelled`. ``True`` if the job was
        still pending, scheduled or running; ``False`` if it had finished (nothing changes). Raises
        :class:`~bananas.errors.JobNotFound` for an unknown id. See docs/HANDLERS.md ("Cancelling a job")."""
        await self.connect()
        return await self.app.cancel_async(job_id)


class Client:
    """The blocking twin of :class:`AsyncClient` (same arguments, same method names).

    Each thread gets its own event loop and connections. Calling a method from inside a running event loop raises
    :class:`~bananas.errors.UsageError` naming :class:`AsyncClient`, the one to use there.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        result_backend: str | None = None,
        config: str | None = None,
        serializer: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        plugins: Iterable[object] = (),
        entrypoints: bool = True,
        env: Mapping[str, str] | None = None,
        app: Bananas | None = None,
    ) -> None:
        self._async = AsyncClient(
            url,
            result_backend=result_backend,
            config=config,
            serializer=serializer,
            overrides=overrides,
            plugins=plugins,
            entrypoints=entrypoints,
            env=env,
            app=app,
        )
        self.app: Bananas = self._async.app

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncClient", "Client", 1)

    @property
    def broker_url(self) -> str:
        return self.app.broker_url

    @property
    def result_backend_url(self) -> str | None:
        return self.app.result_backend_url

    def _run(self, factory: Any) -> Any:
        """Run ``factory()`` on this thread's private loop; inside a running loop, say to use AsyncClient."""
        if asyncio._get_running_loop() is not None:
            raise UsageError("Client blocks, and an event loop is running here: use bananas.AsyncClient (the same "
                             "methods, awaited) in async code")
        return self.app.run_sync(factory)

    def close(self) -> None:
        """Close this thread's connections and its private loop."""
        self.app.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit_job(
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
    ) -> JobHandle:
        """See :meth:`AsyncClient.submit_job`; the handle's ``status()`` and ``result(timeout)`` block."""
        return self._run(
            lambda: self._async.submit_job(
                name,
                payload,
                priority=priority,
                delay=delay,
                at=at,
                max_retries=max_retries,
                timeout=timeout,
                job_id=job_id,
                headers=headers,
                result_ttl=result_ttl,
                expires=expires,
            )
        )

    def submit_and_wait(
        self, name: str, payload: Mapping[str, Any] | None = None, *, timeout: str | float = 30.0, **options: Any
    ) -> Any:
        """See :meth:`AsyncClient.submit_and_wait`."""
        return self._run(lambda: self._async.submit_and_wait(name, payload, timeout=timeout, **options))

    def get_result(self, job_id: str, wait: str | float | None = None) -> Any:
        """See :meth:`AsyncClient.get_result`."""
        return self._run(lambda: self._async.get_result(job_id, wait=wait))

    def get_job(self, job_id: str) -> Job:
        """See :meth:`AsyncClient.get_job`."""
        return self._run(lambda: self._async.get_job(job_id))

    def get_progress(self, job_id: str) -> Progress | None:
        """See :meth:`AsyncClient.get_progress`."""
        return self._run(lambda: self._async.get_progress(job_id))

    def cancel(self, job_id: str) -> bool:
        """See :meth:`AsyncClient.cancel`."""
        return self._run(lambda: self._async.cancel(job_id))  # type: ignore[no-any-return]
