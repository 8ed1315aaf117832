"""The ``bananas`` command line. User errors print one line and exit 2; plugins add subcommands.

``bananas dlq`` and ``bananas queues`` live in :mod:`bananas.cli_admin`, ``bananas periodic`` in
:mod:`bananas.cli_periodic`, ``bananas status`` and ``bananas workers`` in :mod:`bananas.cli_status`.

A broker that cannot be reached exits 1 (the same command may work later); one that answered but cannot be used as
configured (:class:`~bananas.errors.BrokerMisconfigured`: wrong password, not a Redis server, TLS mismatch) exits 2.
``bananas result`` also exits 1 when the job failed and 3 when no result came in time (see its help)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from bananas.cli_admin import dlq, queues
from bananas.cli_periodic import periodic
from bananas.cli_status import status, workers
from bananas.errors import BananasError, BrokerError, BrokerMisconfigured, UsageError
from bananas.loading import load_app

__all__ = ["cli", "main"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def _app(ctx: click.Context, app_spec: str | None, overrides: dict[str, Any], sources: dict[str, str]) -> Any:
    from bananas.app import Bananas

    config = ctx.obj.get("config")
    if app_spec:
        if config or overrides:
            os.environ.update({"BANANAS_CONFIG": config} if config else {})
        app = load_app(app_spec)
        if overrides:  # flags win over the app's own configuration: rebuild with the same handlers and arguments
            args = dict(app.init_args)
            for key in ("broker", "serializer", "result_backend", "router"):
                if key in overrides:  # a keyword argument in code would beat the flag's override
                    args[key] = None
            args["overrides"] = {**args["overrides"], **overrides}
            args["override_sources"] = {**args["override_sources"], **sources}
            args["config"] = config or args["config"]
            rebuilt = Bananas(plugins=app.extra_plugins, **args)
            rebuilt.handlers.update(app.handlers)
            rebuilt.schedules.adopt(app.schedules)
            return rebuilt
        return app
    return Bananas(config=config, overrides=overrides, override_sources=sources)


@click.group(context_settings=CONTEXT)
@click.option(
    "--config", "config", metavar="FILE",
    help="Config file (default: bananas.toml or [tool.bananas] in pyproject.toml, searched from here upwards).",
)
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """Bananas: a distributed task queue for Python."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


@cli.command()
@click.option("--app", "app_spec", metavar="MODULE[:NAME]", required=True, help="Where the Bananas app lives.")
@click.option("--mode", help="Worker mode (WORKER_MODE).")
@click.option("--concurrency", type=int, help="Job slots (WORKER_CONCURRENCY).")
@click.option("--queues", help="Comma-separated queues to read (WORKER_QUEUES).")
@click.option("--processes", type=int, help="Worker processes under one supervisor (WORKER_PROCESSES).")
@click.option("--broker", help="Broker URL.")
@click.option("--dry-run", is_flag=True, help="Print the worker plan as JSON and exit.")
@click.pass_context
def worker(
    ctx: click.Context,
    app_spec: str,
    mode: str | None,
    concurrency: int | None,
    queues: str | None,
    processes: int | None,
    broker: str | None,
    dry_run: bool,
) -> None:
    """Run a worker for the app's handlers (--processes N: N worker processes under a supervisor)."""
    from bananas.logs import configure_logging
    from bananas.worker.supervisor import is_child

    overrides: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, flag, value in (
        ("worker.mode", "--mode", mode),
        ("worker.concurrency", "--concurrency", concurrency),
        ("worker.queues", "--queues", queues),
        ("worker.processes", "--processes", processes),
        ("broker", "--broker", broker),
    ):
        if value is not None:
            overrides[key] = value
            sources[key] = f"flag {flag}"
    app = _app(ctx, app_spec, overrides, sources)
    plan = app.plan()
    app.schedules.check_jobs(app.handlers, when=plan.scheduler)  # a periodic job without a handler: exit 2 now
    app.check_job_types(plan)  # a job-specialized type without a handler: exit 2 now too
    if dry_run:
        click.echo(json.dumps(plan.describe(), indent=2))
        return
    close = configure_logging(app.settings, app.plugins)
    if not is_child():  # said once, by the process the user started
        _say_configuration(app)
    try:
        count = app.settings["worker.processes"]
        if count > 1 and not is_child():  # the plan above was checked once here, before any child starts
            from bananas.metrics.multiprocess import supervisor_endpoint
            from bananas.worker.supervisor import Supervisor, child_command

            grace = app.settings["worker.shutdown_timeout"] + 10
            supervisor = Supervisor(child_command(), count, stop_timeout=grace)
            # one metrics endpoint for every child: they write snapshots to its directory (bananas.metrics)
            bind, port = app.settings["metrics.bind"], app.settings["metrics.port"]
            with supervisor_endpoint(bind, port, supervisor.pids) as env:
                supervisor.env.update(env)
                code = supervisor.run()
            if code:
                sys.exit(code)
        else:
            app.worker(plan).run_forever()
    finally:
        close()


