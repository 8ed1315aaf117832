"""What the app hands a worker: the :class:`~bananas.worker.WorkerContext` built from an app's settings, plugins and
handlers (the worker never sees the app itself), and the duties plugins add."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bananas.errors import ConfigError, UsageError
from bananas.metrics.config import MetricsConfig
from bananas.periodic import periodic_duties
from bananas.worker import Duty, WorkerContext, WorkerInfo
from bananas.worker.loop import loop_factory

if TYPE_CHECKING:
    from bananas.app import Bananas

__all__ = ["plugin_duties", "worker_context"]


def worker_context(app: Bananas) -> WorkerContext:
    """The worker's view of ``app``."""
    _check_event_loop(app)
    s = app.settings
    return WorkerContext(
        codec=app.codec,
        handlers=app.handlers,
        broker=app.broker,
        new_broker=app.new_broker,
        capabilities=app.capabilities,
        observers=app.plugins.observers,
        close=app.aclose,
        results=app.results,
        has_results=bool(app.result_backend_url),
        duties=lambda info: plugin_duties(app, info),
        periodic=lambda fence: periodic_duties(app, fence),
        scheduler_lease=s["worker.scheduler_lease"],
        lease=app.broker_options.lease,
        default_timeout=s["jobs.timeout"],
        shutdown_timeout=s["worker.shutdown_timeout"],
        event_loop=s["worker.event_loop"],
        broker_wait=s["worker.broker_wait"],
        backoff=(s["jobs.retry_backoff_base"], s["jobs.retry_backoff_factor"], s["jobs.retry_backoff_max"]),
        metrics=MetricsConfig.from_settings(s),
        unknown_job_types=s["worker.unknown_job_types"],
        prefetch_multiplier=s["worker.prefetch_multiplier"],
    )


def _check_event_loop(app: Bananas) -> None:
    choice = app.settings["worker.event_loop"]
    try:
        loop_factory(choice)
    except ImportError:
        raise ConfigError("worker.event_loop", choice, app.settings.source("worker.event_loop"),
                          "uvloop is not installed: pip install 'bananas-queue[uvloop]', or choose auto or asyncio"
                          ) from None


def plugin_duties(app: Bananas, info: WorkerInfo) -> list[Duty]:
    """The duties plugins add for the worker ``info`` (``bananas_worker_duties``)."""
    duties: list[Duty] = []
    for returned in app.plugins.pm.hook.bananas_worker_duties(worker=info):
        for duty in [returned] if isinstance(returned, Duty) else returned:
            if not isinstance(duty, Duty):
                raise UsageError(f"bananas_worker_duties returned {duty!r}, not a bananas.worker.Duty")
            duties.append(duty)
    return duties
