"""The kernel's own settings, and who owns the settings of plugins the kernel knows about.

Only keys the kernel itself reads live here. Worker-mode keys belong to the mode plugins (``bananas-mode-*``
declare them with the ``bananas_register_settings`` hook) and log-tier keys (``logging.file.*``,
``logging.elasticsearch.*``) to the log-tier plugins; :data:`KNOWN_OWNERS` only names those packages so that an
unknown key can say what to install.
"""

from __future__ import annotations

import attrs

from bananas.config_schema import KeySpec, setting
from bananas.job import Priority

__all__ = ["FREE_TABLES", "KERNEL", "KERNEL_KEYS", "KNOWN_OWNERS", "KnownOwner", "install_hint", "known_owner"]

KERNEL = "bananas-queue"
"""The kernel's distribution name (``pip install bananas-queue``; ``bananas`` on PyPI is an unrelated project, and the
import name stays ``bananas``): the owner shown for kernel keys and built-in plugins."""

_LEVELS = ("debug", "info", "warn", "warning", "error")
_SLOTS = {"minimum": 1, "maximum": 1000}

KERNEL_KEYS: tuple[KeySpec, ...] = (
    setting("broker", "url", None, "Broker URL; its scheme picks the broker plugin (redis://, memory://, ...).",
            "BANANAS_BROKER"),
    setting("redis_url", "url", "redis://localhost:6379", "Redis URL (seed name); the broker default.", "REDIS_URL"),
    setting("serializer", "str", "json", "Serializer name (json built in; plugins add more).", "BANANAS_SERIALIZER"),
    setting("result_backend", "url", None, "Result backend URL; unset: the broker's URL when its plugin keeps "
            "results (redis://, memory://); none: store no results.", "BANANAS_RESULT_BACKEND", choices=("none",)),
    setting("router", "str", "priority", "Routing strategy name; [routes] is its table.", "BANANAS_ROUTER"),
    setting("signing_key", "str", None, "Key that signs job bodies; unset disables signing.", "BANANAS_SIGNING_KEY",
            secret=True),
    setting("signing_keys_old", "list", (), "Old signing keys that still verify (not sign) during a key rotation.",
            "BANANAS_SIGNING_KEYS_OLD", secret=True),
    setting("max_payload_bytes", "int", 1048576, "Largest encoded job body accepted.", "MAX_PAYLOAD_BYTES",
            minimum=1),
    setting("periodic", "tables", (), "Periodic jobs ([[periodic]] tables: name, cron or every, job, timezone, "
            "payload, queue, priority, max_retries, timeout, jitter, catch_up; see docs/PERIODIC.md).",
            "BANANAS_PERIODIC"),
    setting("worker.mode", "str", "default", "Worker mode name (validated against installed mode plugins).",
            "WORKER_MODE"),
    setting("worker.concurrency", "int", 10, "Concurrent job slots of this worker.", "WORKER_CONCURRENCY", **_SLOTS),
    setting("worker.prefetch_multiplier", "int", 2, "Jobs a pool holds at most, running and prefetched, as a "
            "multiple of its slots (as Celery's worker_prefetch_multiplier). Prefetched jobs wait in the worker "
            "with their leases renewed and start as slots free up, so a busy pool fetches and acks several jobs "
            "per round trip; 1: fetch only for free slots.", "WORKER_PREFETCH_MULTIPLIER", minimum=1, maximum=100),
    setting("worker.priorities", "priorities", tuple(Priority), "Priorities to process, in order.",
            "WORKER_PRIORITIES", choices=tuple(p.value for p in Priority)),
    setting("worker.queues", "list", (), "Queues to read; empty: the router's default queues.", "WORKER_QUEUES"),
    setting("worker.unknown_job_types", "enum", "wait", "Jobs of a type this worker has no handler for: wait "
            "(fetch only the types it runs; they wait for a worker that has one) or dead-letter (fetch every type "
            "and dead-letter those, as 0.1 did).", "WORKER_UNKNOWN_JOB_TYPES", choices=("wait", "dead-letter")),
    setting("worker.enable_scheduler", "bool", True, "This worker is a scheduler: a candidate in the "
            "leader election; the leader moves due jobs and enqueues periodic jobs.", "ENABLE_SCHEDULER"),
    setting("worker.scheduler_interval", "duration", 1.0, "How often scheduled and retrying jobs are checked.",
            "SCHEDULER_INTERVAL", minimum=0.1, maximum=60.0),
    setting("worker.scheduler_lease", "duration", 5.0, "Leader lease of the scheduler: after a leader dies, "
            "another scheduler takes over within about this long.", "SCHEDULER_LEASE", minimum=0.5, maximum=300.0),
    setting("worker.periodic_grace", "duration", 10.0, "A periodic tick at most this late still runs whatever "
            "catch_up says; older missed ticks follow catch_up.", "PERIODIC_GRACE", minimum=0),
    setting("worker.processes", "int", 1, "Worker processes to start.", "WORKER_PROCESSES", minimum=1, maximum=64),
    setting("worker.shutdown_timeout", "duration", 30.0, "Grace period for running jobs on shutdown.",
            "SHUTDOWN_TIMEOUT", minimum=0),
    setting("worker.event_loop", "enum", "auto", "Event loop of the worker processes: uvloop (pip install "
            "'bananas-queue[uvloop]'; about 10 % less CPU per job), asyncio, or auto (uvloop when installed).",
            "WORKER_EVENT_LOOP", choices=("auto", "asyncio", "uvloop")),
    setting("worker.broker_wait", "duration", 0.0, "How long a starting worker waits for an unreachable broker, "
            "retrying with backoff (0: no limit).", "WORKER_BROKER_WAIT", minimum=0),
    setting("jobs.timeout", "duration", 300.0, "Default maximum run time of a job.", "JOB_TIMEOUT", minimum=0,
            min_exclusive=True),
    setting("jobs.max_retries", "int", 3, "Default retry attempts after a failure.", "MAX_RETRIES", minimum=0,
            maximum=100),
    setting("jobs.retry_backoff_base", "duration", 1.0, "Delay before the first retry.", minimum=0),
    setting("jobs.retry_backoff_factor", "float", 2.0, "Multiplier of the delay for each further retry.", minimum=1),
    setting("jobs.retry_backoff_max", "duration", 3600.0, "Longest delay between retries.", minimum=0,
            min_exclusive=True),
    setting("metrics.port", "int", 6061, "Port of the worker's /metrics, /healthz and /readyz endpoint (0: none); "
            "with --processes N the supervisor serves it for all children.", "METRICS_PORT", minimum=0, maximum=65535),
    setting("metrics.bind", "str", "127.0.0.1", "Address the metrics endpoint listens on (0.0.0.0: every interface, "
            "e.g. in a container scraped from outside).", "METRICS_BIND"),
    setting("metrics.log_interval", "duration", 30.0, "How often each worker process logs its System metrics line.",
            "METRICS_LOG_INTERVAL", minimum=1.0),
    setting("logging.level", "enum", "info", "Console log level (warn means warning).", "LOG_LEVEL",
            choices=_LEVELS),
    setting("logging.format", "enum", "text", "Console log format.", "LOG_FORMAT", choices=("json", "text")),
    setting("logging.color", "bool", True, "Colored console output (text format).", "LOG_COLOR"),
)
"""The kernel's keys, in documentation order. Plugins add theirs with ``bananas_register_settings``."""