@cli.command()
@click.argument("name")
@click.option("--payload", default="{}", metavar="JSON", help="Keyword arguments as a JSON object.")
@click.option("--priority", type=click.Choice(["high", "normal", "low"]), help="Job priority.")
@click.option("--delay", metavar="DURATION", help="Run after this long (10s, 5m).")
@click.option("--at", "at", type=float, metavar="UNIX_TIME", help="Run at this Unix time.")
@click.option("--app", "app_spec", metavar="MODULE[:NAME]", help="Use this app's handler defaults.")
@click.pass_context
def enqueue(
    ctx: click.Context,
    name: str,
    payload: str,
    priority: str | None,
    delay: str | None,
    at: float | None,
    app_spec: str | None,
) -> None:
    """Enqueue job NAME and print its id."""
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise UsageError(f"--payload: not valid JSON: {exc}") from None
    app = _app(ctx, app_spec, {}, {})
    try:
        handle = app.enqueue(name, data, priority=priority, delay=delay, at=at)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    finally:
        app.close()
    click.echo(handle.id)


def _client(ctx: click.Context, broker: str | None, result_backend: str | None) -> Any:
    from bananas.client import Client

    return Client(broker, result_backend=result_backend, config=ctx.obj.get("config"))


def _json_default(value: object) -> object:
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, set | frozenset):
        return list(value)
    from bananas.values import to_text

    try:
        tagged = to_text(value)  # datetime, date, time as ISO 8601; UUID, Decimal as their text
    except TypeError:  # a naive datetime
        tagged = None
    return tagged[1] if tagged is not None else repr(value)


@cli.command()
@click.argument("job_id")
@click.option("--wait", metavar="DURATION", help="Wait up to this long for the result (10s, 5m); default: look once.")
@click.option("--broker", metavar="URL", help="Broker URL (default: the configured broker).")
@click.option(
    "--result-backend",
    metavar="URL",
    help="Result backend URL (default: the broker URL when its scheme has one, else the configured one).",
)
@click.pass_context
def result(ctx: click.Context, job_id: str, wait: str | None, broker: str | None, result_backend: str | None) -> None:
    """Print the result of job JOB_ID as JSON.

    \b
    Exit status:
      0  the result is printed on stdout
      1  the job failed for good: the remote error and its traceback go to stderr
      2  usage error, or no such job (unknown id, or its result was not kept)
      3  no result yet, or none within --wait: the job keeps running
    """
    from bananas.errors import JobFailed, ResultTimeout
    from bananas.units import parse_duration

    try:
        seconds = parse_duration(wait) if wait is not None else None
    except ValueError as exc:
        raise UsageError(f"--wait: {exc}") from None
    client = _client(ctx, broker, result_backend)
    try:
        value = client.get_result(job_id, wait=seconds)
    except JobFailed as exc:
        click.echo(f"Error: {exc}", err=True)
        if exc.traceback and exc.traceback.strip() != f"{exc.error_type}: {exc.message}":
            click.echo("Remote traceback:", err=True)
            click.echo(exc.traceback.rstrip(), err=True)
        sys.exit(1)
    except ResultTimeout as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(3)
    finally:
        client.close()
    click.echo(json.dumps(value, ensure_ascii=False, default=_json_default))


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _progress_dict(progress: Any) -> dict[str, Any] | None:
    if progress is None:
        return None
    return {"value": progress.value, "message": progress.message, "updated_at": progress.updated_at}


