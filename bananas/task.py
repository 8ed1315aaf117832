"""Task objects: what ``@app.job`` returns.

A :class:`Task` is still the function (``send_email(to=..., subject=...)`` runs it here, sync or async as written)
and adds the producer calls with the handler's defaults applied at the call site::

    send_email.enqueue(to="a@example.com", subject="hi")            # -> JobHandle
    await send_email.enqueue_async(to="a@example.com", subject="hi")
    send_email.submit_and_wait(timeout=10, to="a@example.com", subject="hi")   # RPC style -> the result
    send_email.options(priority="high", delay="10s").enqueue(to="a@example.com", subject="hi")

Enqueuing by name (``app.enqueue("send_email", {...})``) keeps working; both go through the same builder, which
reads the handler's defaults (priority, retries, timeout) from ``app.handlers``. The queue is always the router's
choice for the job (name and priority): ``options(queue=...)`` only asserts it and refuses any other queue, so a
producer that has the handler never sends a job where the handler's workers do not read.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from bananas.control import check_backoff
from bananas.errors import ResultTimeout, UsageError
from bananas.handlers import HandlerSpec
from bananas.job import Job, Priority

if TYPE_CHECKING:
    from bananas.app import Bananas
    from bananas.handle import JobHandle

__all__ = ["BoundTask", "Task", "register"]

P = ParamSpec("P")
R = TypeVar("R")

_OPTIONS = frozenset(
    {"priority", "delay", "at", "job_id", "queue", "max_retries", "timeout", "headers", "result_ttl", "expires"}
)


class BoundTask:
    """A task with call-site options (``task.options(...)``); ``enqueue`` / ``enqueue_async`` /
    ``submit_and_wait`` as on :class:`Task`, and ``options(...)`` again to add more."""

    def __init__(self, task: Task[Any, Any], options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise TypeError(f"{task.name}.options(): unknown option(s) {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(_OPTIONS))}")
        self.task = task
        self._options = {k: v for k, v in options.items() if v is not None}

    def options(self, **options: Any) -> BoundTask:
        return BoundTask(self.task, {**self._options, **options})

    def _send_options(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The options for ``app.enqueue``; checks the payload against the handler and the queue against routing."""
        task = self.task
        spec = task.spec
        problem = spec.mismatch(dict(payload))
        if problem is not None:
            raise TypeError(problem)
        options = dict(self._options)
        queue = options.pop("queue", None)
        if queue is not None:
            routed = task.app.router.route(_probe(spec.name, options.get("priority") or spec.priority))
            if queue != routed:
                raise UsageError(
                    f"{spec.name}.options(queue={queue!r}): jobs {spec.name!r} go to queue {routed!r} (the router's "
                    "choice for the handler, where its workers read); set the handler's priority or [routes] instead"
                )
        return options

    def enqueue(self, **payload: Any) -> JobHandle:
        """Enqueue the job with ``payload`` (the handler's keyword arguments); returns a :class:`JobHandle`."""
        return self.task.app.enqueue(self.task.name, payload, **self._send_options(payload))

    async def enqueue_async(self, **payload: Any) -> JobHandle:
        """Async :meth:`enqueue`."""
        return await self.task.app.enqueue_async(self.task.name, payload, **self._send_options(payload))

    def submit_and_wait(self, timeout: str | float = 30.0, **payload: Any) -> Any:
        """Enqueue and wait up to ``timeout`` seconds for the result (:class:`ResultTimeout` / ``JobFailed``
        carry the job id)."""
        handle = self.enqueue(**payload)
        return _waited(lambda: handle.result(timeout), handle, timeout)

    async def submit_and_wait_async(self, timeout: str | float = 30.0, **payload: Any) -> Any:
        """Async :meth:`submit_and_wait`."""
        handle = await self.enqueue_async(**payload)
        try:
            return await handle.result_async(timeout)
        except ResultTimeout as exc:
            raise _timeout(exc, handle, timeout) from None


def _waited(call: Callable[[], Any], handle: JobHandle, timeout: str | float) -> Any:
    try:
        return call()
    except ResultTimeout as exc:
        raise _timeout(exc, handle, timeout) from None


def _timeout(exc: ResultTimeout, handle: JobHandle, timeout: str | float) -> ResultTimeout:
    within = f"{timeout:g}s" if isinstance(timeout, int | float) else str(timeout)
    return ResultTimeout(f"no result for job {handle.job.name} {handle.id} within {within}; the job keeps running",
                         job_id=exc.job_id or handle.id)


def _probe(name: str, priority: str | Priority | None) -> Job:
    return Job(name=name, priority=Priority.parse(priority) if priority else Priority.NORMAL)


class Task(BoundTask, Generic[P, R]):
    """What ``@app.job`` returns: the handler function, callable as before, plus the producer calls."""

    def __init__(self, app: Bananas, spec: HandlerSpec) -> None:
        self.app = app
        self.spec = spec
        super().__init__(self, {})
        functools.update_wrapper(self, spec.func)  # __name__, __doc__, __wrapped__ for introspection and docs

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def func(self) -> Callable[P, R]:
        return self.spec.func

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here, in this process (a coroutine for an async handler), without a broker."""
        return self.spec.func(*args, **kwargs)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<Task {self.name} of {self.spec.func!r}>"


def register(
    app: Bananas,
    name: str | None,
    *,
    priority: str | Priority | None,
    max_retries: int | None,
    timeout: str | float | None,
    retry_for: tuple[type[BaseException], ...] | None,
    dont_retry_for: tuple[type[BaseException], ...],
    retry_backoff: Any,
) -> Callable[[Callable[P, R]], Task[P, R]]:
    """The decorator ``app.job(...)`` returns (checks the options once, registers the handler, wraps it)."""
    prio = Priority.parse(priority) if priority is not None else None
    if max_retries is not None and (isinstance(max_retries, bool) or max_retries < 0):
        raise ValueError(f"max_retries: expected a non-negative integer, got {max_retries!r}")
    seconds = Job(name="x", timeout=timeout).timeout if timeout is not None else None
    retry = _exceptions("retry_for", retry_for) if retry_for is not None else None
    dont = _exceptions("dont_retry_for", dont_retry_for)
    backoff = check_backoff(retry_backoff)

    def decorator(func: Callable[P, R]) -> Task[P, R]:
        if isinstance(func, Task):
            func = func.spec.func
        job_name = name or func.__name__
        if job_name in app.handlers:
            raise UsageError(f"job {job_name!r} is already registered (by {app.handlers[job_name].func!r})")
        spec = HandlerSpec(job_name, func, inspect.iscoroutinefunction(func), prio, max_retries, seconds,
                           retry, dont, backoff)
        app.handlers[job_name] = spec
        return Task(app, spec)

    return decorator


def _exceptions(what: str, value: object) -> tuple[type[BaseException], ...]:
    items = value if isinstance(value, tuple | list) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ValueError(f"{what}: expected exception classes, got {item!r}")
    return tuple(items)  # type: ignore[arg-type]