FREE_TABLES = ("routes", "broker_options", "result_backend_options")
"""Tables passed through to a plugin unchanged (``[routes]`` to the router, the options tables to the broker and
result backend, which validate them)."""

TIER_ENABLED = setting("logging.<tier>.enabled", "bool", False, "Enable this log tier (sink plugins).")
"""The one key every ``[logging.<tier>]`` table shares, checked even for tiers no plugin declares."""


@attrs.frozen
class KnownOwner:
    """A package the kernel knows would own keys starting with ``prefix`` (and env vars starting with ``env``)."""

    prefix: str
    dists: tuple[str, ...]
    what: str
    env: tuple[str, ...] = ()
    published: bool = True

    def hint(self) -> str:
        return install_hint(self.dists, self.what, self.published)


def _env(*names: str) -> tuple[str, ...]:
    return tuple(name for plain in names for name in (f"BANANAS_{plain}", plain))


KNOWN_OWNERS: tuple[KnownOwner, ...] = (
    KnownOwner("worker.priority_", ("bananas-mode-thin-plus",), "the thin_plus worker mode",
               _env("WORKER_PRIORITY_")),
    KnownOwner("worker.scheduled_", ("bananas-mode-thin-plus", "bananas-mode-scaled"),
               "the thin_plus and scaled worker modes", _env("WORKER_SCHEDULED_")),
    KnownOwner("worker.high_", ("bananas-mode-scaled",), "the scaled worker mode", _env("WORKER_HIGH_")),
    KnownOwner("worker.normal_", ("bananas-mode-scaled",), "the scaled worker mode", _env("WORKER_NORMAL_")),
    KnownOwner("worker.low_", ("bananas-mode-scaled",), "the scaled worker mode", _env("WORKER_LOW_")),
    KnownOwner("worker.job_types", ("bananas-mode-job-specialized",), "the job-specialized worker mode",
               _env("WORKER_JOB_TYPES")),
    KnownOwner("logging.file.", ("bananas-logfile",), "the file log tier", _env("LOG_FILE_")),
    KnownOwner("logging.elasticsearch.", ("bananas-elasticsearch",), "the elasticsearch log tier", _env("LOG_ES_")),
)
"""Key prefix → the distribution(s) that declare such keys. Only hints: nothing here is imported."""

UNPUBLISHED: dict[str, str] = {owner.dists[0]: owner.what for owner in KNOWN_OWNERS if not owner.published}
"""Distributions the kernel knows by name that are not published yet (no ``pip install`` hint for them)."""


def install_hint(dists: tuple[str, ...], what: str, published: bool = True) -> str:
    """``it belongs to X: pip install D`` or, for a package not published yet, ``X (D) is not available yet``."""
    if not published:
        return f"{what} ({' or '.join(dists)}) is not available yet"
    return f"it belongs to {what}: pip install {' or '.join(dists)}"


def known_owner(key: str) -> KnownOwner | None:
    """The known package that would declare ``key``, if any."""
    return next((owner for owner in KNOWN_OWNERS if key == owner.prefix or key.startswith(owner.prefix)), None)