def _unstorable(client: Any, job: Any) -> str | None:
    """Why a completed job's result could not be stored (its ``UnstorableResult`` record), or ``None``."""
    if job.status.value != "completed":
        return None
    from bananas.result_backend import unstorable_message

    async def look() -> str | None:
        try:
            return await unstorable_message(await client.app.results(), client.app.codec, job.id)
        except Exception:  # noqa: BLE001 - a result backend that is down or absent must not break `bananas job`
            return None

    return client.app.run_sync(look)


@cli.command("job")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (every job field, Unix timestamps).")
@click.option("--broker", metavar="URL", help="Broker URL (default: the configured broker).")
@click.pass_context
def job_command(ctx: click.Context, job_id: str, as_json: bool, broker: str | None) -> None:
    """Print the status and history of job JOB_ID: status, attempts, timestamps, last error, queue, progress and
    each attempt (worker, start, end, outcome).

    An unknown id (or one whose record expired) exits 2.
    """

    async def inspect() -> tuple[Any, Any, Any]:
        job = await client.app.get_job_async(job_id)
        the_broker = await client.app.broker()
        record = await the_broker.lookup(job_id)
        store = client.app.capabilities(the_broker).progress
        return job, record, (await store.progress(job_id) if store is not None else None)

    client = _client(ctx, broker, None)
    try:
        job, record, progress = client.app.run_sync(inspect)
        unstorable = _unstorable(client, job)
    finally:
        client.close()
    history = {
        "deliveries": record.deliveries if record else None,
        "crashes": record.crashes if record else None,
        "reason": record.reason if record else None,
        "updated_at": record.updated_at if record else None,
    }
    if as_json:
        data = {**job.to_dict(), **history, "progress": _progress_dict(progress), "result_error": unstorable}
        click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=_json_default))
        return
    rows = [
        ("id", job.id),
        ("name", job.name),
        ("status", job.status.value),
        ("queue", job.queue or "-"),
        ("priority", job.priority.value),
        ("attempts", f"{job.attempts} (max_retries {job.max_retries})"),
        ("deliveries", f"{history['deliveries']} (crashes {history['crashes']})" if record else "-"),
        ("created", _when(job.created_at)),
        ("enqueued", _when(job.enqueued_at)),
        ("scheduled", _when(job.scheduled_at)),
        ("started", _when(job.started_at)),
        ("finished", _when(job.finished_at)),
        ("updated", _when(history["updated_at"])),
        ("last error", job.last_error or "-"),
    ]
    if history["reason"]:
        rows.append(("reason", history["reason"]))
    if unstorable:
        rows.append(("result", f"not stored: {unstorable}"))
    if progress is not None:
        rows.append(("progress", f"{progress.value:g}" + (f" {progress.message}" if progress.message else "")
                     + f" (at {_when(progress.updated_at)})"))
    for label, value in rows:
        click.echo(f"{label + ':':<12} {value}")
    from bananas.attempts import attempts_of

    runs = attempts_of(job)
    if runs:
        click.echo("history:")
    for run in runs:  # one line per attempt: number, worker (host-pid), start → end, outcome, error
        error = f"  {run['error']}" if run.get("error") else ""
        click.echo(f"  #{run.get('attempt')}  {run.get('worker') or '-'}  {_when(run.get('started_at'))} -> "
                   f"{_when(run.get('finished_at'))}  {run.get('outcome')}{error}")


@cli.command("cancel")
@click.argument("job_id")
@click.option("--broker", metavar="URL", help="Broker URL (default: the configured broker).")
@click.pass_context
def cancel_command(ctx: click.Context, job_id: str, broker: str | None) -> None:
    """Cancel job JOB_ID: a pending or scheduled job never runs; a running one is asked to stop (its worker
    stops the handler within about a second). Either ends with status 'cancelled'.

    \b
    Exit status:
      0  the job was cancelled (or its run is being stopped)
      1  the job had finished already (completed, dead, cancelled, expired): nothing changed
      2  usage error, or no such job (unknown id, or its record expired)
    """
    client = _client(ctx, broker, None)
    try:
        before = client.app.run_sync(lambda: client.app.cancel_job_async(job_id))
    finally:
        client.close()
    if before == "running":
        click.echo(f"job {job_id} is running: asked its worker to stop it (status 'cancelled' once it has)")
    elif before in ("ready", "scheduled"):
        click.echo(f"job {job_id} cancelled (it was {'pending' if before == 'ready' else 'scheduled'})")
    else:
        click.echo(f"job {job_id} is already {before}: nothing to cancel", err=True)
        sys.exit(1)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--all", "show_all", is_flag=True, help="Include plugins that register nothing.")
