"""Every hook Bananas defines. Plugins implement them with ``@bananas.hookimpl``.

Three kinds:

* **Registration hooks** run once when an app loads its plugins. They get a ``register`` callable bound to the
  plugin and its distribution, so every registered name has an owner (two owners of one name is an error that
  names both). They do not support ``wrapper=True``.
* **Lifecycle observers** return ``None``. They run synchronously on the worker's event-loop thread (producers:
  the thread that called ``enqueue``), so they must not block: send I/O to your own queue or thread. An
  exception is logged once per plugin and hook and never fails a job. Hooks with no implementation are skipped
  on the hot path.
* ``bananas_add_commands`` lets a plugin add CLI subcommands.

All hooks are synchronous: pluggy cannot await (pluggy #320). Async work lives in the objects that hooks register.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Sequence

    import click

    from bananas.broker import BrokerSpec
    from bananas.config_schema import KeySpec
    from bananas.job import Job
    from bananas.logsink import LogSinkSpec
    from bananas.registry import Register
    from bananas.result_backend import ResultBackendSpec
    from bananas.router import RouterSpec
    from bananas.serializer import SerializerSpec
    from bananas.worker.context import Duty, WorkerInfo
    from bananas.worker_mode import WorkerModeSpec

PROJECT = "bananas"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PROJECT", "hookimpl", "hookspec"]

# ------------------------------------------------------------------------------------------------------------------
# Registration hooks
# ------------------------------------------------------------------------------------------------------------------


@hookspec
def bananas_register_brokers(register: Register[BrokerSpec]) -> None:
    """Register broker implementations, keyed by URL scheme.

    Called once per app, in the process that builds the app, before any broker is created.

    :param register: Call ``register(BrokerSpec(schemes=("x",), factory=..., options=...))`` once per broker.

    Implementations must not connect to anything here; the factory is called later with the configured URL.

    .. versionadded:: 0.1
    """


@hookspec
def bananas_register_serializers(register: Register[SerializerSpec]) -> None:
    """Register serializers by name (``serializer = "<name>"`` selects one).

    Called once per app at start-up.

    :param register: Call ``register(SerializerSpec(name="x", factory=...))`` once per serializer.

    Implementations must register serializers that never execute code while decoding.

    .. versionadded:: 0.1
    """


@hookspec
def bananas_register_result_backends(register: Register[ResultBackendSpec]) -> None:
    """Register result backends, keyed by URL scheme (``result_backend = "<scheme>://…"``).

    Called once per app at start-up.

    :param register: Call ``register(ResultBackendSpec(schemes=(...), factory=...))``.

    Implementations must not connect to anything here.

    .. versionadded:: 0.1
    """


@hookspec
def bananas_register_log_sinks(register: Register[LogSinkSpec]) -> None:
    """Register log tiers by name; ``[logging.<name>] enabled = true`` turns one on. Several run at once.

    Called once per app at start-up.

    :param register: Call ``register(LogSinkSpec(name="x", factory=...))``.

    Implementations must return sinks that never block the caller for network I/O (buffer and flush in a thread).

    .. versionadded:: 0.1
    """


@hookspec
def bananas_register_routers(register: Register[RouterSpec]) -> None:
    """Register routing strategies by name (``router = "<name>"``).

    Called once per app at start-up.

    :param register: Call ``register(RouterSpec(name="x", factory=...))``.

    Implementations must be pure functions of the job and their ``[routes]`` table: producers and workers build
    routers independently and must agree.

    .. versionadded:: 0.1
    """


@hookspec
def bananas_register_worker_modes(register: Register[WorkerModeSpec]) -> None:
    """Register worker modes by name (``WORKER_MODE`` / ``[worker] mode``).

    Called once per app at start-up.

    :param register: Call ``register(WorkerModeSpec(name="x", factory=...))``.

    Implementations must raise :class:`bananas.errors.ConfigError` naming the key for settings they reject.

    .. versionadded:: 0.1
    """


@hookspec
def bananas_register_settings(register: Register[KeySpec]) -> None:
    """Declare the settings this plugin reads (``[worker] high_count``, ``WORKER_HIGH_COUNT`` …).

    Called once per app at start-up, before the configuration is validated: the file, the environment and the flags
    are checked against the kernel's keys and every declared one together, so a declared key gets types, ranges,
    environment variables, ``bananas config`` rows (with this plugin's distribution as owner) and "did you mean"
    errors like a kernel key.

    :param register: Call ``register(setting("worker.high_count", "int", 3, "Number of high pools.",
        "WORKER_HIGH_COUNT", minimum=0))`` (see :func:`bananas.config_schema.setting`). Two plugins may declare the
        same key with an identical spec (they share it); a different spec, or a kernel key, is a
        :class:`bananas.errors.PluginError`.

    Document every declared key and its environment variables in the plugin's README.

    .. versionadded:: 0.2
    """


@hookspec
def bananas_add_commands(cli: click.Group) -> None:
    """Add subcommands to the ``bananas`` CLI (``cli.add_command(...)``).

    Called once when the CLI starts, before arguments are parsed.

    :param cli: The root ``click`` group.

    Implementations must only add commands here; do the work when the command runs.

    .. versionadded:: 0.1
    """


# ------------------------------------------------------------------------------------------------------------------
# Lifecycle observers (return None, must not block or raise)
# ------------------------------------------------------------------------------------------------------------------


@hookspec
def bananas_job_enqueued(job: Job) -> None:
    """A job was handed to the broker. Called in the producer, after the broker accepted it.

    :param job: The job as enqueued (``queue`` and ``enqueued_at`` set).

    Implementations must not block and must not raise.

    .. versionadded:: 0.1
    """


@hookspec
def bananas_job_started(job: Job, process_id: str, pool_id: str) -> None:
    """A worker is about to run ``job``'s handler. Called in the worker, on its event-loop thread.

    :param job: The job, ``attempts`` already counting this run.
    :param process_id: The worker process's id, ``host-pid`` (``WorkerInfo.process_id``).
    :param pool_id: The id of the pool that runs it, unique in that process (``high-1``…; ``PoolPlan.pool_id``).

    Not called for a body that cannot be decoded or a job without a handler in this worker: those go straight to
    ``bananas_job_dead``.

    Implementations must not block and must not raise.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       ``worker_id`` became ``process_id`` and ``pool_id``.
    """


@hookspec
def bananas_job_succeeded(job: Job, result: Any, duration: float) -> None:
    """The handler returned. Called in the worker after the job was acknowledged.

    :param job: The job.
    :param result: What the handler returned.
    :param duration: Seconds the handler ran.

    Implementations must not block and must not raise.

    .. versionadded:: 0.1
    """


@hookspec
def bananas_job_failed(job: Job, error: BaseException, will_retry: bool) -> None:
    """The handler raised (or timed out). Called in the worker before the retry or dead-letter decision is stored.

    :param job: The job, ``last_error`` set.
    :param error: The exception.
    :param will_retry: Whether a retry follows.

    Implementations must not block and must not raise.

    .. versionadded:: 0.1
    """


@hookspec
def bananas_job_retried(job: Job, delay: float) -> None:
    """A failed job was scheduled again ``delay`` seconds from now. Called in the worker.

    Implementations must not block and must not raise.

    .. versionadded:: 0.1
    """


@hookspec
def bananas_job_dead(job: Job, reason: str) -> None:
    """A job went to the dead-letter queue with ``reason``. Called in the worker, after the broker took it.

    Also called for jobs no handler ran: ``no handler for job 'x' in this worker`` (``job`` is the decoded job)
    and bodies that cannot be decoded (``malformed job: …`` or a signature error). For those, ``job`` is a
    placeholder: ``name`` ``"<malformed>"`` (``bananas.worker.settlement.MALFORMED_JOB_NAME``), the delivery's
    ``id`` and ``queue``, an empty payload, ``attempts`` 0, status ``DEAD`` and ``last_error`` the reason; the
    body stays in the dead letters.

    Implementations must not block and must not raise.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       Also called for malformed bodies and jobs without a handler.
    """


@hookspec
def bananas_worker_started(worker: WorkerInfo) -> None:
    """A worker process started its pools. Called once per process, on its event-loop thread.

    :param worker: A frozen :class:`bananas.worker.WorkerInfo`: ``process_id`` (``host-pid``), ``host``, ``pid``,
        ``mode``, ``scheduler`` and ``pools`` (each a ``PoolInfo`` with ``pool_id``, ``name``, ``queues``,
        ``concurrency``, ``job_types``).

    Implementations must not block and must not raise.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       ``worker`` is a ``WorkerInfo`` record, no longer the ``Worker`` object.
    """


@hookspec
def bananas_worker_stopped(worker: WorkerInfo) -> None:
    """A worker process finished its shutdown. Called once per process.

    :param worker: The same :class:`bananas.worker.WorkerInfo` as ``bananas_worker_started`` got.

    Implementations must not block and must not raise.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       ``worker`` is a ``WorkerInfo`` record, no longer the ``Worker`` object.
    """


# ------------------------------------------------------------------------------------------------------------------
# Worker duties
# ------------------------------------------------------------------------------------------------------------------


@hookspec
def bananas_worker_duties(worker: WorkerInfo) -> Sequence[Duty] | Duty | None:
    """Add periodic tasks to a worker process. Called once per worker run, before its pools start.

    :param worker: The :class:`bananas.worker.WorkerInfo` of the process (its mode, pools, scheduler flag).

    Return a :class:`bananas.worker.Duty` or a list of them (``None``: none). Each runs in its own task, at start
    (``at_start``) and then every ``interval`` seconds, with the worker's broker: ``await duty.run(broker)``. An
    exception is logged and the duty runs again at its next time. ``needs_leader=True`` marks a duty that must run
    in one process only: it runs in workers whose plan runs the scheduler (``ENABLE_SCHEDULER``), and there only
    while the process holds the scheduler's leader lease (:mod:`bananas.worker.leader`).

    Implementations must not block; the duty itself must not block the event loop either.

    .. versionadded:: 0.2
    """
