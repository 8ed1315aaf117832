"""``bananas periodic list|run``: the periodic jobs of an app from the command line (see docs/PERIODIC.md).

Part of the kernel CLI (:mod:`bananas.cli` adds the group, like ``dlq`` and ``queues``). The schedules come from the
configuration (``[[periodic]]``) and, with ``--app``, from the app's ``app.periodic(...)`` calls; their state (next
run, last run, last status) and the scheduler's leader come from the broker's ``schedules`` capability.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import click

from bananas.broker import Broker
from bananas.cli_admin import _Admin
from bananas.errors import UsageError
from bananas.periodic.status import schedule_rows
from bananas.periodic.ticker import build_tick

__all__ = ["periodic"]


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@click.group(name="periodic")
@click.option("--app", "app_spec", metavar="MODULE[:NAME]", help="Use this app (its app.periodic(...) schedules).")
@click.option("--broker", metavar="URL", help="Broker URL (default: the configured broker).")
@click.pass_context
def periodic(ctx: click.Context, app_spec: str | None, broker: str | None) -> None:
    """List the periodic jobs (cron) and run one now."""
    ctx.ensure_object(dict)
    state = _Admin(ctx.obj.get("config"), app_spec, (), broker)
    ctx.obj["periodic"] = state
    ctx.call_on_close(state.close)


@periodic.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (Unix timestamps).")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """List the periodic jobs: name, cron or interval, time zone, next run, last run, last status; and the leader."""
    state: _Admin = ctx.obj["periodic"]

    async def work(_: Broker) -> tuple[list[dict[str, Any]], dict[str, Any] | None, bool]:
        return await schedule_rows(state.app)

    rows, leader, capability = state.run(work)
    if as_json:
        click.echo(json.dumps({"capability": capability, "leader": leader, "schedules": rows}, indent=2))
        return
    if not capability:
        click.echo("warning: the broker has no 'schedules' capability: periodic jobs do not run", err=True)
    if leader is None:
        click.echo("leader: none (no scheduler is running)")
    else:
        click.echo(f"leader: {leader['holder']} (token {leader['token']}, lease until {_when(leader['expires_at'])})")
    if not rows:
        click.echo("no periodic jobs (declare them with [[periodic]] or app.periodic(...); pass --app for the latter)")
        return
    table = [("NAME", "SCHEDULE", "TZ", "NEXT RUN", "LAST RUN", "LAST STATUS")]
    for row in rows:
        table.append((row["name"], row["trigger"], row["timezone"] or "-", _when(row["next_run"]),
                      _when(row["last_run"]), row["last_status"]))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]) - 1)]
    for line in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) + "  " + line[-1])


@periodic.command(name="run")
@click.argument("name")
@click.pass_context
def run(ctx: click.Context, name: str) -> None:
    """Enqueue periodic job NAME now (with its payload and options; a fresh job id) and print the id."""
    state: _Admin = ctx.obj["periodic"]
    app = state.app
    schedule = app.schedules.get(name)
    if schedule is None:
        known = ", ".join(app.schedules.names()) or "none (pass --app for schedules declared in code)"
        raise UsageError(f"no periodic job named {name!r}; known: {known}")

    async def work(broker: Broker) -> str:
        job, env = build_tick(app, schedule, None)
        await broker.enqueue([env])
        app._enqueued([job])
        return job.id

    click.echo(state.run(work))