@click.option("--hook", help="Only plugins implementing this hook.")
def plugins(as_json: bool, show_all: bool, hook: str | None) -> None:
    """List installed plugins: distribution, version, hooks and what each registered."""
    from bananas._manager import load_plugins

    rows = load_plugins().describe()
    if hook:
        rows = [row for row in rows if hook in row["hooks"]]
    if not show_all:
        rows = [row for row in rows if row["registered"] or row["hooks"]]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        registered = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in row["registered"].items())
        click.echo(f"{row['name']}  ({row['distribution']} {row['version']})".rstrip())
        click.echo(f"    hooks: {', '.join(row['hooks']) or '-'}")
        if registered:
            click.echo(f"    registered: {registered}")
        for kind, names in row["summaries"].items():
            for name, summary in names.items():
                if summary:
                    click.echo(f"      {kind[:-1].replace('_', ' ')} {name}: {summary}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def config(ctx: click.Context, as_json: bool) -> None:
    """Print the effective configuration, where each value came from and who owns each key (secrets redacted).

    Exits 2 with one line when the serializer, broker scheme, router, worker mode or an enabled log tier names no
    installed plugin.
    """
    from bananas._manager import load_plugins
    from bananas.config import Schema, read_sources
    from bananas.config_files import search_note
    from bananas.config_options import check_plugin_names

    raw = read_sources(config_path=ctx.obj.get("config"))
    plugins = load_plugins(env=raw.env)
    settings = raw.validate(Schema.of(plugins))
    check_plugin_names(settings, plugins)
    rows = settings.explain(redact=True, owners=True)
    for warning in settings.warnings:
        click.echo(f"Warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps({"config_file": settings.config_file, "warnings": list(settings.warnings),
                               "settings": rows}, indent=2))
        return
    click.echo(f"# config file: {settings.config_file or search_note(Path.cwd())}")
    width = max(len(row["key"]) for row in rows)
    for row in rows:
        value = json.dumps(row["value"]) if not isinstance(row["value"], str) else row["value"]
        click.echo(f"{row['key']:<{width}}  {value}    ({row['source']})  [{row['owner']}]")


def _say_configuration(app: Any) -> None:
    """The worker's first lines: which config file it read (or what was searched), broker and result backend, and
    any environment variable that looks like a setting but is none."""
    from loguru import logger

    from bananas.config_files import search_note
    from bananas.config_schema import redact_url

    log = logger.bind(component="cli", log_source="bananas_internal")
    s = app.settings
    results = redact_url(app.result_backend_url) if app.result_backend_url else "none (results are not stored)"
    log.info("config file: {config_file}; broker {broker} ({broker_source}); result backend {result_backend}",
             config_file=s.config_file or search_note(Path.cwd()), broker=redact_url(app.broker_url),
             broker_source=s.source("broker"), result_backend=results)
    for warning in s.warnings:
        log.warning(warning)


@cli.command()
@click.option("--jobs", default=6, show_default=True, help="Extra jobs per priority.")
def demo(jobs: int) -> None:
    """Run a thin worker in-process on the memory broker and show jobs flow, retry and die."""
    from bananas.demo import run_demo

    run_demo(extra_per_priority=jobs)


cli.add_command(dlq)
cli.add_command(queues)
cli.add_command(periodic)
cli.add_command(status)
cli.add_command(workers)


def _add_plugin_commands() -> None:
    from bananas._manager import load_plugins

    load_plugins().pm.hook.bananas_add_commands(cli=cli)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``bananas`` script."""
    try:
        _add_plugin_commands()
        cli.main(args=list(argv) if argv is not None else None, prog_name="bananas", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except BrokerMisconfigured as exc:  # wrong password, not a Redis, TLS mismatch: retrying cannot help
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except BrokerError as exc:  # not a usage error: the same command may work once the broker is back
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except BananasError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
